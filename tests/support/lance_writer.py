"""One replica's writes to a user's LanceDB table, run in a process of its own.

``tests/contract/test_vector_memory.py`` starts two of these on one directory at
once, as two Agent replicas would write one user's memories, and checks that
nothing is lost. It lives here so a spawned process can import it.
"""

from __future__ import annotations

import asyncio
from multiprocessing.synchronize import Barrier
from typing import Any

import numpy as np

from agent.ports import MemoryItem
from memory.lance_memory import LanceVectorMemory

DIM = 384


async def _write(uri: str, tag: str, writes: int, start: Barrier) -> dict[str, Any]:
    # Small thresholds, so both replicas' index builds and optimize runs (compaction)
    # happen during the writes, against the other's commits.
    memory = LanceVectorMemory(uri, optimize_every=4, index_threshold=40)
    await memory.setup()
    rng = np.random.default_rng(ord(tag))
    live: dict[str, str] = {}  # id -> text, what this replica left in the table
    errors: list[str] = []
    start.wait()  # both at once: the table is created by one of them while the other opens it
    for i in range(writes):
        vector = [float(x) for x in rng.standard_normal(DIM)]
        try:
            if i % 5 == 4:  # replace an item this replica wrote (LanceDB's merge_insert)
                item_id = sorted(live)[i % len(live)]
                await memory.add([MemoryItem(id=item_id, user_id="alice", text=f"{item_id} v{i}")], [vector])
                live[item_id] = f"{item_id} v{i}"
            elif i % 9 == 8:
                item_id = sorted(live)[0]
                await memory.delete("alice", item_id)
                del live[item_id]
            else:  # a turn's remembered message: an append
                item_id = f"{tag}{i}"
                await memory.add([MemoryItem(id=item_id, user_id="alice", text=item_id)], [vector], new=True)
                live[item_id] = item_id
            await memory.search("alice", vector, 3)
        except Exception as exc:  # reported to the test, which fails on any
            errors.append(f"write {i}: {type(exc).__name__}: {exc} (from {exc.__cause__!r})")
    await memory.wait_background()
    await memory.close()
    return {"live": live, "errors": errors}


def write(uri: str, tag: str, writes: int, start: Barrier, results: Any) -> None:
    """The process's target: puts ``(tag, {"live": ..., "errors": ...})`` on ``results``."""
    results.put((tag, asyncio.run(_write(uri, tag, writes, start))))
