"""JSON as the dashboard sends it: strict JSON only (``allow_nan=False``), since a browser's
``JSON.parse`` refuses ``NaN`` and ``Infinity``. The numbers the dashboard computes are checked
with :func:`finite`; a non-finite number left anywhere in data read from Redis is sent as null."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import JSONResponse


def finite(value: Any, default: float | None = None) -> float | None:
    """``value`` as a float when it is a finite number, else ``default`` (untrusted data)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return number if math.isfinite(number) else default


def dumps(data: Any) -> str:
    """``data`` as strict JSON on one line, non-finite numbers as null."""
    try:
        return json.dumps(data, allow_nan=False, separators=(",", ":"))
    except ValueError:  # a NaN or an infinity somewhere in data read from Redis
        return json.dumps(_finite_only(data), allow_nan=False, separators=(",", ":"))


def _finite_only(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_only(v) for v in value]
    return value


class JSON(JSONResponse):
    """A JSON response encoded by :func:`dumps`."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode()
