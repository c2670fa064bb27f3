"""Goal 3, streams: 1,000 concurrent SSE streams held open, and the time to the first token.

One scripted LLM streams ``slow: <n>`` replies, one token a second; the SSE
driver (``bench.sse_driver``, worker processes on raw asyncio sockets) opens
1,000 ``POST /api/chat/stream`` streams over a ramp and holds them to the end.
The same load goes first straight to the LLM (its own time to first token, and
the driver's ceiling), then to the baseline, then to Serve. Goal: every Serve
stream ends well, and Serve's TTFT p99 is at most 100 ms over the LLM's own. ::

    python -m bench.streams                  # ~4 min
    python -m bench.streams --streams 200 --ramp-s 5 --tokens 10
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from bench import procs
from bench.sse_driver import LLM_MARKERS, STACK_MARKERS, run_streams
from bench.stacks import Stacks, add_common_args, replica_counts, verdict

TTFT_GOAL_MS = 100.0
# The streams' own cost: semantic memory off unless --agent turns it on (a turn's
# embedding and LanceDB write are goal 1's and 2's subject, not the streams').
DEFAULT_AGENT = '{"memory_top_k": 0, "remember_messages": false}'


def line(name: str, r: dict[str, Any]) -> str:
    t = r["ttft_ms"]
    return (
        f"{name:<9} {r['streams']:>7} {r['ok']:>5} {sum(r['errors'].values()):>6} {r['max_open']:>8} "
        f"{t.get('p50', float('nan')):>9.1f} {t.get('p99', float('nan')):>9.1f} {r['driver_cpu_s']:>9.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.set_defaults(agent=DEFAULT_AGENT)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--ramp-s", type=float, default=25.0, help="open the streams evenly over this long")
    parser.add_argument("--tokens", type=int, default=35, help="tokens per reply, one a second")
    parser.add_argument("--token-delay-s", type=float, default=1.0)
    parser.add_argument("--processes", type=int, default=2, help="driver worker processes")
    a = parser.parse_args()
    if a.tokens * a.token_delay_s <= a.ramp_s:
        parser.error("streams must outlast the ramp to be open all at once: raise --tokens or lower --ramp-s")
    body = {"message": f"slow: {a.tokens}"}
    results: dict[str, dict[str, Any]] = {}
    with Stacks("streams", a.niceness) as st:
        llm = st.llm(f"--slow-token-delay-s={a.token_delay_s}")
        direct = {"model": "scripted", "stream": True, "messages": [{"role": "user", "content": body["message"]}]}

        def measure(name: str, url: str, payload: dict[str, Any], markers: dict[str, str]) -> None:
            print(f"{name}: {a.streams} streams over {a.ramp_s:g} s ...", flush=True)
            before = procs.snapshot([os.getpid(), *procs.descendants(os.getpid())])
            r = run_streams(url, payload, a.streams, a.ramp_s, markers, a.processes)
            after = procs.snapshot([os.getpid(), *procs.descendants(os.getpid())])
            cpu = procs.cpu_by_role(before, after, st.roles)
            results[name] = r.to_dict()
            results[name]["cpu_s"] = {k: round(v, 1) for k, v in cpu.items() if v >= 0.1}
            results[name]["other_cores_busy"] = round(
                max(after.machine_busy_s - before.machine_busy_s - sum(cpu.values()) - r.driver_cpu_s, 0)
                / (after.wall_s - before.wall_s),
                2,
            )
            print(f"  {r.ok} ok, errors {r.errors}, max open {r.max_open}, TTFT {r.ttft_ms}", flush=True)
            print(f"  CPU s by role: {results[name]['cpu_s']}; other cores busy {results[name]['other_cores_busy']}")
            tail = ", ".join(f"{w['from_s']:g}s {w['p99']:.0f}" for w in r.ttft_by_start)
            print(f"  TTFT p99 (ms) of the streams opened from each tenth of the ramp: {tail}", flush=True)

        measure("LLM", f"{llm}/chat/completions", direct, LLM_MARKERS)
        base = st.baseline(llm, a.agent)
        measure("baseline", f"{base}/api/chat/stream", body, STACK_MARKERS)
        st.ray(a.serve_env)
        serve = st.serve_app(llm, json.loads(a.agent), a.deployments)
        measure("serve", f"{serve}/api/chat/stream", body, STACK_MARKERS)
        st.results["runs"] = results
        st.results["replicas"] = replica_counts()
        out = st.write()

    print(f"\n{'target':<9} {'streams':>7} {'ok':>5} {'errors':>6} {'max open':>8} {'TTFT p50':>9} {'TTFT p99':>9} "
          f"{'driver s':>9}")  # fmt: skip
    for name, r in results.items():
        print(line(name, r))
    llm_p99 = results["LLM"]["ttft_ms"]["p99"]
    for name in ("baseline", "serve"):
        r = results[name]
        over = r["ttft_ms"].get("p99", float("inf")) - llm_p99
        ok = r["ok"] == a.streams and over <= TTFT_GOAL_MS
        print(
            f"goal 3 ({name}): {r['ok']}/{a.streams} streams ended well, TTFT p99 {over:+.1f} ms over the LLM's own "
            f"(goal: all, ≤ {TTFT_GOAL_MS:g}): {verdict(ok)}"
        )
    print(f"replicas at the end: {st.results['replicas']}\nwrote {out}")


if __name__ == "__main__":
    main()
