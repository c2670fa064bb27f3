"""Redeploys under traffic: a user_config change restarts nothing, an options change replaces
replicas one by one; not one request fails either way."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from serve_app.rollout import DashboardServeCluster
from serve_app.scripted_llm import ScriptedLLMServer
from tests.cluster.conftest import deploy, deployments, replica_ids
from tests.cluster.ray_head import RayHead
from tests.cluster.traffic import Traffic
from tests.support.sse import parse_sse

NEW_PROMPT = "You are the v2 assistant: answer in one line."


def system_prompts(llm: ScriptedLLMServer) -> set[str]:
    return {str(r["messages"][0]["content"]) for r in list(llm.app.state.requests) if r["messages"]}


def long_stream(base_url: str, tokens: int) -> tuple[list[str], str]:
    """A streamed turn of ``tokens`` tokens, 50 ms apart: its event names and the text streamed."""
    with httpx.Client(base_url=base_url, timeout=180) as http:
        r = http.post("/api/chat/stream", json={"message": f"slow: {tokens}"})
    assert r.status_code == 200
    events = parse_sse(r.text)
    return [name for name, _ in events], "".join(data["text"] for name, data in events if name == "token")


def test_rollouts_under_traffic(
    deployed: str,
    cluster: DashboardServeCluster,
    ray_head: RayHead,
    v1: dict[str, Any],
    scripted_llm_server: ScriptedLLMServer,
) -> None:
    started = time.monotonic()
    before = replica_ids(cluster)
    assert len(before["Agent"]) == 2 and len(before["Ingress"]) == 2

    with Traffic(deployed, clients=4, stream_tokens=20) as traffic:
        traffic.wait_for(ok=8)

        # 1. Live settings: the Agent's system prompt, through user_config → reconfigure.
        live = v1
        deployments(live)["Agent"]["user_config"]["system_prompt"] = NEW_PROMPT
        deploy(cluster, live)
        assert replica_ids(cluster) == before, "a user_config change restarted replicas"
        scripted_llm_server.app.state.requests.clear()
        traffic.wait_for(ok=8)
        assert system_prompts(scripted_llm_server) == {NEW_PROMPT}
        after_live = traffic.sent

        # 2. An options change: new replicas, rolled one at a time; a long stream opened
        # just before must finish on its draining replica (graceful_shutdown_timeout_s).
        replaced = live
        for name in ("Ingress", "Agent"):
            actor = deployments(replaced)[name]["ray_actor_options"]
            actor["runtime_env"] = {"env_vars": {"AGENTSERVE_REVISION": "2"}}
        with ThreadPoolExecutor(2) as pool:
            streams = [pool.submit(long_stream, deployed, 300) for _ in range(2)]  # 15 s each
            time.sleep(1)  # both opened, on either Ingress replica
            deploy(cluster, replaced)
            for stream in streams:
                names, text = stream.result()
                assert names[-1] == "done" and "error" not in names, names[-3:]
                assert text == " ".join(f"t{i}" for i in range(300))
        ray_head.remember_processes()
        after = replica_ids(cluster)
        for name in ("Ingress", "Agent"):
            assert len(after[name]) == 2 and not after[name] & before[name], f"{name} replicas were not replaced"
        for name in ("ToolExecutor", "Embedding"):
            assert after[name] == before[name], f"{name} was restarted though its options did not change"
        traffic.wait_for(ok=8)

    print(
        f"[cluster] live update + replacement under traffic: {traffic.sent} requests "
        f"({after_live} by the end of the live update), {len(traffic.failures)} failed, "
        f"{time.monotonic() - started:.0f}s; Agent {sorted(before['Agent'])} -> {sorted(after['Agent'])}"
    )
    assert traffic.failures == [], traffic.summary()
