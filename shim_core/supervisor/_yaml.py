"""Reading a YAML plan: what ``yaml.load(text, Loader=CSafeLoader)`` returns, four times faster.

PyYAML's loaders build a node for every value and then construct the value from the node, in
Python: most of the time of a large plan goes there, not into libyaml's parser. :func:`read_yaml`
builds the values straight from the parser's events instead, for the documents plans are made of:
one document of mappings, sequences and untagged scalars, each scalar resolved and constructed by
the loader's own resolver and constructors, so it gets the same value.

Anything else (anchors and aliases, merge keys, explicit tags, complex keys, several documents,
a syntax error, a loader someone customised...) is read again by ``yaml.load`` itself, so every
value and every error is exactly the loader's.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import (
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from yaml.nodes import ScalarNode

#: libyaml's loader when PyYAML has it (its wheels do); both are safe loaders.
LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
#: Keys the safe constructor treats specially (``<<`` merges a mapping in, ``=`` is renamed).
_SPECIAL_KEYS = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")
_STANDARD = {
    _STR: SafeConstructor.construct_yaml_str,
    _MAP: SafeConstructor.construct_yaml_map,
    _SEQ: SafeConstructor.construct_yaml_seq,
}


class _Unsupported(Exception):
    """The document uses something only ``yaml.load`` reads (internal)."""


_NO_KEY = object()


def read_yaml(text: str) -> Any:
    """``yaml.load(text, Loader=LOADER)``: the same value, or the same error."""
    try:
        return _from_events(text)
    except Exception:  # anything unusual, an error included: the loader's own answer
        return yaml.load(text, Loader=LOADER)


def _from_events(text: str) -> Any:
    loader = LOADER(text)
    try:
        if loader.yaml_path_resolvers or any(
            loader.yaml_constructors.get(tag) is not function for tag, function in _STANDARD.items()
        ):
            raise _Unsupported
        return _build(loader)
    finally:
        loader.dispose()


def _build(loader: Any) -> Any:
    """The one document of ``loader``'s events, as the loader would construct it."""
    scalar = _Scalars(loader)
    stack: list[Any] = []  # the mappings and sequences being filled, innermost last
    keys: list[Any] = []  # for each of them: the key waiting for its value (_NO_KEY: none)
    result: Any = None
    documents = 0
    while True:
        event = loader.get_event()
        kind = type(event)
        if kind is ScalarEvent:
            value: Any = scalar(event, bool(stack) and keys[-1] is _NO_KEY)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            if event.anchor is not None or event.tag is not None:
                raise _Unsupported
            if stack and type(stack[-1]) is dict and keys[-1] is _NO_KEY:
                raise _Unsupported  # a mapping or sequence as a key
            stack.append({} if kind is MappingStartEvent else [])
            keys.append(_NO_KEY)
            continue
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            value = stack.pop()
            keys.pop()
        elif kind is DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _Unsupported
            continue
        elif kind is StreamEndEvent:
            return result
        elif kind is StreamStartEvent or kind is DocumentEndEvent:
            continue
        else:  # an alias
            raise _Unsupported
        if not stack:
            result = value
        elif type(container := stack[-1]) is list:
            container.append(value)
        elif keys[-1] is _NO_KEY:
            keys[-1] = value
        else:
            container[keys[-1]] = value
            keys[-1] = _NO_KEY


class _Scalars:
    """Constructs untagged scalars as ``loader`` does: resolved by its implicit resolvers (plain
    scalars only, as in PyYAML), then built by its constructor unless they are strings."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.implicit = loader.yaml_implicit_resolvers
        self.wildcard = self.implicit.get(None, [])
        self.resolvers: dict[str, list[tuple[str, Any]]] = {}  # first character -> resolvers

    def __call__(self, event: Any, maybe_key: bool) -> Any:
        """The value of a scalar event; ``maybe_key``: it may be a mapping's key."""
        if event.anchor is not None or event.tag is not None:
            raise _Unsupported
        value = event.value
        if not event.implicit[0]:  # quoted or a block: a string
            return value
        first = value[:1]
        candidates = self.resolvers.get(first)
        if candidates is None:
            candidates = self.resolvers[first] = self.implicit.get(first, []) + self.wildcard
        if not candidates:
            return value
        tag = next((tag for tag, regexp in candidates if regexp.match(value)), _STR)
        if tag == _STR:
            return value
        if tag in _SPECIAL_KEYS and maybe_key:
            raise _Unsupported  # a key (or a list item) the constructor rewrites
        node = ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
        return self.loader.construct_object(node)
