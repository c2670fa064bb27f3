"""A load driver for many concurrent SSE streams: a few processes of raw asyncio HTTP/1.1 clients.

wrk cannot hold a stream open and time its first event, and one Python process
with an HTTP library runs out of CPU long before 1,000 streams. Each worker
process opens its share of the streams over a ramp, on plain asyncio sockets
(one write, then reads searched for byte markers: no parsing beyond that), and
reports per stream: time to the first marker (TTFT), time to the end marker,
or the error. The parent adds up the workers' own CPU time (``wait4``), the
driver's cost, so a reader can check the driver was not the limit. ::

    python -m bench.sse_driver http://127.0.0.1:8200/api/chat/stream --json '{"message": "slow: 20"}' -n 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# Markers for our SSE routes; the scripted LLM's own stream uses LLM_MARKERS.
STACK_MARKERS = {"first": "event: token", "end": "event: done", "error": "event: error"}
LLM_MARKERS = {"first": '"content": "t0"', "end": "[DONE]", "error": '"error"'}


@dataclass
class StreamsResult:
    """Many streams: how many ended well, TTFT and duration percentiles (ms), the driver's CPU."""

    streams: int
    ok: int
    errors: dict[str, int]
    max_open: int
    ttft_ms: dict[str, float]
    duration_ms: dict[str, float]
    driver_cpu_s: float
    wall_s: float
    error_details: list[str] = field(default_factory=list)
    # TTFT p50/p99/max of the streams opened in each tenth of the ramp: where the tail is.
    ttft_by_start: list[dict[str, float]] = field(default_factory=list)
    samples: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "samples"}


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    xs = sorted(values)

    def at(p: float) -> float:
        return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 2)

    return {"p50": at(50), "p90": at(90), "p99": at(99), "max": xs[-1], "mean": round(statistics.fmean(xs), 2)}


async def _worker(a: argparse.Namespace) -> list[dict[str, Any]]:
    u = urlsplit(a.url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    body = a.json.encode()
    request = (
        f"POST {u.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    first, end, error = (m.encode() for m in (a.first, a.end, a.error))
    keep = max(len(first), len(end), len(error))
    state = {"open": 0, "max_open": 0}

    async def one(delay: float) -> dict[str, Any]:
        await asyncio.sleep(delay)
        t0 = time.perf_counter()
        out: dict[str, Any] = {"ttft_ms": None, "start_s": delay}
        writer = None
        state["open"] += 1
        state["max_open"] = max(state["max_open"], state["open"])
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=2**20)
            writer.write(request)
            status_line = await reader.readline()
            parts = status_line.split()
            if len(parts) < 2 or parts[1] != b"200":
                out["error"] = f"status {parts[1].decode() if len(parts) > 1 else 'none'}"
                return out
            while await reader.readline() not in (b"\r\n", b""):
                pass
            tail = b""
            while True:
                data = await reader.read(65536)
                if not data:
                    out["error"] = "closed before the end"
                    return out
                window = tail + data
                if out["ttft_ms"] is None and first in window:
                    out["ttft_ms"] = (time.perf_counter() - t0) * 1000
                if error in window:
                    out["error"] = "error event"
                    detail = window[window.index(error) :] + await reader.read(512)
                    out["detail"] = detail[:300].decode(errors="replace")
                    return out
                if end in window:
                    out["duration_ms"] = (time.perf_counter() - t0) * 1000
                    return out
                tail = window[-keep:]
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            out["error"] = type(exc).__name__
            return out
        finally:
            state["open"] -= 1
            if writer is not None:
                writer.close()

    step = a.ramp_s / max(a.n, 1)
    tasks = [asyncio.create_task(asyncio.wait_for(one(i * step), a.timeout_s)) for i in range(a.n)]
    results: list[dict[str, Any]] = []
    for t in tasks:
        try:
            results.append(await t)
        except TimeoutError:
            results.append({"ttft_ms": None, "error": "timeout"})
    results.append({"max_open": state["max_open"]})
    return results


def run_streams(
    url: str,
    body: dict[str, Any],
    streams: int,
    ramp_s: float,
    markers: dict[str, str],
    processes: int = 2,
    timeout_s: float = 180.0,
) -> StreamsResult:
    """Open ``streams`` SSE streams over ``ramp_s`` seconds from ``processes`` worker processes."""
    started = time.monotonic()
    workers = []
    for w in range(processes):
        n = streams // processes + (1 if w < streams % processes else 0)
        cmd = [sys.executable, "-m", "bench.sse_driver", url, "--worker", f"-n={n}", f"--json={json.dumps(body)}",
               f"--ramp-s={ramp_s}", f"--timeout-s={timeout_s}", f"--first={markers['first']}",
               f"--end={markers['end']}", f"--error={markers['error']}"]  # fmt: skip
        workers.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    rows: list[dict[str, Any]] = []
    cpu = 0.0
    max_open = 0
    for proc in workers:
        out = proc.stdout.read() if proc.stdout else ""
        # NOTE: wait4 (not proc.wait): the worker's own CPU time is the driver's cost.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu += usage.ru_utime + usage.ru_stime
        if proc.returncode != 0:
            raise RuntimeError(f"SSE driver worker failed (exit {proc.returncode})")
        part = json.loads(out)
        max_open += part.pop()["max_open"]
        rows.extend(part)
    errors: dict[str, int] = {}
    for r in rows:
        if "error" in r:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    details = sorted({r["detail"] for r in rows if "detail" in r})[:5]
    ttfts = [r["ttft_ms"] for r in rows if r.get("ttft_ms") is not None]
    by_start = []
    for k in range(10):
        lo, hi = k * ramp_s / 10, (k + 1) * ramp_s / 10
        part = [r["ttft_ms"] for r in rows if r.get("ttft_ms") is not None and lo <= r.get("start_s", -1) < hi]
        if part:
            p = percentiles(part)
            by_start.append({"from_s": round(lo, 1), "p50": p["p50"], "p99": p["p99"], "max": round(p["max"], 1)})
    return StreamsResult(
        streams=len(rows),
        ok=sum(1 for r in rows if "error" not in r),
        errors=errors,
        max_open=max_open,
        ttft_ms=percentiles(ttfts),
        duration_ms=percentiles([r["duration_ms"] for r in rows if "duration_ms" in r]),
        driver_cpu_s=round(cpu, 2),
        wall_s=round(time.monotonic() - started, 1),
        error_details=details,
        ttft_by_start=by_start,
        samples=ttfts,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--json", required=True, help="the POST body")
    parser.add_argument("-n", type=int, default=100, help="streams (per worker with --worker)")
    parser.add_argument("--ramp-s", type=float, default=5.0, help="open the streams evenly over this long")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--timeout-s", type=float, default=180.0)
    parser.add_argument("--first", default=STACK_MARKERS["first"])
    parser.add_argument("--end", default=STACK_MARKERS["end"])
    parser.add_argument("--error", default=STACK_MARKERS["error"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.worker:
        import uvloop

        print(json.dumps(uvloop.run(_worker(a))))
        return
    markers = {"first": a.first, "end": a.end, "error": a.error}
    result = run_streams(a.url, json.loads(a.json), a.n, a.ramp_s, markers, a.processes, a.timeout_s)
    print(json.dumps(result.to_dict(), indent=2))


if __name__ == "__main__":
    main()
