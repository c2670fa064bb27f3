"""A load driver that stays out of the way: ``wrk`` (C, epoll) with a small Lua script.

Python clients on these 2 cores become the bottleneck above ~200 req/s (httpx);
wrk costs a few microseconds of CPU a request, and this module measures that
cost for every run (``driver_cpu_us_per_request``) so a reader can check it.

Closed loop: each of ``connections`` keep-alive connections sends its next
request when the previous answer arrives. Concurrency 1 is therefore a
sequential run. Latency percentiles come from wrk's own histogram (µs).

Run it alone::

    python -m bench.load http://127.0.0.1:8200/live -c 32 -d 5
    python -m bench.load http://127.0.0.1:8200/api/chat -c 1 -d 5 \\
        --json '{"message": "calc: 17*23"}' --expect 'The result is 391'
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

WRK_INSTALL_HINT = "install it with `apt-get install -y wrk` (Debian/Ubuntu), or pass --install-wrk as root"

LUA = r"""
wrk.method = "%(method)s"
%(body)s
%(bodies)s
wrk.headers["Content-Type"] = "application/json"
local expect = %(expect)s
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) mismatched = 0 end
%(response)s
function done(summary, latency, requests)
  local m = 0
  for _, t in ipairs(threads) do m = m + (t:get("mismatched") or 0) end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,'
    .. '"timeout":%%d,"mismatched":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d,"mean_us":%%f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, m,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""

# Each request takes the next body of the list (per wrk thread), e.g. one per user.
BODIES = """
local bodies = {%s}
local sent = 0
function request()
  sent = sent + 1
  return wrk.format(nil, nil, nil, bodies[(sent %% #bodies) + 1])
end
"""

RESPONSE_CHECK = """
function response(status, headers, body)
  if status < 300 and not string.find(body, expect, 1, true) then mismatched = mismatched + 1 end
end
"""


@dataclass
class LoadResult:
    """One closed-loop run: counts, throughput, latency (ms) and what the driver cost."""

    url: str
    connections: int
    duration_s: float
    requests: int
    errors: int  # connect/read/write/timeout errors plus non-2xx answers
    error_kinds: dict[str, int]  # the same, by kind (wrk's counters; "status" is non-2xx)
    mismatched: int  # 2xx answers without the expected text
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    driver_cpu_s: float

    @property
    def driver_cpu_us_per_request(self) -> float:
        return self.driver_cpu_s / max(self.requests, 1) * 1e6

    def to_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "driver_cpu_us_per_request": round(self.driver_cpu_us_per_request, 1)}

    def line(self) -> str:
        return (
            f"{self.requests} requests, {self.errors} errors, {self.mismatched} wrong answers, "
            f"{self.rps:.1f} req/s, p50 {self.p50_ms:.2f} ms, p90 {self.p90_ms:.2f} ms, "
            f"p99 {self.p99_ms:.2f} ms (wrk: {self.driver_cpu_us_per_request:.0f} µs CPU/request)"
        )


def require_wrk(install: bool = False) -> str:
    """The path of ``wrk``; installs it with apt-get when asked, else fails with a clear message."""
    path = shutil.which("wrk")
    if path is None and install:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise SystemExit("--install-wrk needs root and apt-get")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True)
        path = shutil.which("wrk")
    if path is None:
        raise SystemExit(f"wrk is not installed: {WRK_INSTALL_HINT}")
    return path


def user_bodies(body: str | None, users: int) -> list[str]:
    """``body`` (a JSON object) once per user, each with its own ``user_id``."""
    if body is None:
        raise ValueError("users > 1 needs a JSON body")
    parsed = json.loads(body)
    return [json.dumps({**parsed, "user_id": f"bench-user-{i}"}) for i in range(users)]


def _lua_string(text: str) -> str:
    if "]==]" in text:
        raise ValueError("text must not contain ']==]'")
    return f"[==[{text}]==]"


def run_wrk(
    url: str,
    connections: int,
    duration_s: float,
    body: str | None = None,
    expect: str | None = None,
    timeout_s: float = 30.0,
    users: int = 1,
) -> LoadResult:
    """Drive ``url`` with ``connections`` concurrent clients for ``duration_s`` seconds.

    Args:
        url: The endpoint; GET without ``body``, POST (JSON) with it.
        connections: Concurrent keep-alive connections (the concurrency).
        duration_s: How long to run.
        body: A JSON request body.
        expect: Text every 2xx answer must contain; others count as ``mismatched``.
        timeout_s: wrk drops answers slower than this from the histogram and counts
            them as errors, so it is far above any latency we expect.
        users: With more than 1, requests take turns among ``body`` with ``"user_id":
            "bench-user-<i>"`` added, i from 0 to ``users - 1``.
    """
    wrk = require_wrk()
    threads = max(1, min(connections, os.cpu_count() or 1))
    script = LUA % {
        "method": "POST" if body is not None else "GET",
        "body": f"wrk.body = {_lua_string(body)}" if body is not None else "",
        "bodies": BODIES % ", ".join(_lua_string(b) for b in user_bodies(body, users)) if users > 1 else "",
        "expect": _lua_string(expect) if expect else "nil",
        "response": RESPONSE_CHECK if expect else "",
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", f"--timeout={timeout_s:g}s"]
    proc = subprocess.Popen([*cmd, "-s", f.name, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = proc.stdout.read() if proc.stdout else ""
        # NOTE: wait4 (not proc.wait) so we get wrk's own CPU time, whatever else we have spawned.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        os.unlink(f.name)
    marker = [line for line in out.splitlines() if line.startswith("WRK_JSON ")]
    if proc.returncode != 0 or not marker:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{out}")
    r = json.loads(marker[-1].removeprefix("WRK_JSON "))
    seconds = r["duration_us"] / 1e6
    error_kinds = {k: r[k] for k in ("connect", "read", "write", "status", "timeout") if r[k]}
    return LoadResult(
        url=url,
        connections=connections,
        duration_s=round(seconds, 3),
        requests=r["requests"],
        errors=sum(error_kinds.values()),
        error_kinds=error_kinds,
        mismatched=r["mismatched"],
        rps=r["requests"] / seconds,
        p50_ms=r["p50_us"] / 1000,
        p90_ms=r["p90_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        mean_ms=r["mean_us"] / 1000,
        driver_cpu_s=usage.ru_utime + usage.ru_stime,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("-c", "--connections", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--json", dest="body", help="POST this JSON body")
    parser.add_argument("--expect", help="text every successful answer must contain")
    parser.add_argument("--install-wrk", action="store_true", help="apt-get install wrk if it is missing")
    a = parser.parse_args()
    require_wrk(install=a.install_wrk)
    result = run_wrk(a.url, a.connections, a.duration, a.body, a.expect)
    print(result.line())
    sys.exit(1 if result.errors or result.mismatched else 0)


if __name__ == "__main__":
    main()
