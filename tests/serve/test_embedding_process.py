"""The Embedding replica's model process: when it dies, Serve replaces the replica and embeddings come back."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tests.serve.conftest import APP_NAME

pytestmark = pytest.mark.serve


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def model_processes() -> list[int]:
    """The model processes whose parent is a replica of this session's Embedding."""
    replica = f"ServeReplica:{APP_NAME}:Embedding"
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and "memory.encoder_process" in cmdline(int(p.name))
        and replica in cmdline(parent_of(int(p.name)))
    ]


async def test_a_dead_model_process_gets_its_replica_replaced(deployed_app: str) -> None:
    from ray import serve

    emb = serve.get_deployment_handle("Embedding", app_name=APP_NAME)
    [before] = await emb.embed.remote(["the same text"])
    [child] = model_processes()  # one replica, one model process
    os.kill(child, signal.SIGKILL)

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
    [new_child] = model_processes()
    assert new_child != child
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1][:3]
