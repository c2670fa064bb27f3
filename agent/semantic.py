"""Semantic memory as the agent uses it: remember texts, recall them by meaning."""

from __future__ import annotations

import logging
import time

from agent.dto import ToolSpec
from agent.errors import InvalidRequestError
from agent.ports import Embedder, MemoryHit, MemoryItem, VectorMemory

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


class SemanticMemory:
    """Embeds through the ``Embedder`` port and keeps vectors in a ``VectorMemory``.

    Args:
        embedder: The Embedding deployment's handle adapter (or a local model).
        store: Where vectors live (LanceDB in production).
        warn_interval_s: A failing memory is logged at most this often.
    """

    def __init__(self, embedder: Embedder, store: VectorMemory, warn_interval_s: float = 30.0) -> None:
        self.embedder = embedder
        self.store = store
        self.warn_interval_s = warn_interval_s
        self._last_warning = 0.0

    async def remember(
        self,
        user_id: str,
        text: str,
        session_id: str | None = None,
        kind: str = "message",
        vector: list[float] | None = None,
    ) -> MemoryItem:
        """Store ``text``; pass ``vector`` when it was embedded already (a turn's recall did)."""
        text = text.strip()
        if not text:
            raise InvalidRequestError("text must not be empty", field="text")
        item = MemoryItem(user_id=user_id, session_id=session_id, kind=kind, text=text)
        if vector is None:
            [vector] = await self.embedder.embed([text])
        await self.store.add([item], [vector], new=True)  # its id was made just now
        return item

    async def recall(self, user_id: str, query: str, k: int) -> list[MemoryHit]:
        return (await self.recall_with_vector(user_id, query, k))[0]

    async def recall_with_vector(self, user_id: str, query: str, k: int) -> tuple[list[MemoryHit], list[float]]:
        """The hits and the query's vector, so a turn embeds its message once."""
        if not query.strip():
            raise InvalidRequestError("query must not be empty", field="q")
        [vector] = await self.embedder.embed([query])
        return await self.store.search(user_id, vector, k), vector

    async def forget(self, user_id: str, item_id: str) -> None:
        await self.store.delete(user_id, item_id)

    async def forget_session(self, user_id: str, session_id: str) -> int:
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
