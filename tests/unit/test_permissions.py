"""The ACL line SHIM documents covers every command its code and Lua scripts send."""

from __future__ import annotations

import re
from pathlib import Path

import shim_core
from shim_core.bus import Channels
from shim_core.permissions import REQUIRED_COMMANDS, SUBSCRIBED_PATTERNS, acl_setuser

ROOT = Path(shim_core.__file__).parent
#: ``rcall('HSET', ...)``, ``redis.call("ZADD", ...)``, ``chunked('ZREM', ...)`` in the scripts.
_LUA_CALL = re.compile(r"""(?:call|pcall|rcall|chunked)\(\s*['"]([A-Za-z]+)['"]""")


def test_every_command_of_the_lua_scripts_is_granted() -> None:
    """Redis checks a script's commands against the calling user: each one must be in the list."""
    used = {
        name.lower()
        for script in (ROOT / "lua").glob("*.lua")
        for name in _LUA_CALL.findall(script.read_text(encoding="utf-8"))
    }
    assert used
    assert used - set(REQUIRED_COMMANDS) == set()


def test_the_granted_patterns_are_those_the_code_subscribes_to() -> None:
    """Redis matches a PSUBSCRIBE pattern literally: the ACL line grants each pattern SHIM's
    code subscribes to (``bus.psubscribe(Channels.NAME, ...)``), and no other."""
    sources = [*ROOT.rglob("*.py"), *(ROOT.parent / "shim_plugins").rglob("*.py")]
    names = {
        name
        for source in sources
        for name in re.findall(r"\.psubscribe\(\s*Channels\.([A-Z_]+)", source.read_text("utf-8"))
    }
    assert names
    assert {getattr(Channels, name) for name in names} == set(SUBSCRIBED_PATTERNS)


def test_the_acl_line_of_the_docs_is_the_generated_one() -> None:
    """docs/deployment.md shows exactly the line acl_setuser writes."""
    docs = (ROOT.parent / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert acl_setuser("NS") in docs


def test_the_acl_line_grants_one_namespace() -> None:
    """Keys and channels of the namespace only, every command listed, nothing else."""
    line = acl_setuser("prod", "worker", "pw")
    assert line.startswith("ACL SETUSER worker on >pw resetkeys ~shim:{prod}:* resetchannels ")
    assert "&shim:{prod}:* &shim:{prod}:task:* -@all +multi " in line
    assert line.count(" +") == len(REQUIRED_COMMANDS)


def test_every_required_command_is_probed_at_start_up() -> None:
    from shim_core.keys import Keys
    from shim_core.permissions import REQUIRED_COMMANDS, _probes

    probed = {name for name, _command in _probes(Keys("ns"))}
    handled_by_the_transaction = {"multi", "exec", "discard"}
    assert set(REQUIRED_COMMANDS) - handled_by_the_transaction <= probed
