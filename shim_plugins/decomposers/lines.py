"""The ``lines`` strategy: a request written as a numbered or bulleted list, one task per item.

::

    Build authentication:
    1. Design the schema
    2. Implement the model after 1
    3. Write tests for the model (depends on 2)

Items are lines starting with ``1.``, ``1)``, ``Step 1:``, ``-``, ``*`` or ``•``. Numbered items
keep their number as task id; bulleted ones are numbered by position. Dependency phrases
(``after 2``, ``after 1 and 3``, ``after 1, 2``, ``depends on 3``, ``(depends on 1, 2)``,
``once 2 is done``) become ``deps`` and are removed from the title. Lines that are not items
(or are indented deeper than the first item) continue the previous item's description; lines
before the first item name the plan. Text that is not a list becomes a single task.

The type is guessed from the first telling word of the title (:data:`TYPE_WORDS`, else
``code``). The executor is left unset (the caller's default runs the tasks) unless the context
gives ``{"executor": name}``; ``{"params": {...}}`` sets every task's params and
``{"name": ...}`` the plan's name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import attrs

from shim_core.supervisor.plan import Plan, PlanError, parse_plan

SOURCE = "request"
TITLE_LENGTH = 80  # a single-task request longer than this is cut in the title (kept in full)

TYPE_WORDS: dict[str, str] = {
    **dict.fromkeys(("test", "tests", "testing", "tested"), "test"),
    **dict.fromkeys(("document", "documentation", "docs", "doc", "readme"), "document"),
    **dict.fromkeys(("research", "investigate", "investigation", "compare"), "research"),
    **dict.fromkeys(("analyze", "analyse", "analysis", "profile", "audit"), "analyze"),
}

_ITEM = re.compile(
    r"^(?P<indent>[ \t]*)(?:(?:step\s+)?(?P<number>\d+)\s*[.):]|[-*\u2022])\s+(?P<text>\S.*)$",
    re.IGNORECASE,
)
_REF = r"(?:(?:steps?|items?|tasks?)\s+)?\#?\d+"
# Atomic group: "after 1, 2 minutes" must not fall back to "after 1".
_REFS = rf"(?>{_REF}(?:\s*(?:,|&|\band\b)\s*(?:and\s+)?{_REF})*)"
_NOT_A_QUANTITY = (
    r"(?!\.\d|\s*(?:%|(?:ms|s|secs?|seconds?|mins?|minutes?|h|hrs?|hours?|days?|weeks?"
    r"|months?|years?|times|x)\b))"
)
_DONE = r"\s+(?:is|are|has\s+been|have\s+been)\s+(?:done|complete|completed|finished)\b"
_PHRASE = (
    rf"(?:\bafter\s+{_REFS}{_NOT_A_QUANTITY}(?:{_DONE})?"
    rf"|\b(?:depends|depending)\s+on\s+{_REFS}{_NOT_A_QUANTITY}"
    rf"|\bonce\s+{_REFS}{_DONE})"
)
_NUMBER = re.compile(r"\d+")


@functools.cache
def _dependency() -> re.Pattern[str]:
    """The dependency phrases, compiled on first use (it takes milliseconds: every process that
    loads the plugins, a worker too, would pay them)."""
    return re.compile(rf"\s*\(\s*{_PHRASE}\s*\)|[\s,;:]*{_PHRASE}", re.IGNORECASE)


@attrs.define
class _Item:
    number: str | None
    text: str
    more: list[str] = attrs.field(factory=list)


@attrs.frozen
class LinesDecomposer:
    """Turns a numbered or bulleted list in free text into a plan (see the module docs)."""

    name: str = "lines"

    def decompose(self, request: str, context: Mapping[str, Any]) -> Plan:
        """The plan of ``request``; raises PlanError for an empty request or bad references."""
        if not request.strip():
            raise PlanError([f"{SOURCE}: empty request"])
        preamble, items = _split(request)
        tasks = _list_tasks(items) if items else [_single_task(request)]
        defaults = {key: context[key] for key in ("executor", "params") if key in context}
        name = context.get("name") or (preamble[0].rstrip(":") if preamble else SOURCE)
        data = {"name": name, "defaults": defaults, "tasks": tasks}
        return parse_plan(data, SOURCE)


def _split(request: str) -> tuple[list[str], list[_Item]]:
    """The lines before the first item, and the items with their continuation lines."""
    preamble: list[str] = []
    items: list[_Item] = []
    indent: int | None = None
    for line in request.splitlines():
        match = _ITEM.match(line)
        if match and (indent is None or len(match["indent"]) <= indent):
            indent = len(match["indent"]) if indent is None else indent
            items.append(_Item(match["number"], match["text"].strip()))
        elif line.strip():
            (items[-1].more if items else preamble).append(line.strip())
    return preamble, items


def _list_tasks(items: list[_Item]) -> list[dict[str, Any]]:
    tasks = []
    for position, item in enumerate(items, 1):
        deps = [
            str(int(n)) for m in _dependency().finditer(item.text) for n in _NUMBER.findall(m[0])
        ]
        title = _title(item.text)
        tasks.append(
            {
                "id": str(int(item.number)) if item.number else str(position),
                "title": title,
                "type": guess_type(title),
                "description": "\n".join([item.text, *item.more]),
                "deps": deps,
            }
        )
    return tasks


def _single_task(request: str) -> dict[str, Any]:
    text = request.strip()
    first = text.splitlines()[0].strip()
    title = first if len(first) <= TITLE_LENGTH else first[: TITLE_LENGTH - 3].rstrip() + "..."
    return {"id": "1", "title": title, "type": guess_type(text), "description": text}


def _title(text: str) -> str:
    """The item text without its dependency phrases (the text itself if nothing else is left)."""
    title = _dependency().sub(" ", text)
    title = re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"\s+", " ", title))
    title = title.strip(" ,;:.-\u2013\u2014")
    if not title:
        return text
    return title[0].upper() + title[1:] if text[0].isupper() else title


def guess_type(text: str) -> str:
    """The type of the first word of ``text`` found in :data:`TYPE_WORDS`, else ``'code'``."""
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in TYPE_WORDS:
            return TYPE_WORDS[word]
    return "code"
