"""The ``filesystem`` checkpoint backend: one JSON file per checkpoint on a local disk.

The root is ``$SHIM_CHECKPOINT_DIR/<namespace>`` when the variable is set, else
``~/.shim/checkpoints/<namespace>``. Each task has a folder (its id, percent-encoded so it is
always one safe path component) of files ``<sequence>-<checkpoint id>.json``; the last 10 are
kept. A file is written atomically: to a temporary file in the same folder, fsync'ed, then
renamed over its final name, so a reader never sees a partial checkpoint. Sessions are found by
scanning the files, which suits a single machine's worth of checkpoints.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs

from shim_core import serde
from shim_core.contracts import Checkpoint
from shim_plugins.checkpoints.redis_backend import KEEP, decode, sort_newest_first

DIR_ENV = "SHIM_CHECKPOINT_DIR"
_FILE = re.compile(r"^(?P<seq>\d{10})-[^/]*\.json$")


def default_root(env: Mapping[str, str]) -> Path:
    """``$SHIM_CHECKPOINT_DIR`` if set, else ``~/.shim/checkpoints`` (namespaces go below)."""
    configured = env.get(DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".shim" / "checkpoints"


def safe_name(value: str) -> str:
    """``value`` as a single path component: percent-encoded, dots included (no ``..``)."""
    if not value:
        raise ValueError("an empty id cannot name a checkpoint file")
    return quote(value, safe="-_").replace(".", "%2E").replace("~", "%7E")


def _sequence(path: Path) -> int:
    match = _FILE.match(path.name)
    return int(match["seq"]) if match else 0


def _write_atomically(folder: Path, name: str, text: str) -> None:
    fd, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, folder / name)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)  # makes the rename itself durable
    finally:
        os.close(fd)


@attrs.define
class FilesystemCheckpointBackend:
    """Checkpoints as JSON files under :attr:`root` (one folder per task)."""

    root: Path = attrs.field(converter=Path)
    keep: int = attrs.field(default=KEEP, validator=attrs.validators.ge(1))
    name: str = "filesystem"
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def save(self, checkpoint: Checkpoint) -> str:
        """Write ``checkpoint`` atomically and drop the task's checkpoints beyond :attr:`keep`."""
        folder = self._folder(checkpoint.task_id)
        with self._lock:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            files = self._files(folder)
            seq = _sequence(files[-1]) + 1 if files else 1
            name = f"{seq:010d}-{safe_name(checkpoint.id)}.json"
            _write_atomically(folder, name, serde.dumps(checkpoint))
            for old in [*files, folder / name][: -self.keep]:
                old.unlink(missing_ok=True)
        return checkpoint.id

    def latest(self, task_id: str) -> Checkpoint | None:
        """The newest readable checkpoint of ``task_id``, or None."""
        return next(self._read(self._folder(task_id)), None)

    def for_session(self, session_id: str) -> list[Checkpoint]:
        """Every kept checkpoint of the session, newest first (scans all task folders)."""
        if not self.root.is_dir():
            return []
        found = [
            checkpoint
            for folder in sorted(self.root.iterdir())
            if folder.is_dir()
            for checkpoint in self._read(folder)
            if checkpoint.session_id == session_id
        ]
        return sort_newest_first(found)

    def delete(self, task_id: str) -> int:
        """Remove the task's folder; returns how many checkpoints it held."""
        folder = self._folder(task_id)
        with self._lock:
            count = len(self._files(folder))
            shutil.rmtree(folder, ignore_errors=True)
        return count

    def _folder(self, task_id: str) -> Path:
        return self.root / safe_name(task_id)

    @staticmethod
    def _files(folder: Path) -> list[Path]:
        """Checkpoint files of a folder, oldest first (temporary files excluded)."""
        try:
            with os.scandir(folder) as entries:
                names = [entry.name for entry in entries if _FILE.match(entry.name)]
        except FileNotFoundError:
            return []
        return [folder / name for name in sorted(names)]

    def _read(self, folder: Path) -> Iterator[Checkpoint]:
        for path in reversed(self._files(folder)):
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:  # trimmed or deleted meanwhile
                continue
            checkpoint = decode(text, str(path))
            if checkpoint is not None:
                yield checkpoint


@attrs.define
class FilesystemCheckpointBackendFactory:
    """Builds :class:`FilesystemCheckpointBackend` rooted per namespace (see module doc).

    ``env`` replaces ``os.environ`` when looking up ``SHIM_CHECKPOINT_DIR``.
    """

    name: str = "filesystem"
    env: Mapping[str, str] | None = None

    def create(self, connection: Any, settings: Any) -> FilesystemCheckpointBackend:
        """A backend under ``<root>/<settings.namespace>``; ``connection`` is not used."""
        root = default_root(os.environ if self.env is None else self.env)
        return FilesystemCheckpointBackend(root / settings.namespace)
