"""Where a turn's time goes: each port call of the goal-1 turn, timed in one process.

Builds the baseline's agent (``bench.baseline.build_agent``: the stores, the
sentence model and the tools ``AgentDeployment`` builds, in-process), starts the
scripted LLM in a thread, wraps every port call a turn makes (embedding, vector
search and write, session, history, append, each LLM call, the tool) with a
timer, and runs ``--turns`` turns one after the other. Prints the p50, mean,
p99 and max of each, over the turns after the first ``--warmup``. The vector write runs in
the background after the reply (``SemanticMemory.remember_later``), so it is not
part of TURN, and its time includes waiting for the loop while the next turn runs::

    python -m bench.turn_phases                  # ~30 s
    python -m bench.turn_phases --message 'hello'

Not a goal: no Serve and no HTTP, so it shows what the agent core itself costs
(the same in both stacks), and what a change to a store or the LLM client saves.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

from agent.dto import ChatRequest
from bench.baseline import build_agent
from serve_app.args import AgentServeArgs
from serve_app.scripted_llm import ScriptedLLMServer
from serve_app.settings import ProcessSettings, Settings

Timings = defaultdict[str, list[float]]


def time_calls(obj: Any, method: str, label: str, timings: Timings) -> None:
    """Replace ``obj.method`` (a coroutine function) with one that records its duration in ms."""
    inner: Callable[..., Any] = getattr(obj, method)

    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await inner(*args, **kwargs)
        finally:
            timings[label].append((time.perf_counter() - started) * 1000)

    setattr(obj, method, timed)


def time_stream(obj: Any, method: str, label: str, timings: Timings) -> None:
    """As ``time_calls``, for an async generator method: from the call to its last item."""
    inner: Callable[..., AsyncIterator[Any]] = getattr(obj, method)

    async def timed(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        started = time.perf_counter()
        async for item in inner(*args, **kwargs):
            yield item
        timings[label].append((time.perf_counter() - started) * 1000)

    setattr(obj, method, timed)


async def run(turns: int, warmup: int, message: str) -> Timings:
    timings: Timings = defaultdict(list)
    with ScriptedLLMServer() as llm:
        agent = build_agent(llm.base_url, AgentServeArgs.model_validate({}), Settings())
        assert agent.memory is not None
        await agent.memory.store.setup()  # type: ignore[attr-defined]
        time_calls(agent.memory.embedder, "embed", "embed", timings)
        time_calls(agent.memory.store, "search", "vector search", timings)
        time_calls(agent.memory.store, "add", "vector add (remember)", timings)
        time_calls(agent.store, "get_or_create_session", "session", timings)
        time_calls(agent.store, "history", "history", timings)
        time_calls(agent.store, "append", "append (store the turn)", timings)
        time_stream(agent.llm, "stream_chat", "LLM call", timings)
        time_calls(agent.tools, "execute", "tool", timings)
        gc.collect()  # as the baseline and every Serve replica after start-up
        gc.freeze()
        for _ in range(turns):
            started = time.perf_counter()
            await agent.chat(ChatRequest(message=message, user_id="bench"))
            timings["TURN"].append((time.perf_counter() - started) * 1000)
    calls_per_turn = {k: len(v) // turns for k, v in timings.items()}
    return defaultdict(list, {k: v[warmup * calls_per_turn[k] :] for k, v in timings.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=30, help="turns left out of the figures")
    parser.add_argument("--message", default="calc: 17*23", help="the turn (default: goal 1's tool turn)")
    a = parser.parse_args()
    # As the baseline runs: its own data directory, one OpenMP thread, the replicas' collector thresholds.
    data = tempfile.mkdtemp(prefix="agentserve-bench-phases-")
    os.environ["AGENTSERVE_DATA_DIR"] = data
    os.environ["OMP_NUM_THREADS"] = "1"
    ProcessSettings().apply()
    try:
        timings = asyncio.run(run(a.turns, a.warmup, a.message))
    finally:
        shutil.rmtree(data, ignore_errors=True)
    print(f"{'call':<26} {'n':>5} {'p50 ms':>8} {'mean ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, values in timings.items():
        p99 = statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]
        print(
            f"{label:<26} {len(values):>5} {statistics.median(values):>8.2f} {statistics.mean(values):>8.2f} "
            f"{p99:>8.2f} {max(values):>8.2f}"
        )


if __name__ == "__main__":
    main()
