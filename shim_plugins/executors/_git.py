"""Which files a command changed in a git work tree, from ``git status`` before and after."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

#: Dirty path (relative to the repository root) -> (status, mtime_ns, ctime_ns, size).
Snapshot = dict[str, tuple[str, int, int, int]]

_GIT_TIMEOUT = 60.0


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(cwd), *args],
            capture_output=True,
            encoding="utf-8",
            errors="surrogateescape",
            timeout=_GIT_TIMEOUT,
            check=False,
            # status must not take the index lock: the command under watch may use git too
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _signature(path: Path) -> tuple[int, int, int]:
    try:
        st = path.lstat()
    except OSError:
        return (0, 0, -1)  # deleted
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def snapshot(cwd: Path) -> Snapshot | None:
    """The dirty entries of the work tree containing ``cwd``; None outside a work tree (or
    without git). Files are stat'ed too, so a second change to an already dirty file shows."""
    root = _git(cwd, "rev-parse", "--show-toplevel")
    if not root or not root.strip():
        return None
    status = _git(cwd, "status", "--porcelain", "-z", "--untracked-files=all")
    if status is None:
        return None
    top = Path(root.strip())
    entries: Snapshot = {}
    fields = iter(status.split("\0"))
    for entry in fields:
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:]
        if code[0] in "RC":
            next(fields, None)  # -z puts a rename's original path in the next field
        entries[path] = (code, *_signature(top / path))
    return entries


def changed(before: Snapshot | None, after: Snapshot | None) -> tuple[str, ...]:
    """Paths whose entry is new or different after the run, sorted."""
    if before is None or after is None:
        return ()
    return tuple(sorted(path for path, entry in after.items() if before.get(path) != entry))
