"""Goal 2, throughput: turns/s at 64 concurrent sessions, Serve vs the baseline, interleaved.

Two workloads against one scripted LLM, both stacks side by side, rounds
alternating between the stacks:

- ``slow``: a chat turn whose one LLM call takes 200 ms, streaming 20 tokens
  10 ms apart (``slow: 20``). Goal: Serve ≥ 0.9 x the baseline's turns/s.
- ``zero``: the goal-1 tool turn (``calc: 17*23``) with a zero-latency LLM.
  Goal: Serve ≥ 0.5 x the baseline's turns/s.

Each of the 64 wrk connections is a client sending turns back to back (each
turn a new session). Semantic memory is off unless ``--agent`` turns it on: every
turn comes from one user, whose LanceDB table would grow by a row a turn through
the run and make the later workload pay for the earlier one's rows. ``--users N``
spreads the turns over N users (the Agent's user-affinity routing matters only
with several Agent replicas and several users). ::

    python -m bench.throughput               # ~3 min
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench.load import require_wrk
from bench.stacks import (
    TOOL_EXPECT,
    TOOL_TURN,
    Stacks,
    add_common_args,
    check_turn,
    driver_ceiling,
    measured,
    print_searches,
    ratio,
    replica_counts,
    searches_by_stack,
    verdict,
    warm_up,
)

MEMORY_OFF = '{"memory_top_k": 0, "remember_messages": false}'
SLOW_TURN = {"message": "slow: 20"}
SLOW_EXPECT = "t19"
WORKLOADS: dict[str, tuple[dict[str, str], str, list[str], float]] = {
    # name: (body, expected text, tool calls, goal ratio)
    "slow": (SLOW_TURN, SLOW_EXPECT, [], 0.9),
    "zero": (TOOL_TURN, TOOL_EXPECT, ["calculator"], 0.5),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.set_defaults(agent=MEMORY_OFF)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--users",
        type=int,
        default=1,
        help="turns take turns among this many users (each its own memory table); the goal's workload is 1",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10, help="per round, stack and workload")
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=30,
        help="load before the first workload's rounds, each stack, at least; Serve's goes on until its "
        "autoscaler has settled (every deployment HEALTHY, no replica count changed for 10 s; at most 120 s: "
        "look-back 15 s, upscale delay 5 s, a replica's start). Later workloads: at least 4 s",
    )
    a = parser.parse_args()
    require_wrk()
    c = a.concurrency
    summary: dict[str, dict[str, Any]] = {}
    with Stacks("throughput", a.niceness) as st:
        llm = st.llm("--slow-token-delay-s=0.01")
        base = st.baseline(llm, a.agent)
        st.results["driver_ceiling"] = driver_ceiling(f"{base}/live", c)
        st.ray(a.serve_env)
        serve = st.serve_app(llm, json.loads(a.agent), a.deployments)
        urls = {"baseline": base, "serve": serve}
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for i, (wl, (body, expect, tools, _)) in enumerate(WORKLOADS.items()):
            runs[wl] = {name: [] for name in urls}
            warmed: dict[str, float] = {}
            for name, url in urls.items():
                check_turn(url, body, expect, tools)
                warmed[name] = warm_up(
                    f"{url}/api/chat",
                    c,
                    a.warmup_s if i == 0 else 4,
                    json.dumps(body),
                    expect,
                    a.users,
                    serve=name == "serve",
                )
            st.results.setdefault("warm_up_s", {})[wl] = warmed
            print(
                f"  {wl}: warm-up {warmed['baseline']:g} s (baseline), {warmed['serve']:g} s (Serve); "
                f"Serve's replicas after it: {replica_counts()}",
                flush=True,
            )
            for r in range(a.rounds):
                order = list(urls) if r % 2 == 0 else list(reversed(urls))
                for name in order:
                    m = measured(f"{urls[name]}/api/chat", c, a.seconds, st.roles, body, expect, a.users)
                    runs[wl][name].append(m)
                    x = m["load"]
                    print(
                        f"  {wl} round {r + 1} {name:<8} {x['rps']:7.1f} turns/s, p50 {x['p50_ms']:7.1f} ms, "
                        f"p99 {x['p99_ms']:7.1f} ms, errors {x['errors'] + x['mismatched']} {x['error_kinds'] or ''}, "
                        f"other cores busy {m['other_cores_busy']}, waited {m['settled_s']} s for quiet",
                        flush=True,
                    )
            summary[wl] = {
                name: {
                    "turns": sum(m["load"]["requests"] for m in ms),
                    "errors": sum(m["load"]["errors"] + m["load"]["mismatched"] for m in ms),
                    "turns_per_s": round(
                        sum(m["load"]["requests"] for m in ms) / sum(m["load"]["duration_s"] for m in ms), 1
                    ),
                    "p50_ms": max(m["load"]["p50_ms"] for m in ms),
                    "p99_ms": max(m["load"]["p99_ms"] for m in ms),
                    "cpu_ms_per_turn": ms[-1]["cpu_ms_per_turn"],
                }
                for name, ms in runs[wl].items()
            }
        st.results["rounds"] = runs
        st.results["summary"] = summary
        serve_turns = sum(m["load"]["requests"] for wl in runs for m in runs[wl]["serve"])
        searched = searches_by_stack(base, serve_turns)  # with --agent '{}' (semantic memory on)
        st.results["vector_searches"] = searched
        st.results["replicas"] = replica_counts()
        out = st.write()

    print(f"\n{'workload':<8} {'stack':<9} {'turns':>6} {'errors':>6} {'turns/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for wl, stacks in summary.items():
        for name, x in stacks.items():
            print(
                f"{wl:<8} {name:<9} {x['turns']:>6} {x['errors']:>6} {x['turns_per_s']:>8} "
                f"{x['p50_ms']:>8.1f} {x['p99_ms']:>8.1f}"
            )
    for wl, stacks in summary.items():
        goal = WORKLOADS[wl][3]
        r = ratio(stacks["serve"]["turns_per_s"], stacks["baseline"]["turns_per_s"])
        print(f"goal 2 ({wl}): Serve / baseline turns/s = {r} (goal ≥ {goal}): {verdict(r >= goal)}")
        for name, x in stacks.items():
            print(f"  {name} CPU ms/turn: " + ", ".join(f"{k} {v:g}" for k, v in x["cpu_ms_per_turn"].items()))
    print_searches(searched)
    print(f"replicas at the end: {st.results['replicas']}\nwrote {out}")


if __name__ == "__main__":
    main()
