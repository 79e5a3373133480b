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
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

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


#: What a run or plan id must look like to name a folder and a branch (data read from Redis is
#: checked again here: an id like '..' must never become a path).
_COMPONENT = re.compile(r"(?!.*\.\.)(?!.*\.lock$)(?!.*\.$)[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")


def check_component(kind: str, value: str) -> str:
    """``value`` if it is safe as a folder and branch name component, else WorkspaceError."""
    if not _COMPONENT.fullmatch(value):
        raise WorkspaceError(f"{kind} {value!r} cannot name a worktree or a branch")
    return value


def task_branch(run_id: str, plan_id: str) -> str:
    """``shim/<run>/<task>``; raises WorkspaceError for ids that cannot name a branch."""
    return f"shim/{check_component('run id', run_id)}/{check_component('task', plan_id)}"


def merged_branch(run_id: str) -> str:
    return f"shim/{check_component('run id', run_id)}/@merged"


def worktrees_root() -> Path:
    root = os.environ.get("SHIM_WORKTREES") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "shim", "worktrees"
    )
    return Path(root)


#: Every git call: no repository hooks run inside a worker, and nothing waits for a person.
_SAFE = ("-c", "core.hooksPath=/dev/null")


def run_git(cwd: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run git in ``cwd`` (no hooks, no prompts: stdin closed, ssh in batch mode, a time limit);
    raises WorkspaceError only when git cannot run at all."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    try:
        return subprocess.run(
            ["git", *_SAFE, *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=GIT_TIMEOUT,
            check=False,
            env=env,
        )
    except (OSError, subprocess.SubprocessError) as exc:  # TimeoutExpired included
        raise WorkspaceError(f"git {args[0]} failed: {exc}") from exc


def git(cwd: Path | str, *args: str, check: bool = True) -> str:
    """Run git in ``cwd``; returns stdout. Raises WorkspaceError (with git's message) on
    failure when ``check``."""
    done = run_git(cwd, *args)
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
    """A task's checkout: ``path`` on ``branch``. Its own changes are the commits reachable from
    HEAD but not from ``excludes`` (the base and the dependencies' branches)."""

    path: Path
    branch: str
    excludes: tuple[str, ...]
    repo: str
    #: The git directory worktrees are added to (the local repository, or the cached clone).
    common: Path
    #: The published branch's commit when the work began ("" for a new branch): a push must
    #: not overwrite anything published since.
    published: str = ""
    #: Held open while an execution uses the worktree (another worker on this machine waits).
    lock: Any = attrs.field(default=None, eq=False, repr=False)

    def changed_files(self) -> tuple[str, ...]:
        """Files changed by the task's own commits (not by the merges of its dependencies)."""
        out = git(self.path, "log", "--format=", "--name-only", "HEAD", "--not", *self.excludes)
        return tuple(sorted({f for f in out.split("\n") if f}))

    def own_commits(self) -> str:
        """The task's own commits, one line each (for notes to a fresh session)."""
        return git(self.path, "log", "--oneline", "HEAD", "--not", *self.excludes, check=False)


class WorktreeBusy(WorkspaceError):
    """Another execution on this machine still uses the task's worktree."""


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

    def _claim(self, run_id: str, plan_id: str) -> IO[str]:
        """The task's own lock, held for a whole execution (released when its process dies)."""
        folder = self.home / run_id
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / f"{plan_id}.lock", "w")  # noqa: SIM115 (held past this call)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise WorktreeBusy(
                f"the worktree of task {plan_id} is still used by another worker on this machine"
            ) from None
        return handle

    @property
    def common(self) -> Path:
        """The git directory to add worktrees to."""
        return self.home / "clone.git" if self.remote else Path(self.repo)

    def ref(self, branch: str) -> str:
        """How a published branch is named here (remote-tracking for a cached clone)."""
        return f"refs/remotes/origin/{branch}" if self.remote else f"refs/heads/{branch}"

    def exists(self, ref: str) -> bool:
        """Whether ``ref`` names a commit here."""
        return bool(self.head_of(ref))

    def head_of(self, ref: str) -> str:
        """The commit ``ref`` names here, or ""."""
        return git(self.common, "rev-parse", "--verify", "--quiet", ref, check=False).strip()

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
        attempt on this machine; locked for this execution until :meth:`remove` or
        :meth:`release`. Raises WorkspaceError, e.g. when two dependencies conflict, or
        WorktreeBusy when another execution here still holds it.

        With a URL repository, a branch some machine already published is the starting point,
        so no attempt's pushed work is lost. ``conflicted_with`` (a plan id) starts a conflict
        resolution instead: that task's branch is merged into ``base`` and its conflicts are
        left in the files for the agent (the commit after it then records the merge)."""
        branch = task_branch(run_id, plan_id)
        path = self.home / run_id / plan_id
        lock = self._claim(run_id, plan_id)
        try:
            with self.locked():
                self.sync()
                published = self.head_of(self.ref(branch)) if self.remote else ""
                kill_leftovers(path)  # a dead worker's agent tools may still work in there
                if not self._reusable(path, published):
                    self._create(path, branch, base, published)
                    if not published:
                        self._merge_deps(path, run_id, deps)
                        if conflicted_with:
                            ref = self.ref(task_branch(run_id, conflicted_with))
                            run_git(path, *self.identity(), "merge", "--no-ff", "--no-commit", ref)
                excludes = (base, *(self.ref(task_branch(run_id, d)) for d in deps))
                excludes = tuple(ref for ref in excludes if self.exists(ref))
        except BaseException:
            lock.close()
            raise
        return Workspace(path, branch, excludes, self.repo, self.common, published, lock)

    def _reusable(self, path: Path, published: str) -> bool:
        """An earlier attempt's worktree here, unless another machine has pushed work since
        (then it starts again from the pushed branch: this one's unpushed leftovers were never
        anyone else's either)."""
        if not (path.is_dir() and (path / ".git").exists()):
            return False
        if not published:
            return True
        return run_git(path, "merge-base", "--is-ancestor", published, "HEAD").returncode == 0

    def _create(self, path: Path, branch: str, base: str, published: str) -> None:
        if path.exists():
            git(self.common, "worktree", "remove", "--force", str(path), check=False)
            shutil.rmtree(path, ignore_errors=True)
        git(self.common, "worktree", "prune")
        path.parent.mkdir(parents=True, exist_ok=True)
        if published:  # the pushed branch wins over a stale local copy
            git(self.common, "worktree", "add", "--quiet", "-B", branch, str(path), published)
        elif self.exists(f"refs/heads/{branch}"):
            git(self.common, "worktree", "add", "--quiet", str(path), branch)
        else:
            git(self.common, "worktree", "add", "--quiet", "-b", branch, str(path), base)

    def _merge_deps(self, path: Path, run_id: str, deps: Sequence[str]) -> None:
        for dep in deps:
            ref = self.ref(task_branch(run_id, dep))
            if not self.exists(ref):
                continue  # the dependency changed nothing that was published
            done = run_git(
                path, *self.identity(), "merge", "--no-edit", "--quiet", "-m",
                f"shim: bring in task {dep}", ref,
            )  # fmt: skip
            if done.returncode != 0:
                files = conflicted(path)
                git(path, "merge", "--abort", check=False)
                raise WorkspaceError(
                    f"the branches of this task's dependencies conflict ({dep}): "
                    + (", ".join(files) or done.stderr.strip())
                )

    def identity(self) -> tuple[str, ...]:
        """``-c`` options naming SHIM as the committer where the repository names no one."""
        configured = git(self.common, "config", "user.email", check=False).strip()
        return () if configured else _IDENTITY

    def commit(self, ws: Workspace, message: str) -> tuple[str, tuple[str, ...]]:
        """Commit whatever is left uncommitted on the task's branch; returns (HEAD commit, files
        the task's own commits changed)."""
        git(ws.path, "add", "--all")
        merging = git(ws.path, "rev-parse", "-q", "--verify", "MERGE_HEAD", check=False).strip()
        if merging or git(ws.path, "status", "--porcelain").strip():
            git(ws.path, *self.identity(), "commit", "--quiet", "--no-verify", "-m", message)
        head = git(ws.path, "rev-parse", "HEAD").strip()
        return head, ws.changed_files()

    def publish(self, ws: Workspace) -> None:
        """Push the task's branch back to a URL repository (nothing to do for a local one),
        refusing to overwrite what another machine published since the work began."""
        if self.remote:
            lease = f"--force-with-lease=refs/heads/{ws.branch}:{ws.published}"
            git(ws.path, "push", "--quiet", lease, "origin", f"{ws.branch}:{ws.branch}")

    def release(self, ws: Workspace) -> None:
        """Let the next execution have the worktree, left as it is."""
        if ws.lock is not None:
            ws.lock.close()

    def remove(self, ws: Workspace) -> None:
        """Remove the worktree (the branch stays) and release it."""
        try:
            with self.locked():
                git(self.common, "worktree", "remove", "--force", str(ws.path), check=False)
                if ws.path.exists():
                    shutil.rmtree(ws.path, ignore_errors=True)
                git(self.common, "worktree", "prune", check=False)
        finally:
            self.release(ws)

    def clean(self) -> int:
        """Remove the SHIM worktrees of this repository left on this machine that no running
        execution holds; returns how many (``shim clean --worktrees``)."""
        removed = 0
        with self.locked():
            if not self.home.is_dir():
                return 0
            for run in [p for p in self.home.iterdir() if p.is_dir() and p.name != "clone.git"]:
                for task in [p for p in run.iterdir() if p.is_dir()]:
                    try:
                        lock = self._claim(run.name, task.name)
                    except WorktreeBusy:
                        continue
                    with lock:
                        git(self.common, "worktree", "remove", "--force", str(task), check=False)
                        shutil.rmtree(task, ignore_errors=True)
                    removed += 1
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
            done = run_git(
                path, *trees.identity(), "merge", "--no-ff", "--no-edit", "--quiet", "-m",
                f"shim: merge task {plan_id}", ref,
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


#: Set in an agent's environment (and so its tools'): the worktree it works in.
WORKTREE_MARK = "SHIM_WORKTREE"


def kill_leftovers(path: Path) -> int:
    """SIGKILL the processes an agent started in worktree ``path`` that still run (Linux
    ``/proc``): those whose environment carries ``SHIM_WORKTREE=<path>``.

    The task's lock is held, so no live execution owns the worktree: whatever still runs there
    was started by an agent whose worker died (the agent itself gets a parent-death signal, but
    the tools it started do not). A person's shell that merely looks inside is left alone.
    Returns how many were killed."""
    if not path.exists() or not os.path.isdir("/proc"):
        return 0
    mark = f"{WORKTREE_MARK}={path}".encode()
    killed = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as environ:
                marked = mark in environ.read().split(b"\0")
        except OSError:
            continue
        if marked:
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed
