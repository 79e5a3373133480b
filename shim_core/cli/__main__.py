"""``python -m shim_core.cli``: the same as the ``shim`` command."""

from shim_core.cli import main

main()
