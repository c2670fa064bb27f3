"""The `agentserve run`s live on this machine, so `agentserve status` reports on the one meant.

Each run records its Ray address (and dashboard, if it started one) in ``run.json`` in its
own state directory (``/tmp/ashp-*``, mode 0700, removed when the run stops and by the run's
guard when it is killed). Without it, ``status`` asked Ray for "the newest local cluster",
which is a ``ray start`` cluster of the user's own whenever one runs beside the app.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from serve_app.procfs import alive, proc_of

RUN_FILE = "run.json"
STATE_PREFIX = "ashp-"  # the run's state directory (HAProxy's files, this record) ...
STATE_ROOT = "/tmp"  # noqa: S108 ... made with mkdtemp (0700) here: HAProxy refuses long socket paths


@dataclass(frozen=True)
class LocalRun:
    """One `agentserve run`: its process (pid and start time, so a reused pid is not it)."""

    pid: int
    started: int
    ray_address: str
    dashboard: str | None
    port: int


def record(state_dir: str, ray_address: str, dashboard: str | None, port: int) -> None:
    """Record this process as a run with ``ray_address`` (written whole, never half)."""
    me = proc_of(os.getpid())
    assert me is not None
    run = LocalRun(*me, ray_address, dashboard, port)
    path = Path(state_dir, RUN_FILE)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(run)))
    partial.replace(path)


def live_runs(tmp_dir: str = STATE_ROOT) -> list[LocalRun]:
    """The recorded runs whose process still runs, oldest first; others' and stale records are skipped."""
    runs = []
    for path in Path(tmp_dir).glob(f"{STATE_PREFIX}*/{RUN_FILE}"):
        try:
            run = LocalRun(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):  # unreadable (another user's), half-gone, or not ours
            continue
        if alive((run.pid, run.started)):
            runs.append(run)
    return sorted(runs, key=lambda r: r.started)
