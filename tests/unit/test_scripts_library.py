"""Each script carries only the part of the Lua library it uses: Redis runs that prelude on every
call."""

from __future__ import annotations

from importlib import resources

import pytest
import redis
from redis.connection import Encoder, PythonRespSerializer

from shim_core.scripts import _names, _packed, library_for, sources

LIB = """-- header
local rcall = redis.call

local A, B = 1, 2
local function uses_a()
  return A
end

-- a comment naming nothing in particular
local function uses_helper()
  return uses_a() + 1
end
local unused = {x = 1,
  y = 2}
local function flush()
  rcall('PING')
end
"""


def test_a_script_gets_what_it_names_and_what_that_needs_in_order() -> None:
    kept = library_for(LIB, "return uses_helper()\nflush()")
    assert "local function uses_helper" in kept
    assert "local function uses_a" in kept  # needed by uses_helper
    assert "local A, B = 1, 2" in kept  # needed by uses_a
    assert "local rcall" in kept  # needed by flush
    assert "unused" not in kept
    assert kept.index("local A, B") < kept.index("uses_a()") < kept.index("uses_helper()")
    assert kept.startswith("-- header")


def test_names_in_comments_pull_nothing_in_and_names_in_strings_do() -> None:
    lib = LIB + "local function helper_b()\n  return 1\nend\n"
    kept = library_for(lib, "-- uses_helper() is not called here\nlocal s = 'a -- b'\nflush()")
    assert "local function uses_helper" not in kept
    # A chunk's trailing comment names the next definition: not a use of it.
    shaken = library_for(lib.replace("local unused", "-- see helper_b\nlocal unused"), "unused")
    assert "helper_b" not in shaken.replace("-- see helper_b", "")
    # A word inside a string counts (rcall('uses_a') may name a key built from it): kept.
    assert "local function uses_a" in library_for(lib, 'return "uses_a -- x"')


@pytest.mark.parametrize(
    ("code", "names"),
    [
        ("a --[[ b\nc ]] d", {"a", "d"}),  # a long comment
        ("a --[==[ b ]] c ]==] d", {"a", "d"}),  # ... of level 2
        ("x = [[ -- y ]] z", {"x", "y", "z"}),  # a long string: no comment in it
        ('x = "q\\"-- r" s -- t', {"x", "q", "r", "s"}),  # an escaped quote
        ("x = 'a\\\nb -- c' d", {"x", "a", "b", "c", "d"}),  # a \-newline in a string
        ("f(t[k[1]]) -- g", {"f", "t", "k"}),  # brackets that are indexes
    ],
)
def test_names_are_read_from_code_and_strings_not_comments(code: str, names: set[str]) -> None:
    assert _names(code) == names


def test_every_script_is_smaller_than_the_library_and_keeps_flush() -> None:
    lib = (resources.files("shim_core") / "lua" / "_lib.lua").read_text(encoding="utf-8")
    for verb, src in sources().items():
        prelude = src.source.split("\nlocal function main()")[0]
        assert len(prelude) < len(lib), verb
        assert "local function flush()" in prelude, verb


def test_direct_calls_pack_their_commands_as_redis_py_does() -> None:
    """The bytes a direct call sends are those redis-py would send, for every argument shape
    SHIM passes (strings, non-ASCII text, bytes, ints, floats), whichever packer it uses."""
    commands = [
        ["BZPOPMIN", "shim:{n}:wake:code", 1.5],
        ["EVALSHA", "a" * 40, 2, "k1", "k2", "é", b"\x00raw", 10**20, 0.1, -3, ""],
    ]
    python_packer = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)
    for conn in (redis.Connection(), redis.Connection(command_packer=python_packer)):
        assert b"".join(_packed(conn, commands)) == b"".join(conn.pack_commands(commands))


def test_direct_calls_refuse_an_unsendable_argument_as_redis_py_does() -> None:
    with pytest.raises(redis.DataError):
        _packed(redis.Connection(), [["EVALSHA", "a" * 40, 0, None]])
