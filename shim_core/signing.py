"""Signed tasks: who may make a worker run something.

Anyone who can write to Redis can add a task. When the submitter and the workers share a secret
(``SHIM_SECRET``, or ``SHIM_SECRET_FILE`` with one key per line), the queue signs every task it
adds with HMAC-SHA256 over the fields that decide what runs, and a worker that holds the secret
runs no task whose signature does not verify: such a task fails at once with ``signature
mismatch`` (outcome ``rejected``). Several keys rotate: the first signs, every one verifies.

The signed message is a JSON array of the version tag, the namespace (a task signed for one
fleet does not run in another that shares the key) and the stored strings of
:data:`SIGNED_FIELDS`, so a field cannot be moved into another, a missing field differs from an
empty one, and a stored task is checked exactly as it will be decoded.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shim_core.config import DEFAULT_NAMESPACE, Settings
from shim_core.errors import ConfigError
from shim_core.models import Task
from shim_core.serde import compact_json, stored_field, stored_value

#: The fields that decide what a worker runs and how: which executor (by name or by type), the
#: command or function and its arguments, the prompt and its context, the agent, its run.
SIGNED_FIELDS = (
    "id",
    "type",
    "executor",
    "agent",
    "title",
    "description",
    "context",
    "params",
    # where and with what an agent works: the run's worktree and budget, the dependencies whose
    # branches and results it gets, how long it may run, what its failure does to others
    "run_id",
    "dependencies",
    "timeout_ms",
    "on_failure",
)
#: Tag of the signed message's layout, and prefix of every signature.
VERSION = "shim-task-2"
PREFIX = "hmac-sha256:"
#: Shorter keys are refused: a secret worth having is not guessable.
MIN_KEY_LENGTH = 16


def signed_message(
    task: Task, namespace: str, changes: Mapping[str, Any] = MappingProxyType({})
) -> bytes:
    """The bytes a task's signature covers (of ``task`` with ``changes`` made to it)."""
    fields = (
        stored_value(f, changes[f]) if f in changes else stored_field(task, f)
        for f in SIGNED_FIELDS
    )
    return compact_json([VERSION, namespace, *fields]).encode()


class TaskSigner:
    """Signs the tasks of ``namespace`` with the first key and verifies them against every key."""

    def __init__(self, keys: Sequence[str], *, namespace: str = DEFAULT_NAMESPACE) -> None:
        if not keys:
            raise ConfigError("task signing needs at least one key")
        self._keys = [k.encode() for k in keys]
        self.namespace = namespace

    @classmethod
    def from_settings(cls, settings: Settings) -> TaskSigner | None:
        """The signer of ``settings`` (its ``secret`` keys, then those of its ``secret_file``);
        None when neither is set."""
        keys = [k.strip() for k in settings.secret.split(",") if k.strip()]
        where = ["SHIM_SECRET"] * len(keys)
        if settings.secret_file:
            try:
                text = Path(settings.secret_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ConfigError(
                    f"cannot read the signing keys of SHIM_SECRET_FILE {settings.secret_file}: "
                    f"{reason}"
                ) from None
            lines = [line.strip() for line in text.splitlines()]
            found = [line for line in lines if line and not line.startswith("#")]
            if not found:
                raise ConfigError(f"SHIM_SECRET_FILE {settings.secret_file} holds no key")
            keys += found
            where += [f"SHIM_SECRET_FILE {settings.secret_file}"] * len(found)
        for n, (key, source) in enumerate(zip(keys, where, strict=True), 1):
            if len(key) < MIN_KEY_LENGTH:  # never say more of a key than its length
                raise ConfigError(
                    f"signing key {n} (from {source}) has {len(key)} characters; "
                    f"use at least {MIN_KEY_LENGTH}, e.g. from `openssl rand -hex 32`"
                )
        return cls(keys, namespace=settings.namespace) if keys else None

    def sign(self, task: Task, changes: Mapping[str, Any] = MappingProxyType({})) -> str:
        """The signature of ``task`` (with ``changes`` made to it) with the first key."""
        message = signed_message(task, self.namespace, changes)
        return PREFIX + self._digest(self._keys[0], message)

    def verify(self, task: Task) -> bool:
        """True when ``task`` carries a signature made by one of the keys over its fields."""
        given = task.signature or ""
        if not given.startswith(PREFIX):
            return False
        message = signed_message(task, self.namespace)
        mac = given[len(PREFIX) :]
        return any(hmac.compare_digest(self._digest(k, message), mac) for k in self._keys)

    @staticmethod
    def _digest(key: bytes, message: bytes) -> str:
        return hmac.new(key, message, hashlib.sha256).hexdigest()
