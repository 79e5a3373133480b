"""The ``plan`` strategy: the request is the path of a plan file (YAML or JSON)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from shim_core.supervisor.plan import Plan, load_plan


@attrs.frozen
class PlanFileDecomposer:
    """Reads the plan file named by the request (see :mod:`shim_core.supervisor.plan`)."""

    name: str = "plan"

    def decompose(self, request: str, context: Mapping[str, Any]) -> Plan:
        """The plan in file ``request``; raises PlanError for an unreadable or invalid file.

        ``context["executors"]`` / ``context["types"]``, when given, are checked in the same pass,
        so every problem of the file is reported at once."""
        return load_plan(
            request.strip(), executors=context.get("executors"), types=context.get("types")
        )
