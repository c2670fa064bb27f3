"""Semantic memory as the agent uses it: remember texts, recall them by meaning."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from agent.dto import ToolSpec
from agent.errors import InvalidRequestError
from agent.ports import Embedder, MemoryHit, MemoryItem, MemoryObserver, VectorMemory

logger = logging.getLogger(__name__)

MEMORY_SEARCH_TOOL = ToolSpec(
    name="memory_search",
    description=(
        "Search what this user said in earlier conversations, by meaning. "
        "Use it when the user refers to something from before."
    ),
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 2000, "description": "what to look for"},
            "k": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
)


@dataclass(eq=False)
class _Write:
    """A turn's message waiting for the background writer."""

    item: MemoryItem
    vector: list[float] | None
    keep: Callable[[], Awaitable[bool]] | None
    stored: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


class SemanticMemory:
    """Embeds through the ``Embedder`` port and keeps vectors in a ``VectorMemory``.

    A turn's message is remembered in the background (``remember_later``): the
    reply does not wait for the vector store's write, and one writer stores what
    queued meanwhile in one write per user. Every read of a user's memory
    (``recall``, ``forget``, ``forget_session``) first waits for that user's
    queued writes, so whatever a turn that has answered remembered is visible to
    every later read, and a session that is forgotten cannot come back: another
    replica's ``forget_session`` does not see this one's queue, so a write is
    checked after it lands (``keep``) and undone when its session is gone.

    Args:
        embedder: The Embedding deployment's handle adapter (or a local model).
        store: Where vectors live (LanceDB in production).
        warn_interval_s: A failing memory is logged at most this often.
        max_pending: Queued writes at most; ``remember_later`` waits for room beyond.
        write_batch: Queued writes stored per round (one ``add`` per user in it).
        write_timeout_s: One round's bound; a round that takes longer is dropped
            (logged), so a stuck store or Embedding cannot hold the readers.
        observer: Told how many writes are queued, stored and dropped (metrics).
    """

    def __init__(
        self,
        embedder: Embedder,
        store: VectorMemory,
        warn_interval_s: float = 30.0,
        *,
        max_pending: int = 1024,
        write_batch: int = 64,
        write_timeout_s: float = 30.0,
        observer: MemoryObserver | None = None,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.warn_interval_s = warn_interval_s
        self.write_batch = write_batch
        self.write_timeout_s = write_timeout_s
        self._last_warning = 0.0
        self._room = asyncio.Semaphore(max_pending)
        self._queue: list[_Write] = []  # not yet taken by the writer
        self._pending: dict[str, list[_Write]] = {}  # per user: queued or being written
        self._writer: asyncio.Task[None] | None = None
        self.observer = observer
        # Writes not stored: no room before the caller gave up, or failed, timed out or closed.
        self.dropped = 0

    @staticmethod
    def _item(user_id: str, text: str, session_id: str | None, kind: str) -> MemoryItem:
        text = text.strip()
        if not text:
            raise InvalidRequestError("text must not be empty", field="text")
        return MemoryItem(user_id=user_id, session_id=session_id, kind=kind, text=text)

    async def remember(
        self,
        user_id: str,
        text: str,
        session_id: str | None = None,
        kind: str = "message",
        vector: list[float] | None = None,
    ) -> MemoryItem:
        """Store ``text`` now; pass ``vector`` when it was embedded already."""
        item = self._item(user_id, text, session_id, kind)
        if vector is None:
            [vector] = await self.embedder.embed([item.text])
        await self.store.add([item], [vector], new=True)  # its id was made just now
        return item

    async def remember_later(
        self,
        user_id: str,
        message: str,
        session_id: str | None,
        vector: list[float] | None,
        keep: Callable[[], Awaitable[bool]] | None = None,
    ) -> MemoryItem:
        """Queue a turn's ``message`` for the background writer and return; waits only while the queue is full.

        ``vector``: the recall's, or None (the writer embeds it). ``keep``: asked
        once the write has landed; False (its session was deleted meanwhile,
        perhaps by another replica) deletes the session's memories again. The
        session's deletion must delete the session before its memories.
        """
        item = self._item(user_id, message, session_id, "message")
        try:
            await self._room.acquire()
        except asyncio.CancelledError:  # the caller's timeout: the queue stayed full
            self._count(stored=0, dropped=1)
            raise
        write = _Write(item, vector, keep)
        self._queue.append(write)
        self._pending.setdefault(user_id, []).append(write)
        if self.observer is not None:
            self.observer.on_memory_queue(1)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_loop())
        return item

    async def settled(self, user_id: str, *, except_session: str | None = None) -> None:
        """Wait until the user's queued writes (but those of ``except_session``) are stored or dropped."""
        mine = self._pending.get(user_id, ())
        waits = [w.done.wait() for w in mine if except_session is None or w.item.session_id != except_session]
        if waits:
            await asyncio.gather(*waits)

    async def close(self, timeout_s: float) -> int:
        """Store what is queued (for up to ``timeout_s``), then stop the writer; returns the writes dropped."""
        waits = [w.done.wait() for ws in self._pending.values() for w in ws]  # the queued ones too
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*waits)
        except TimeoutError:
            pass
        left = sum(len(ws) for ws in self._pending.values())
        if self._writer is not None:
            self._writer.cancel()  # its batch is settled as it stops
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        self._settle(self._queue)  # never taken by the writer: settle them for any reader
        self._queue.clear()
        if left:
            logger.warning("semantic memory closed with %d message(s) not remembered", left)
        return left

    async def _write_loop(self) -> None:
        """Store what is queued, round after round; ends when the queue is empty."""
        # NOTE: no await between the last look at the queue and the end, so a write
        # queued meanwhile always finds either this task running or it done.
        while self._queue:
            batch, self._queue = self._queue[: self.write_batch], self._queue[self.write_batch :]
            try:
                async with asyncio.timeout(self.write_timeout_s):
                    await self._write(batch)
            except Exception as exc:  # memory is an aid: the writer goes on
                self.warn("remember", exc)
            finally:  # also when cancelled by close()
                self._settle(batch)

    async def _write(self, batch: list[_Write]) -> None:
        """Embed what has no vector yet (one call), then store the batch (one ``add`` per user)."""
        missing = [w for w in batch if w.vector is None]
        if missing:
            try:
                vectors = await self.embedder.embed([w.item.text for w in missing])
            except Exception as exc:  # the writes that have their vector are still stored
                self.warn("remember", exc)
            else:
                for write, vector in zip(missing, vectors, strict=True):
                    write.vector = vector
        ready = [w for w in batch if w.vector is not None]
        if not ready:
            return
        await self.store.add([w.item for w in ready], [w.vector for w in ready if w.vector is not None], new=True)
        for write in ready:
            write.stored = True
        checks = {(w.item.user_id, w.item.session_id): w.keep for w in ready if w.keep and w.item.session_id}
        for (user_id, session_id), keep in checks.items():
            assert session_id is not None and keep is not None
            if not await keep():
                await self.store.delete_session(user_id, session_id)

    def _settle(self, writes: list[_Write]) -> None:
        """Wake the writes' readers and free their room; each write is settled once."""
        stored = dropped = 0
        for write in writes:
            if write.done.is_set():
                continue
            write.done.set()
            self._room.release()
            if write.stored:
                stored += 1
            else:
                dropped += 1
            mine = self._pending.get(write.item.user_id)
            if mine is not None:
                mine.remove(write)
                if not mine:
                    del self._pending[write.item.user_id]
        if self.observer is not None and stored + dropped:
            self.observer.on_memory_queue(-(stored + dropped))
        self._count(stored=stored, dropped=dropped)

    def _count(self, *, stored: int, dropped: int) -> None:
        self.dropped += dropped
        if self.observer is not None:
            for outcome, n in (("stored", stored), ("dropped", dropped)):
                if n:
                    self.observer.on_memory_write(outcome, n)

    async def recall(self, user_id: str, query: str, k: int) -> list[MemoryHit]:
        return (await self.recall_with_vector(user_id, query, k))[0]

    async def recall_with_vector(
        self, user_id: str, query: str, k: int, *, except_session: str | None = None
    ) -> tuple[list[MemoryHit], list[float]]:
        """The hits and the query's vector, so a turn embeds its message once.

        ``except_session``: the caller drops that session's hits, so its queued
        writes need not be waited for (a turn's own session).
        """
        if not query.strip():
            raise InvalidRequestError("query must not be empty", field="q")
        [vector] = await self.embedder.embed([query])
        await self.settled(user_id, except_session=except_session)
        return await self.store.search(user_id, vector, k), vector

    async def forget(self, user_id: str, item_id: str) -> None:
        await self.settled(user_id)
        await self.store.delete(user_id, item_id)

    async def forget_session(self, user_id: str, session_id: str) -> int:
        await self.settled(user_id)  # a queued write of the session must not land after the delete
        return await self.store.delete_session(user_id, session_id)

    def warn(self, what: str, exc: BaseException) -> None:
        """Log a memory failure once per interval, not once per request."""
        now = time.monotonic()
        if now - self._last_warning >= self.warn_interval_s:
            self._last_warning = now
            logger.warning("semantic memory %s failed (%s); turns go on without it", what, type(exc).__name__)


def format_memories(hits: list[MemoryHit]) -> str:
    lines = [f"- {h.item.text}" for h in hits]
    return "Things this user said in earlier conversations (use them if relevant):\n" + "\n".join(lines)
