"""Git worktrees: one per task on its own branch, merged in dependency order when the run ends.

A task of run ``R`` with plan id ``T`` works on branch ``shim/R/T``, in a worktree at a stable
path (``$SHIM_WORKTREES``, default ``~/.cache/shim/worktrees``, then a folder per repository, run
and task), so a later attempt on the same machine finds the same checkout and the agent's
session from there. The branch starts at the run's base commit with the branches of the task's
dependencies merged in. Whatever the agent leaves uncommitted is committed on the branch when it
exits, and the worktree is removed; the branch stays. The user's own checkout (its branch, index
and files) is never touched: everything happens in worktrees.

With a repository URL, each machine keeps a bare cached clone, works in worktrees of it and
pushes the task branches back, so workers can live on any machine; the merge reads the pushed
branches.

The merged result of run ``R`` is branch ``shim/R/@merged`` (git cannot hold both ``shim/R`` and
``shim/R/T``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

from shim_core.errors import ShimError

#: Longest single git command (a clone of a big repository may take this long).
GIT_TIMEOUT = 600.0
#: Identity of SHIM's commits when the repository has none configured.
_IDENTITY = ("-c", "user.name=SHIM", "-c", "user.email=shim@localhost")
_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[^/\s]+@[^/\s]+:)", re.IGNORECASE)


class WorkspaceError(ShimError):
    """A git operation on a task's workspace failed (the message names the command)."""


def is_url(repo: str) -> bool:
    """True for a git URL (``https://``, ``ssh://``, ``file://``, ``git@host:path``)."""
    return bool(_URL.match(repo))


def task_branch(run_id: str, plan_id: str) -> str:
    return f"shim/{run_id}/{plan_id}"


def merged_branch(run_id: str) -> str:
    return f"shim/{run_id}/@merged"


def worktrees_root() -> Path:
    root = os.environ.get("SHIM_WORKTREES") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "shim", "worktrees"
    )
    return Path(root)


def git(cwd: Path | str, *args: str, check: bool = True) -> str:
    """Run git in ``cwd``; returns stdout. Raises WorkspaceError (with git's message) on
    failure when ``check``."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=GIT_TIMEOUT,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise WorkspaceError(f"git {args[0]} failed: {exc}") from exc
    if check and done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise WorkspaceError(f"git {' '.join(args[:2])} failed: {' '.join(message[-3:])}")
    return done.stdout


@attrs.frozen
class RepoInfo:
    """Where a run's tasks work: the repository (local path or URL) and the base commit."""

    repo: str
    base: str


def resolve_repo(repo: str | None, cwd: Path | None = None) -> RepoInfo | None:
    """The repository and base commit a run works on: ``repo`` (a path or a URL), else the git
    repository holding ``cwd``; None when there is none. Raises WorkspaceError for a ``repo``
    that is not a usable git repository."""
    if repo and is_url(repo):
        heads = git(cwd or Path.cwd(), "ls-remote", repo, "HEAD")
        if not heads.strip():
            raise WorkspaceError(f"repository {repo} has no HEAD commit")
        return RepoInfo(repo, heads.split()[0])
    where = Path(repo).expanduser() if repo else (cwd or Path.cwd())
    if not where.is_dir():
        if repo:
            raise WorkspaceError(f"repository {repo!r} is not a directory")
        return None
    top = git(where, "rev-parse", "--show-toplevel", check=bool(repo)).strip()
    if not top:
        return None
    head = git(top, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False).strip()
    if not head:
        raise WorkspaceError(f"repository {top} has no commit yet: commit something first")
    return RepoInfo(str(Path(top).resolve()), head)


@attrs.frozen
class Workspace:
    """A task's checkout: ``path`` on ``branch``; ``start`` is the commit its own work began at
    (base plus the dependencies' branches)."""

    path: Path
    branch: str
    start: str
    repo: str
    #: The git directory worktrees are added to (the local repository, or the cached clone).
    common: Path


class Worktrees:
    """Creates, commits, publishes and removes task worktrees of one repository."""

    def __init__(self, repo: str, root: Path | None = None) -> None:
        self.repo = repo
        self.root = root or worktrees_root()
        key = hashlib.sha1(repo.encode()).hexdigest()[:12]
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(repo.rstrip("/")).name)[:40] or "repo"
        self.home = self.root / f"{name}-{key}"
        self.remote = is_url(repo)

    # ------------------------------------------------------------------ locks
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialises git metadata changes on this repository among this machine's workers."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @property
    def common(self) -> Path:
        """The git directory to add worktrees to."""
        return self.home / "clone.git" if self.remote else Path(self.repo)

    def ref(self, branch: str) -> str:
        """How a published branch is named here (remote-tracking for a cached clone)."""
        return f"refs/remotes/origin/{branch}" if self.remote else f"refs/heads/{branch}"

    def exists(self, ref: str) -> bool:
        """Whether ``ref`` names a commit here."""
        return bool(git(self.common, "rev-parse", "--verify", "--quiet", ref, check=False).strip())

    def sync(self) -> None:
        """Clone (once) and fetch every branch of a URL repository into the cache."""
        if not self.remote:
            return
        if not (self.common / "HEAD").exists():
            git(self.home, "clone", "--bare", "--quiet", self.repo, str(self.common))
            git(self.common, "config", "remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*")
        git(self.common, "fetch", "--quiet", "--prune", "origin")

    # -------------------------------------------------------------- task side
    def prepare(
        self,
        run_id: str,
        plan_id: str,
        base: str,
        deps: Sequence[str],
        *,
        conflicted_with: str | None = None,
    ) -> Workspace:
        """The task's worktree, created (base + dependencies merged) or reused from an earlier
        attempt. Raises WorkspaceError, e.g. when two dependencies conflict.

        ``conflicted_with`` (a plan id) starts a conflict resolution instead: that task's branch
        is merged into ``base`` and its conflicts are left in the files for the agent (the
        commit after it then records the merge)."""
        branch = task_branch(run_id, plan_id)
        path = self.home / run_id / plan_id
        with self.locked():
            self.sync()
            if path.is_dir() and (path / ".git").exists():
                return Workspace(path, branch, self._start(path, base), self.repo, self.common)
            git(self.common, "worktree", "prune")
            if path.exists():
                shutil.rmtree(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            if self.exists(f"refs/heads/{branch}"):
                git(self.common, "worktree", "add", "--quiet", str(path), branch)
            elif self.remote and self.exists(self.ref(branch)):
                git(self.common, "worktree", "add", "--quiet", "-b", branch, str(path),
                    self.ref(branch))  # fmt: skip
            else:
                git(self.common, "worktree", "add", "--quiet", "-b", branch, str(path), base)
                self._merge_deps(path, run_id, deps)
                if conflicted_with:
                    ref = self.ref(task_branch(run_id, conflicted_with))
                    git(path, *self.identity(), "merge", "--no-ff", "--no-commit", ref,
                        check=False)  # fmt: skip
                start = git(path, "rev-parse", "HEAD").strip()
                (Path(git(path, "rev-parse", "--absolute-git-dir").strip()) / "shim-start"
                 ).write_text(start)  # fmt: skip
        return Workspace(path, branch, self._start(path, base), self.repo, self.common)

    def _merge_deps(self, path: Path, run_id: str, deps: Sequence[str]) -> None:
        for dep in deps:
            ref = self.ref(task_branch(run_id, dep))
            if not self.exists(ref):
                continue  # the dependency changed nothing that was published
            done = subprocess.run(
                ["git", *self.identity(), "merge", "--no-edit", "--quiet", "-m",
                 f"shim: bring in task {dep}", ref],
                cwd=path, capture_output=True, text=True, check=False, timeout=GIT_TIMEOUT,
            )  # fmt: skip
            if done.returncode != 0:
                files = conflicted(path)
                git(path, "merge", "--abort", check=False)
                raise WorkspaceError(
                    f"the branches of this task's dependencies conflict ({dep}): "
                    + (", ".join(files) or done.stderr.strip())
                )

    def _start(self, path: Path, base: str) -> str:
        marker = Path(git(path, "rev-parse", "--absolute-git-dir").strip()) / "shim-start"
        return marker.read_text().strip() if marker.exists() else base

    def identity(self) -> tuple[str, ...]:
        """``-c`` options naming SHIM as the committer where the repository names no one."""
        configured = git(self.common, "config", "user.email", check=False).strip()
        return () if configured else _IDENTITY

    def commit(self, ws: Workspace, message: str) -> tuple[str, tuple[str, ...]]:
        """Commit whatever is left uncommitted on the task's branch; returns (HEAD commit, files
        the task changed since its start)."""
        git(ws.path, "add", "--all")
        merging = git(ws.path, "rev-parse", "-q", "--verify", "MERGE_HEAD", check=False).strip()
        if merging or git(ws.path, "status", "--porcelain").strip():
            git(ws.path, *self.identity(), "commit", "--quiet", "--no-verify", "-m", message)
        head = git(ws.path, "rev-parse", "HEAD").strip()
        changed = git(ws.path, "diff", "--name-only", f"{ws.start}..{head}").split("\n")
        return head, tuple(f for f in changed if f)

    def publish(self, ws: Workspace) -> None:
        """Push the task's branch back to a URL repository (nothing to do for a local one)."""
        if self.remote:
            git(ws.path, "push", "--quiet", "--force", "origin", f"{ws.branch}:{ws.branch}")

    def remove(self, ws: Workspace) -> None:
        """Remove the worktree (the branch stays)."""
        with self.locked():
            git(self.common, "worktree", "remove", "--force", str(ws.path), check=False)
            if ws.path.exists():
                shutil.rmtree(ws.path, ignore_errors=True)
            git(self.common, "worktree", "prune", check=False)

    def clean(self) -> int:
        """Remove every SHIM worktree of this repository left on this machine; returns how
        many (``shim clean --worktrees``)."""
        removed = 0
        with self.locked():
            if not self.home.is_dir():
                return 0
            for run in [p for p in self.home.iterdir() if p.is_dir() and p.name != "clone.git"]:
                for task in [p for p in run.iterdir() if p.is_dir()]:
                    git(self.common, "worktree", "remove", "--force", str(task), check=False)
                    shutil.rmtree(task, ignore_errors=True)
                    removed += 1
                shutil.rmtree(run, ignore_errors=True)
            git(self.common, "worktree", "prune", check=False)
        return removed


def conflicted(path: Path) -> list[str]:
    """Files left in conflict by a merge in ``path``."""
    out = git(path, "diff", "--name-only", "--diff-filter=U", check=False)
    return [f for f in out.split("\n") if f]


@attrs.frozen
class MergeConflict:
    task: str
    files: tuple[str, ...]
    #: The merged branch's commit the task's branch conflicted with.
    at: str = ""


@attrs.frozen
class MergeReport:
    """How a run's task branches came together on ``branch``."""

    branch: str
    base: str
    merged: tuple[str, ...]
    conflicts: tuple[MergeConflict, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "branch": self.branch,
            "base": self.base,
            "merged": list(self.merged),
            "conflicts": [{"task": c.task, "files": list(c.files)} for c in self.conflicts],
        }


def merge_run(
    repo: str, base: str, run_id: str, order: Sequence[str], root: Path | None = None
) -> MergeReport:
    """Merge the branches of the tasks in ``order`` (plan ids, dependencies first) into
    ``shim/<run>/@merged``, rebuilt from ``base`` each time (so ``shim merge`` can redo it after
    a person fixed a branch). The first conflict stops the merge and is reported with its files;
    every branch is kept. Tasks without a branch (they changed nothing) are skipped."""
    trees = Worktrees(repo, root)
    branch = merged_branch(run_id)
    path = trees.home / run_id / "@merge"
    with trees.locked():
        trees.sync()
        git(trees.common, "worktree", "remove", "--force", str(path), check=False)
        shutil.rmtree(path, ignore_errors=True)
        git(trees.common, "worktree", "prune", check=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        git(trees.common, "worktree", "add", "--quiet", "--force", "-B", branch, str(path), base)
    merged: list[str] = []
    conflicts: list[MergeConflict] = []
    try:
        for plan_id in order:
            ref = trees.ref(task_branch(run_id, plan_id))
            if not trees.exists(ref):
                continue
            done = subprocess.run(
                ["git", *trees.identity(), "merge", "--no-ff", "--no-edit", "--quiet", "-m",
                 f"shim: merge task {plan_id}", ref],
                cwd=path, capture_output=True, text=True, check=False, timeout=GIT_TIMEOUT,
            )  # fmt: skip
            if done.returncode != 0:
                files = conflicted(path)
                git(path, "merge", "--abort", check=False)
                head = git(path, "rev-parse", "HEAD").strip()
                conflicts.append(MergeConflict(plan_id, tuple(files), head))
                break
            merged.append(plan_id)
        if trees.remote:
            git(path, "push", "--quiet", "--force", "origin", f"{branch}:{branch}")
    finally:
        with trees.locked():
            git(trees.common, "worktree", "remove", "--force", str(path), check=False)
            shutil.rmtree(path, ignore_errors=True)
            git(trees.common, "worktree", "prune", check=False)
    return MergeReport(branch, base, tuple(merged), tuple(conflicts))


def conflict_markers(path: Path) -> list[str]:
    """Tracked or new files in ``path`` that still hold merge conflict markers."""
    out = git(path, "grep", "-l", "--untracked", "-e", "^<<<<<<< ", "-e", "^>>>>>>> ", check=False)
    return [f for f in out.split("\n") if f]
