"""One hop, alone: Serve handle calls between two replicas vs a bare gRPC call between two processes.

Goal 1's gap is three handle hops in series (Ingress -> Agent, Agent -> Embedding,
Agent -> ToolExecutor) plus HAProxy. This measures one hop on its own, at
concurrency 1, against the floor of the transport that Serve's throughput-optimised
mode uses for it: ``grpc.aio`` unary calls between two processes on uvloop,
carrying the same pickled DTOs (a ``ToolInvocation`` in, a ``ToolResult`` out).

- **serve**: a caller replica awaits ``handle.execute.remote(invocation)`` on a
  callee replica that only answers, back to back (the Serve switches of
  ``agentserve run``, ``configs/local.yaml``'s logging, one replica each).
- **tool**: the same caller, calling the ToolExecutor deployment as the app
  configures it (its registry runs the calculator: ~0.15 ms of the call).
- **grpc**: a client process awaits a unary call on a server process.

Rounds alternate. ``serve - grpc`` is what Serve's Python adds around the
transport (router, request metadata, the replica's request path, metrics);
``grpc`` is what any Python RPC of this kind costs on this host. ``--gap-ms``
idles before each call (not timed), as the replicas of a turn do between
their parts: on this host a hop after idle costs about twice a hop in a busy
loop (docs/benchmarks.md, "Ninth session"). ::

    python -m bench.hop                      # ~1 min
    python -m bench.hop --gap-ms 20          # each call after 20 ms idle
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import statistics
import subprocess
import sys
import time
from typing import Any

from agent.dto import ToolInvocation, ToolResult
from bench.sse_driver import percentiles
from bench.stacks import RAY_WORKER_NICENESS, Stacks, free_port, local_logging_config, ratio

INVOCATION = ToolInvocation(name="calculator", arguments={"expression": "17*23"}, call_id="call_1")
WARMUP_CALLS = 50


def _answer(invocation: ToolInvocation) -> ToolResult:
    return ToolResult(call_id=invocation.call_id, name=invocation.name, content="391")


async def _timed_calls(call: Any, calls: int, gap_s: float) -> list[float]:
    """``calls`` awaited ``call()`` back to back, each after ``gap_s`` idle; the first ones untimed."""
    latencies = []
    for i in range(WARMUP_CALLS + calls):
        if gap_s:
            await asyncio.sleep(gap_s)
        t0 = time.perf_counter()
        result = await call()
        if i >= WARMUP_CALLS:
            latencies.append(time.perf_counter() - t0)
        if result.call_id != INVOCATION.call_id:
            raise RuntimeError(f"wrong answer: {result!r}")
    return latencies


# --- the bare gRPC pair, each in its own process -------------------------------------


async def _grpc_server(port: int) -> None:
    import grpc

    async def execute(request: bytes, context: Any) -> bytes:
        return pickle.dumps(_answer(pickle.loads(request)))

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(execute)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Hop", {"Execute": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def _grpc_client(port: int, calls: int, gap_s: float) -> None:
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = channel.unary_unary("/bench.Hop/Execute")

        async def call() -> ToolResult:
            result: ToolResult = pickle.loads(await method(pickle.dumps(INVOCATION)))
            return result

        print(json.dumps(await _timed_calls(call, calls, gap_s)), flush=True)


def _grpc_round(port: int, a: argparse.Namespace) -> list[float]:
    cmd = ["nice", f"-n{a.niceness}", sys.executable, "-m", "bench.hop"]
    args = [f"--grpc-client={port}", f"--calls={a.calls}", f"--gap-ms={a.gap_ms}"]
    out = subprocess.run([*cmd, *args], capture_output=True, check=True)
    latencies: list[float] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return latencies


# --- the Serve pairs ------------------------------------------------------------------


class HopCallee:
    async def execute(self, invocation: ToolInvocation) -> ToolResult:
        return _answer(invocation)


class HopCaller:
    def __init__(self, callee: Any) -> None:
        self.execute = callee.execute

    async def run(self, calls: int, gap_s: float) -> list[float]:
        return await _timed_calls(lambda: self.execute.remote(INVOCATION), calls, gap_s)


async def _serve_round(caller: Any, calls: int, gap_s: float) -> list[float]:
    latencies: list[float] = await caller.run.remote(calls, gap_s)
    return latencies


def _deploy_pairs() -> dict[str, Any]:
    """Two apps: caller -> echo callee, caller -> the ToolExecutor as configured; their callers' handles."""
    from ray import serve

    from deployments.tool_executor import ToolExecutorDeployment
    from serve_app.builder import DEPLOYMENT_OPTIONS

    logging_config = local_logging_config()
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()}, logging_config=logging_config)
    opts = {"ray_actor_options": {"num_cpus": 0.1}, "max_ongoing_requests": 128}
    tool_opts = {**DEPLOYMENT_OPTIONS["ToolExecutor"], "autoscaling_config": None, "num_replicas": 1}
    callees = {
        "serve": serve.deployment(HopCallee, name="HopCallee", **opts).bind(),
        "tool": serve.deployment(ToolExecutorDeployment, name="ToolExecutor", **tool_opts).bind([]),
    }
    return {
        name: serve.run(
            serve.deployment(HopCaller, name="HopCaller", **opts).bind(callee),
            name=f"hop-{name}",
            route_prefix=None,
            logging_config=logging_config,
        )
        for name, callee in callees.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000, help="per round and stack")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--gap-ms", type=float, default=0, help="idle time before each call (not timed)")
    parser.add_argument("--serve-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--niceness", type=int, default=RAY_WORKER_NICENESS, help="of Ray's workers and the gRPC pair")
    parser.add_argument("--grpc-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--grpc-client", type=int, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.grpc_server or a.grpc_client:
        import uvloop

        uvloop.install()  # as Ray runs its replicas
        if a.grpc_server:
            asyncio.run(_grpc_server(a.grpc_server))
        else:
            asyncio.run(_grpc_client(a.grpc_client, a.calls, a.gap_ms / 1000))
        return

    with Stacks("hop", a.niceness) as st:
        port = free_port()
        server = st.start("gRPC server", "bench.hop", f"--grpc-server={port}", nice=a.niceness)
        # NOTE: Serve is imported only after this: a handle carries its transport (gRPC
        # or Ray's actor calls) into the replica it is passed to, as decided by the
        # switches in the environment of the process that first imported Serve.
        st.ray(a.serve_env)
        callers = _deploy_pairs()
        if server.poll() is not None:
            raise RuntimeError("the gRPC server exited")
        # NOTE: the driver's handles run their router on this loop (throughput-optimised
        # mode); it stays open until Serve shuts down.
        loop = asyncio.new_event_loop()
        rounds: dict[str, list[dict[str, float]]] = {"serve": [], "tool": [], "grpc": []}
        for r in range(a.rounds):
            for name in list(rounds) if r % 2 == 0 else list(reversed(rounds)):
                if name == "grpc":
                    latencies = _grpc_round(port, a)
                else:
                    latencies = loop.run_until_complete(_serve_round(callers[name], a.calls, a.gap_ms / 1000))
                res = {"calls": len(latencies), **percentiles([x * 1000 for x in latencies])}  # ms
                rounds[name].append(res)
                print(f"  round {r + 1} {name:<6} {res}", flush=True)
        med = {k: {p: round(statistics.median(x[p] for x in v), 3) for p in ("p50", "p99")} for k, v in rounds.items()}
        st.results.update({"rounds": rounds, "median": med, "calls": a.calls, "gap_ms": a.gap_ms})
        out_path = st.write()

    labels = {
        "serve": "Serve handle call, replica to replica",
        "tool": "... to the ToolExecutor as configured",
        "grpc": "bare grpc.aio unary call, process to process",
    }
    title = f"one hop, c=1, {a.gap_ms:g} ms idle before each (median of rounds)"
    print(f"\n{title:<56} {'p50 ms':>7} {'p99 ms':>7}")
    for name, label in labels.items():
        print(f"{label:<56} {med[name]['p50']:>7} {med[name]['p99']:>7}")
    diff = round(med["serve"]["p50"] - med["grpc"]["p50"], 3)
    print(f"Serve / gRPC p50 = {ratio(med['serve']['p50'], med['grpc']['p50'])}x (+{diff} ms per hop)")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
