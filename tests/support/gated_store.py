"""A real vector store whose writes can be held back or made to fail (the background writer's tests)."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.ports import MemoryItem, VectorMemory


class GatedStore:
    """A real vector store whose ``add`` waits for ``gate`` (set: adds go through at once)."""

    def __init__(self, inner: VectorMemory, *, fail: bool = False) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = fail
        self.adds: list[list[str]] = []  # the texts of each add, as it was called
        self.add_started = asyncio.Event()

    async def setup(self) -> None:
        await self.inner.setup()

    async def add(self, items: list[MemoryItem], vectors: list[list[float]], *, new: bool = False) -> None:
        self.adds.append([i.text for i in items])
        self.add_started.set()
        await self.gate.wait()
        if self.fail:
            raise ConnectionError("vector store unreachable")
        await self.inner.add(items, vectors, new=new)

    def __getattr__(self, name: str) -> Any:  # search, delete, delete_session, count
        return getattr(self.inner, name)
