"""
Prometheus metrics across several uvicorn worker processes.

prometheus_client keeps each process' metrics in memory; with `PROMETHEUS_MULTIPROC_DIR` set before it is imported it
writes them to files in that directory instead, and `/metrics` (in any worker) adds up every worker's files. The
workers of one `uvicorn --workers N` share a directory named after their parent process (the uvicorn supervisor) and
its start time, so each server start begins from zero and a later start never reads an earlier one's files.

A single process (`letta-hayhooks serve`, uvicorn without `--workers`) keeps its metrics in memory. A directory set
by the operator is used as it is (e.g. under gunicorn, whose workers are not `multiprocessing` children).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PREFIX = "letta-hayhooks-metrics-"
_DIR_NAME = re.compile(re.escape(_PREFIX) + r"(\d+)-(\d+)$")
# live gauges of a worker that died must not be added up any more (prometheus_client's mark_process_dead)
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db$")


def _start_time(pid: int) -> int:
    """When process `pid` started (clock ticks since boot; 0 where /proc is not available)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare(environ: MutableMapping[str, str] | None = None) -> str | None:
    """
    Point prometheus_client at the shared directory when this process is a worker of a multi-process server; call it
    before prometheus_client is imported. Returns the directory, or None for a single process.
    """
    environ = os.environ if environ is None else environ
    if environ.get(ENV):
        return environ[ENV]
    if multiprocessing.parent_process() is None:
        return None
    parent = os.getppid()
    directory = Path(tempfile.gettempdir()) / f"{_PREFIX}{parent}-{_start_time(parent)}"
    directory.mkdir(mode=0o700, exist_ok=True)
    _forget_dead_workers(directory)
    _sweep_earlier_starts(directory)
    environ[ENV] = str(directory)
    return str(directory)


def _forget_dead_workers(directory: Path) -> None:
    # a restarted worker: the one it replaces still has its in-flight and queue gauges on disk
    for path in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.search(path.name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                path.unlink()


def _sweep_earlier_starts(current: Path) -> None:
    for path in current.parent.glob(_PREFIX + "*"):
        match = _DIR_NAME.match(path.name)
        if path == current or match is None:
            continue
        pid, started = int(match.group(1)), int(match.group(2))
        if not _alive(pid) or _start_time(pid) != started:
            shutil.rmtree(path, ignore_errors=True)
