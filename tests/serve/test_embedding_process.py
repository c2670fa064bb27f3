"""The Embedding replica's model process: when it dies, Serve replaces the replica and embeddings come back."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from serve_app.procfs import Proc, alive, cmdline, descendants, stat_fields
from tests.serve.conftest import APP_NAME

pytestmark = pytest.mark.serve


def model_processes() -> set[Proc]:
    """The model processes (this test process's descendants) whose parent is a replica of this session's Embedding."""
    replica = f"ServeReplica:{APP_NAME}:Embedding"
    found = set()
    for proc in descendants(os.getpid()):
        stat = stat_fields(proc[0])
        if (
            stat
            and alive(proc)
            and "memory.encoder_process" in cmdline(proc[0])
            and replica in " ".join(cmdline(int(stat[1])))
        ):
            found.add(proc)
    return found


async def test_a_dead_model_process_gets_its_replica_replaced(deployed_app: str) -> None:
    from ray import serve

    emb = serve.get_deployment_handle("Embedding", app_name=APP_NAME)
    agent = serve.get_deployment_handle("Agent", app_name=APP_NAME)
    [before] = await emb.embed.remote(["the same text"])
    checks = await agent.health.remote()
    assert checks["embedding"].ok and not checks["embedding"].required
    [child] = model_processes()  # one replica, one model process
    os.kill(child[0], signal.SIGKILL)

    # The Agent's health report (/health) shows it, and only it, until the replica is replaced
    # (polled: the kill lands a moment after os.kill returns).
    deadline = time.monotonic() + 10
    while True:
        checks = await agent.health.remote()
        if not checks["embedding"].ok or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert not checks["embedding"].ok, checks
    assert "model process exited" in (checks["embedding"].error or ""), checks
    assert all(c.ok for name, c in checks.items() if name != "embedding"), checks

    # Until the health check fails the replica over, a call fails with a clear error
    # (or, if the replacement is quick, already succeeds); it never hangs.
    try:
        await asyncio.wait_for(emb.embed.remote(["during"]), 60)
    except Exception as exc:
        assert "embedding model process is gone" in str(exc)

    deadline = time.monotonic() + 120
    while True:
        try:
            [after] = await asyncio.wait_for(emb.embed.remote(["the same text"]), 30)
            break
        except Exception:
            assert time.monotonic() < deadline, "the Embedding never recovered from its model process's death"
            await asyncio.sleep(1)
    assert max(abs(x - y) for x, y in zip(before, after, strict=True)) < 1e-6
    assert (await agent.health.remote())["embedding"].ok
    [new_child] = model_processes()
    assert new_child != child
    assert not alive(child)
