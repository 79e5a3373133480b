"""The scripts' error codes have one name each, the same in Lua and Python, and no script
returns a bare negative number for an error."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from shim_core.errors import ErrorCode, InvalidTransition, raise_for_code

LUA = resources.files("shim_core") / "lua"


def _library() -> str:
    return (LUA / "_lib.lua").read_text(encoding="utf-8")


def test_the_lua_names_are_the_python_names() -> None:
    found: dict[str, int] = {}
    declared = re.findall(r"^local ([A-Z_, ]+) =\s+([-\d, ]+)$", _library(), re.M)
    for names, values in declared:
        pairs = zip(names.split(","), values.split(","), strict=True)
        found.update({n.strip(): int(v) for n, v in pairs})
    codes = {name: value for name, value in found.items() if value < 0}
    assert codes == {code.name: int(code) for code in ErrorCode}


def test_no_script_returns_a_bare_error_code() -> None:
    for entry in LUA.iterdir():
        if not entry.name.endswith(".lua"):
            continue
        code = [
            line
            for line in entry.read_text(encoding="utf-8").splitlines()
            if not line.strip().startswith("--")
        ]
        bare = [line for line in code if re.search(r"return \{-[1-9]", line)]
        # claim_tasks' "no retry due" (-1) is a value, not an error
        assert all("count <= 0" in line for line in bare), (entry.name, bare)


def test_a_wrong_state_carries_the_state_it_is_in() -> None:
    with pytest.raises(InvalidTransition) as caught:
        raise_for_code(ErrorCode.WRONG_STATE, "t1", detail="cancelled")
    assert caught.value.status == "cancelled"
    assert str(caught.value) == "task 't1' is cancelled"
