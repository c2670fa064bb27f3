"""Dynamic batching that forms each batch when the model is free to run it."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class DispatchBatcher(Generic[T, R]):
    """Gathers concurrent single-item calls into batches for a blocking batch function.

    The batch function runs in a worker thread. Items that arrive while a batch
    runs queue, and the next batch takes up to ``max_batch_size`` of them the moment
    the function is free; only a full batch goes out before that, to run beside or
    right after the one running (up to ``max_in_flight`` batches at once), so a
    function that pipelines (``SubprocessEncoder``) never idles between full batches.
    An item waits at most ``wait_s`` from its arrival for others to join it while
    the function is idle, never longer.

    NOTE: why not ``@serve.batch``: it closes the next batch while the current one
    still runs (its membership is what arrived within ``batch_wait_timeout_s`` of its
    first item), and the batch then waits its turn. Under 64 callers and a model busy
    ~95% of the time that split them into batches of 32, 20 and 12, each small batch
    paying the model's per-batch cost (docs/benchmarks.md, "Tenth session"). A full
    batch sent early costs nothing of that: it could not have grown.

    Args:
        run_batch: Blocking; one result per item, in order. It runs in a worker
            thread; the loop takes calls in meanwhile as far as the function leaves
            it the GIL (torch releases it inside each operator).
        max_batch_size: Most items in one call of ``run_batch``.
        wait_s: How long an item waits for company while ``run_batch`` is idle.
        max_in_flight: Most calls of ``run_batch`` at once (1: one batch at a time).
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R]],
        max_batch_size: int,
        wait_s: float,
        max_in_flight: int = 2,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.max_in_flight = max_in_flight
        self._pending: deque[tuple[T, asyncio.Future[R], float]] = deque()
        self._changed = asyncio.Event()  # an arrival or a batch done; bound to a loop at its first wait
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        """``item``'s result, computed in a batch with whatever else is queued."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future, time.monotonic()))
        self._changed.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._work())
        return await future

    async def _work(self) -> None:
        while self._pending:
            if self._running:
                # Busy: only a full batch goes out now, and only while a place is free.
                if len(self._running) >= self.max_in_flight or len(self._pending) < self.max_batch_size:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
            else:
                # Idle: wait for company until the batch is full or its oldest item's time is up.
                while len(self._pending) < self.max_batch_size:
                    remaining = self._pending[0][2] + self.wait_s - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.clear()
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), remaining)
            batch: list[tuple[T, asyncio.Future[R]]] = []
            while self._pending and len(batch) < self.max_batch_size:
                item, future, _ = self._pending.popleft()
                if not future.done():  # a caller that went away takes no place in the batch
                    batch.append((item, future))
            if batch:
                self._start([item for item, _ in batch], [future for _, future in batch])

    def _start(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        task = asyncio.ensure_future(self._run(items, futures))
        self._running.add(task)  # held until done (the loop keeps only weak references to tasks)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._changed.set()

    async def _run(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        try:
            results = await asyncio.to_thread(self.run_batch, items)
            if len(results) != len(items):
                raise RuntimeError(f"the batch function returned {len(results)} results for {len(items)} items")
        except Exception as exc:  # every caller of this batch gets it; the next batch runs
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)
