"""Reading and checking executor parameters (``task.params``) and environment knobs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class ParamError(ValueError):
    """A parameter or environment knob has an unusable value; the attempt fails cleanly."""


#: The largest number a param may hold by default: 30 days in seconds (a larger duration or
#: timeout is a mistake, and beyond about 1e9 s a timer overflows).
MAX_NUMBER = 30 * 86_400.0


def number(
    source: Mapping[str, Any],
    key: str,
    default: float | None,
    *,
    minimum: float = 0.0,
    maximum: float = MAX_NUMBER,
    what: str = "param",
) -> float | None:
    """``source[key]`` as a finite float in [minimum, maximum], else ``default`` when absent.
    The default maximum keeps durations and timeouts in what a timer can wait for."""
    raw = source.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ParamError(f"{what} {key!r} must be a number, got {raw!r}") from None
    if not (math.isfinite(value) and minimum <= value <= maximum):
        bounds = f"in [{minimum:g}, {maximum:g}]"
        raise ParamError(f"{what} {key!r} must be {bounds}, got {raw!r}")
    return value


def integer(source: Mapping[str, Any], key: str, default: int, *, minimum: int = 0) -> int:
    """``source[key]`` as an int >= ``minimum`` (bools refused), else ``default`` when absent."""
    raw = source.get(key)
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ParamError(f"param {key!r} must be an integer, got {raw!r}")
    try:
        value = int(raw)
    except ValueError:
        raise ParamError(f"param {key!r} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ParamError(f"param {key!r} must be >= {minimum}, got {raw!r}")
    return value
