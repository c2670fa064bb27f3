"""Clean up after an ``agentserve run`` that died without stopping (SIGKILL, the OOM killer).

NOTE: why. Ray's head processes share the CLI's fate and its workers stop within
seconds, but Serve's HAProxy is a child of a worker and outlived them in one of five
trials here, still holding the app's port; Ray's dashboard and runtime-env agents
lingered 60-75 s, the first holding the metrics port. So ``agentserve run`` starts
this guard first: a small process in a session of its own (a Ctrl-C or a kill of the
CLI's process group does not reach it) that waits on a pipe from the CLI. The CLI
tells it the processes it runs (``watch``: Ray's, once started, and the app's, once
ready) and writes ``STOPPED`` once its own stop is done. An end of the pipe without
it means the CLI died: the guard SIGKILLs the processes it was told of, and every
process that carries the run's id in its environment (``RUN_ID_ENV``: the CLI sets it
before ``ray.init``, so the replicas and HAProxy started later inherit it; Ray's agents
overwrite theirs with their process titles, hence both), then removes the run's
HAProxy directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterable

from serve_app.procfs import Proc, alive, environ, pids

RUN_ID_ENV = "AGENTSERVE_RUN_ID"
STOPPED = b"stopped\n"


def processes_with(key: str, value: str) -> list[int]:
    """Processes (other than this one) whose environment has ``key=value``: those this user may read."""
    needle = f"{key}={value}".encode()
    return [pid for pid in pids() if pid != os.getpid() and needle in environ(pid)]


def sweep(run_id: str, state_dir: str, watched: Iterable[Proc] = ()) -> list[int]:
    """SIGKILL what is left of run ``run_id`` (``watched`` and its environment's) and remove ``state_dir``.

    Returns the pids it killed.
    """
    pids = {pid for pid, start in watched if alive((pid, start))} | set(processes_with(RUN_ID_ENV, run_id))
    pids.discard(os.getpid())  # the CLI's descendants include this guard
    killed = []
    for pid in sorted(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        killed.append(pid)
    shutil.rmtree(state_dir, ignore_errors=True)
    return killed


class RunGuard:
    """The guard of one ``agentserve run``: made before Ray starts, released after Ray stopped.

    Puts a new run id into this process's environment, for Ray's processes to inherit.
    """

    def __init__(self, state_dir: str) -> None:
        self.run_id = uuid.uuid4().hex
        os.environ[RUN_ID_ENV] = self.run_id
        env = {k: v for k, v in os.environ.items() if k != RUN_ID_ENV}  # the guard must not sweep itself
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "serve_app.run_guard", self.run_id, state_dir],
            stdin=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def watch(self, procs: Iterable[Proc]) -> None:
        """Tell the guard of processes of the run (``serve_app.procfs.descendants``)."""
        assert self._proc.stdin is not None
        lines = "".join(f"{pid} {start}\n" for pid, start in procs)
        try:
            self._proc.stdin.write(lines.encode())
            self._proc.stdin.flush()
        except OSError:  # the guard is gone: nothing more to tell it
            pass

    def release(self, timeout_s: float = 5.0) -> None:
        """The run stopped by itself: the guard exits without sweeping."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(STOPPED)
            self._proc.stdin.close()
        except OSError:  # the guard is gone: nothing to release
            pass
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def main(argv: list[str]) -> int:
    run_id, state_dir = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watched: set[Proc] = set()
    for line in sys.stdin.buffer:  # until the CLI closes the pipe, or dies
        if line == STOPPED:
            return 0
        with contextlib.suppress(ValueError):  # a line cut short by the CLI's death
            pid, start = line.split()
            watched.add((int(pid), int(start)))
    killed = sweep(run_id, state_dir, watched)
    with contextlib.suppress(OSError):  # the CLI's terminal may be gone with it
        print(f"agentserve run ended without stopping: killed {len(killed)} of its processes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
