"""(De)serialisation: one cattrs converter, JSON only, never pickle.

Timestamps travel as integer milliseconds since the epoch (what Lua computes from Redis ``TIME``)
and come back as aware UTC datetimes. A task is stored as a Redis hash: string fields as they are,
every other field as JSON, ``None`` fields left out.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import operator
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
from cattrs import Converter
from cattrs.gen import make_dict_unstructure_fn
from cattrs.preconf.json import make_converter

from shim_core.errors import CorruptTask
from shim_core.models import ProgressEvent, Task, TaskContext, TaskResult

T = TypeVar("T")


def _make_converter(*, detailed: bool) -> Converter:
    made = make_converter(detailed_validation=detailed)
    # A task's context is stored with every task: fields at their default stay out of Redis.
    made.register_unstructure_hook(
        TaskContext, make_dict_unstructure_fn(TaskContext, made, _cattrs_omit_if_default=True)
    )
    made.register_unstructure_hook(datetime, lambda dt: to_ms(dt))  # noqa: PLW0108 (forward ref)
    made.register_structure_hook(datetime, lambda v, _t: from_ms(v))
    # JSON from Redis may say NaN or Infinity (Python's json reads both): no field takes them.
    made.register_structure_hook(float, lambda v, _t: finite(v))
    return made


#: The converter; its errors name the field at fault.
converter = _make_converter(detailed=True)


@functools.cache
def _fast() -> Converter:
    """The converter without detailed validation: about twice as fast to structure a value.
    Decoding tries it first and asks ``converter`` why on failure. Made on first use: a worker
    decodes its tasks' common fields without cattrs (see ``_DECODERS``), and may never need it."""
    return _make_converter(detailed=False)


def to_ms(dt: datetime) -> int:
    """Milliseconds since the epoch of an aware (or UTC-naive) datetime."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def finite(value: Any) -> float:
    """``float(value)``, refusing NaN and the infinities (ValueError): data read from Redis is
    untrusted, and one NaN would break every JSON view of it."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


@functools.lru_cache(maxsize=256)
def from_ms(value: int | float | str) -> datetime:
    """An aware UTC datetime from epoch milliseconds. Remembered for the latest values (a few
    tens of kilobytes at most): the tasks a worker claims together share their claim time and
    lease deadline, those added together their creation time (datetimes are immutable)."""
    return datetime.fromtimestamp(int(float(value)) / 1000, tz=UTC)


def server_ms(client: Any) -> int:
    """The Redis server's clock in epoch milliseconds (``TIME``, sent alone: a cluster
    pipeline refuses a keyless command)."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _compact_encoder() -> Callable[[Any], str]:
    """``json.dumps(value, separators=(",", ":"))``, the same string, without building an
    encoder per call: ``JSONEncoder.encode`` makes a new C encoder on every call, which costs
    twice the encoding of a small value. Made once here, without the circular-reference check
    (SHIM encodes no value that contains itself: one would raise RecursionError)."""
    encoder = json.JSONEncoder(separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)  # typeshed does not list it
    if make is None:  # pragma: no cover - CPython always has the C encoder
        return encoder.encode
    encode = make(
        None, encoder.default, json.encoder.encode_basestring_ascii, None, ":", ",",
        False, False, True,
    )  # fmt: skip
    return lambda value: "".join(encode(value, 0))


#: ``json.dumps(value, separators=(",", ":"))`` without building an encoder per call.
compact_json: Callable[[Any], str] = _compact_encoder()


def dumps(value: Any) -> str:
    """Compact JSON of an attrs value (or any JSON-able value)."""
    return compact_json(converter.unstructure(value))


#: A TaskResult as a plain dict without the fields at their default (decoding restores them).
_result_plain = make_dict_unstructure_fn(TaskResult, converter, _cattrs_omit_if_default=True)


def result_json(result: TaskResult) -> str:
    """The JSON a result is stored and published as: without the fields at their default. Most
    results are then a few dozen bytes (success, output, duration), and the task's hash keeps
    Redis's compact encoding (values up to ``hash-max-listpack-value``, 64 bytes by default)
    instead of becoming a hash table: less memory per finished task, and no conversion when
    the result is written."""
    return compact_json(_result_plain(result))


def loads(data: str | bytes, cls: type[T]) -> T:
    """Structure JSON ``data`` into ``cls``."""
    return _structure(json.loads(data), cls)


def _structure(plain: Any, cls: type[T]) -> T:
    """``plain`` structured into ``cls``; on failure, the detailed converter's error (it names
    the field at fault)."""
    try:
        return _fast().structure(plain, cls)
    except Exception:
        return converter.structure(plain, cls)


def _is_raw_string(tp: Any) -> bool:
    """True when a field is stored as the bare string (str, str enum, Optional of those)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return len(args) == 1 and _is_raw_string(args[0])
    return tp is str or (isinstance(tp, type) and issubclass(tp, enum.Enum))


attrs.resolve_types(Task)
#: Task field name -> True when stored as a plain string, False when stored as JSON.
TASK_FIELDS: dict[str, bool] = {f.name: _is_raw_string(f.type) for f in attrs.fields(Task)}


def _default(field: attrs.Attribute[Any]) -> Any:
    default: Any = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]  # attrs types Factory oddly
        default = default.factory()
    return default


#: Fields always written, even at their default value (the Lua scripts read them).
_ALWAYS = frozenset({"id", "type", "priority"})
#: Field name -> default value (as a Python value), for the fields that may be left out.
_DEFAULTS: dict[str, Any] = {
    f.name: _default(f) for f in attrs.fields(Task) if f.name not in _ALWAYS
}
_MISSING = object()


_field_values = operator.itemgetter(*TASK_FIELDS)
#: The names of a task's fields.
_FIELD_NAMES = frozenset(TASK_FIELDS)


def task_values(task: Task) -> tuple[Any, ...]:
    """Every field of ``task``, in TASK_FIELDS order, read from its instance dictionary in one
    C call (Task is not slotted: see models.py)."""
    return _field_values(task.__dict__)  # type: ignore[no-any-return]


#: (name, stored as a plain string, default or _MISSING) per field, in TASK_FIELDS order.
_FIELD_META = [(name, raw, _DEFAULTS.get(name, _MISSING)) for name, raw in TASK_FIELDS.items()]


def evolve_task(task: Task, changes: Mapping[str, Any]) -> Task:
    """``attrs.evolve(task, **changes)`` for a Task, several times faster (adding tasks is a hot
    path): the new task's instance dictionary is a copy of ``task``'s, updated with
    ``changes``, which must name fields only (TypeError otherwise, as from ``Task(**...)``).
    Task has no validators or converters for this to skip."""
    if not _FIELD_NAMES.issuperset(changes):
        raise TypeError(f"not Task fields: {sorted(set(changes) - _FIELD_NAMES)}")
    new: Task = object.__new__(Task)
    state = new.__dict__  # frozen: written as attrs' own __init__ writes it
    state.update(task.__dict__)
    state.update(changes)
    return new


def task_to_hash(task: Task, *, compact: bool = False) -> dict[str, str]:
    """The Redis hash fields of ``task``: ``None`` values omitted and, with ``compact``, every
    field still at its default (decoding restores them), which keeps a queued task small.

    Only the values written are unstructured: adding a task is a hot path."""
    out: dict[str, str] = {}
    for (name, raw, default), value in zip(_FIELD_META, task_values(task), strict=True):
        if value is None or (compact and (value is default or value == default)):
            continue
        out[name] = _stored(value, raw)
    return out


def stored_field(task: Task, name: str) -> str | None:
    """The string field ``name`` of ``task`` is stored as (None: left out). Encoding a decoded
    value again gives the same string, which is what makes a task's signature checkable."""
    return stored_value(name, getattr(task, name))


def stored_value(name: str, value: Any) -> str | None:
    """The string ``value`` of task field ``name`` is stored as (None: left out)."""
    return None if value is None else _stored(value, TASK_FIELDS[name])


def _stored(value: Any, raw: bool) -> str:
    kind = type(value)
    if kind is str and raw:
        return str(value)
    if kind is int or (kind is float and math.isfinite(value)):
        return repr(value)  # the JSON of a number, without json.dumps' overhead
    if isinstance(value, enum.Enum):
        return str(value.value) if raw else json.dumps(value.value)
    if (kind is dict or kind is tuple or kind is list) and not raw:
        # Plain JSON (a task's params, mostly) encodes as it is: what json accepts, the
        # converter would hand it unchanged. Anything else (bytes, datetimes, attrs values)
        # makes json refuse, and goes through the converter. (try, not contextlib.suppress:
        # that is an object and two calls per task added.)
        try:
            return compact_json(value)
        except (TypeError, ValueError):
            pass
    plain = converter.unstructure(value)
    return str(plain) if raw else compact_json(plain)


def _str_tuple(value: str) -> tuple[str, ...]:
    items = json.loads(value)
    if not isinstance(items, list) or not all(type(i) is str for i in items):
        raise TypeError("not a list of strings")
    return tuple(items)


def _json_object(value: str) -> dict[str, Any]:
    found = json.loads(value)
    if type(found) is not dict:
        raise TypeError("not a JSON object")
    return found


def _structured(cls: type[T]) -> Callable[[str], T]:
    return lambda value: _fast().structure(_json_object(value), cls)


def _decoder(field: attrs.Attribute[Any]) -> Callable[[str], Any]:
    """How the stored string of ``field`` becomes its value, without cattrs for the common
    shapes: strings as they are, enums by value, numbers by ``int`` / ``float``, timestamps
    from epoch ms, JSON for the rest."""
    tp: Any = field.type
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # X | None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp in (str, int, float):
        return typing.cast(Callable[[str], Any], tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_decoder(tp)
    if tp is datetime:
        return from_ms
    if typing.get_origin(tp) is tuple:
        return _str_tuple
    if typing.get_origin(tp) is dict:
        return _json_object
    if attrs.has(tp):
        return _structured(tp)
    return json.loads  # pragma: no cover - every Task field has one of the shapes above


def _enum_decoder(tp: type[enum.Enum]) -> Callable[[str], Any]:
    """``tp(value)`` by a dictionary lookup (calling an enum class costs several times more)."""
    members = tp._value2member_map_

    def decode(value: str) -> Any:
        member = members.get(value)
        return tp(value) if member is None else member  # an unknown value raises

    return decode


#: Task field name -> the decoder of its stored string into the field's value (a worker
#: decodes every task it claims: cattrs' generic path costs several times this).
_DECODERS: dict[str, Callable[[str], Any]] = {f.name: _decoder(f) for f in attrs.fields(Task)}


def task_from_hash(fields: Mapping[str, str], task_id: str = "") -> Task:
    """Decode a task hash; unknown (bookkeeping) fields are ignored. Raises CorruptTask."""
    try:
        return Task(**{name: _DECODERS[name](v) for name, v in fields.items() if name in _DECODERS})
    except Exception:  # a value of another shape than expected: the thorough way says why
        return _task_from_hash_checked(fields, task_id)


def _task_from_hash_checked(fields: Mapping[str, str], task_id: str) -> Task:
    """Decode field by field, so the error names the field at fault: ``corrupt task data:
    params (not JSON: ...)``; what only fails together goes through the detailed converter."""
    tid = task_id or str(fields.get("id", "?"))
    for name, value in fields.items():
        decode = _DECODERS.get(name)
        if decode is None:
            continue
        try:
            decode(value)
        except Exception as exc:  # any decoding failure means the stored hash is corrupt
            why = f"not JSON: {exc}" if isinstance(exc, json.JSONDecodeError) else _describe(exc)
            raise CorruptTask(tid, f"corrupt task data: {name} ({why[:200]})") from exc
    data: dict[str, Any] = {}
    try:
        for name, value in fields.items():
            raw = TASK_FIELDS.get(name)
            if raw is None:
                continue
            data[name] = value if raw else json.loads(value)
        return converter.structure(data, Task)
    except Exception as exc:
        raise CorruptTask(tid, f"corrupt task data: {_describe(exc)[:300]}") from exc


def event_from_json(data: str | bytes) -> ProgressEvent:
    """Decode one event (a bus message holding a single event) into a ProgressEvent."""
    return loads(data, ProgressEvent)


def events_from_json(data: str | bytes) -> list[ProgressEvent]:
    """Decode one bus message: a single event, or a JSON array of the events one script
    published on one channel (a batch of completions or claims)."""
    plain = json.loads(data)
    if isinstance(plain, list):
        return [_structure(item, ProgressEvent) for item in plain]
    return [_structure(plain, ProgressEvent)]


def _describe(exc: BaseException) -> str:
    subs = getattr(exc, "exceptions", None)
    if subs:
        return "; ".join(_describe(e) for e in subs)
    note = "".join(f" ({n})" for n in getattr(exc, "__notes__", []))
    return f"{exc}{note}"
