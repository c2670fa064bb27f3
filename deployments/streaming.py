"""Coalesce a stream's events into batches for the trip across a handle.

Each item that crosses a deployment handle costs a round of Ray's object
transfer; tokens arriving faster than that are sent together: whatever is
ready when the previous batch left goes in the next one. Nothing waits on a
timer, so a slow stream still sends each token as soon as it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


async def batched(source: AsyncIterator[T], max_batch: int = 256) -> AsyncIterator[list[T]]:
    """Yield lists of the items ``source`` produced since the last yield.

    NOTE: closing this generator cancels the pump task, which closes ``source``:
    a client that goes away stops the work upstream.
    """
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put(item)
        except BaseException as exc:  # delivered to the consumer below
            await queue.put(exc)
            return
        await queue.put(_END)

    task = asyncio.create_task(pump())
    try:
        while True:
            batch: list[object] = [await queue.get()]
            while not queue.empty() and len(batch) < max_batch:
                batch.append(queue.get_nowait())
            done = False
            items: list[T] = []
            for item in batch:
                if item is _END:
                    done = True
                elif isinstance(item, BaseException):
                    if items:
                        yield items
                    raise item
                else:
                    items.append(item)  # type: ignore[arg-type]
            if items:
                yield items
            if done:
                return
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
