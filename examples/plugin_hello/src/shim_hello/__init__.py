"""shim-hello: an example third-party plugin for SHIM.

It provides one executor, ``hello``, which runs tasks of the new type ``greet``: the task's
``params["name"]`` (default ``"world"``) is greeted, and the greeting is the task's output.
The hooks live in :mod:`shim_hello.plugin`, the module the ``shim`` entry point names.
"""

from shim_hello.plugin import HelloExecutor

__all__ = ["HelloExecutor"]
__version__ = "0.1.0"
