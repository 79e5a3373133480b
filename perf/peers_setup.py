"""Create the peer environments of ``peers.py``: one virtualenv per Python peer, one npm folder.

Every peer lives outside SHIM's own environment, under ``perf/.peers/`` (gitignored):
``perf/.peers/<name>/`` is a virtualenv holding that peer's pinned release (with whatever
dependencies pip picks for it, e.g. arq's ``redis<6`` and ``hiredis``), and ``perf/.peers/node/``
holds ``node_modules/bullmq``. Setting up again skips a peer whose pins are already installed.

Run: ``python perf/peers_setup.py [--only huey,arq] [--force]`` (also ``python perf/peers.py
--setup``). Needs ``python3 -m venv`` and, for BullMQ on Node.js, ``node`` and ``npm``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent / ".peers"
NODE_DIR = PEERS_DIR / "node"

#: Python peers: venv name -> pip requirements (the peer's current release, 2026-11).
PYTHON_PINS: dict[str, list[str]] = {
    "huey": ["huey==3.5.4", "redis"],
    "dramatiq": ["dramatiq[redis]==2.2.1"],
    "taskiq": ["taskiq==0.13.0", "taskiq-redis==1.2.4"],
    "saq": ["saq[redis]==0.26.4", "typing_extensions"],
    "bullmq": ["bullmq==3.4.4"],
    "celery": ["celery[redis]==5.7.0"],
    "rq": ["rq==3.0.0"],
    "arq": ["arq==0.28.0"],
}
#: npm packages installed into ``perf/.peers/node``.
NODE_PINS = ["bullmq@6.7.0", "ioredis@6.0.0"]
_STAMP = "shim-peers-pins.json"


def venv_python(name: str) -> Path:
    """The interpreter of peer ``name``'s virtualenv (it may not exist yet)."""
    return PEERS_DIR / name / "bin" / "python"


def node_modules() -> Path:
    """The ``node_modules`` folder holding BullMQ for Node.js."""
    return NODE_DIR / "node_modules"


def _run(cmd: Sequence[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-800:]
        raise RuntimeError(f"{cmd[0]} exited with {done.returncode}:\n{tail}")


def setup_python(name: str, force: bool) -> str:
    """Create (or refresh) the virtualenv of one Python peer; returns a status line."""
    pins = PYTHON_PINS[name]
    home = PEERS_DIR / name
    stamp = home / _STAMP
    if not force and stamp.exists() and json.loads(stamp.read_text()) == pins:
        return "up to date"
    if home.exists():
        shutil.rmtree(home)
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    log = PEERS_DIR / f"{name}.log"
    log.write_text("")
    _run([sys.executable, "-m", "venv", str(home)], log)
    _run([str(venv_python(name)), "-m", "pip", "install", "-q", *pins], log)
    stamp.write_text(json.dumps(pins))
    return "installed " + " ".join(pins)


def setup_node(force: bool) -> str:
    """``npm install`` BullMQ into ``perf/.peers/node``; returns a status line."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("node / npm not found on PATH")
    stamp = NODE_DIR / _STAMP
    if not force and stamp.exists() and json.loads(stamp.read_text()) == NODE_PINS:
        return "up to date"
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    (NODE_DIR / "package.json").write_text('{"name": "shim-perf-peers", "private": true}\n')
    log = PEERS_DIR / "node.log"
    log.write_text("")
    _run([npm, "install", "--prefix", str(NODE_DIR), "--no-fund", "--no-audit", *NODE_PINS], log)
    stamp.write_text(json.dumps(NODE_PINS))
    return "installed " + " ".join(NODE_PINS)


def setup(only: Sequence[str] = (), force: bool = False) -> int:
    """Set up the selected environments (all by default); returns 1 if any failed."""
    names = list(only) or [*PYTHON_PINS, "node"]
    failed = 0
    for name in names:
        try:
            status = setup_node(force) if name == "node" else setup_python(name, force)
        except (RuntimeError, OSError) as exc:
            status, failed = f"FAILED: {exc}", 1
        print(f"{name:<10} {status}", flush=True)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default="", help="comma-separated: " + ", ".join([*PYTHON_PINS, "node"])
    )
    parser.add_argument("--force", action="store_true", help="reinstall even if up to date")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - {*PYTHON_PINS, "node"})
    if unknown:
        parser.error(f"unknown environment(s): {', '.join(unknown)}")
    return setup(only, args.force)


if __name__ == "__main__":
    sys.exit(main())
