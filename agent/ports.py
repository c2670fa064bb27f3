"""Ports: what the core needs from the outside world, as Protocols.

Implementations live elsewhere: the OpenAI client in ``agent.llm``, tool
registries in ``tools``, stores in ``memory``, and handle adapters in
``deployments`` that reach other Serve deployments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, Field

from agent.dto import (
    ChatResponse,
    Message,
    ToolCall,
    ToolInvocation,
    ToolResult,
    ToolSpec,
    Usage,
    new_id,
    utcnow,
)


class LLMParams(BaseModel):
    temperature: float | None = None
    max_tokens: int | None = None


class LLMTextDelta(BaseModel):
    """A piece of the assistant's text as the provider streamed it."""

    text: str


class LLMResult(BaseModel):
    """The end of one LLM call: full text, tool calls asked for, usage."""

    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str | None = None


@runtime_checkable
class LLMClient(Protocol):
    """A chat model reached through an OpenAI-compatible API."""

    def stream_chat(
        self, messages: list[Message], tools: list[ToolSpec], params: LLMParams
    ) -> AsyncIterator[LLMTextDelta | LLMResult]:
        """Stream one completion: text deltas, then exactly one ``LLMResult``.

        Raises:
            LLMError: (or a subclass) when the provider fails after the retries.
        """
        ...

    async def ping(self) -> None:
        """Raise ``LLMError`` if the endpoint does not answer."""
        ...


@runtime_checkable
class ToolExecutor(Protocol):
    """Runs tools by name. Failures come back as ``ToolResult(is_error=True)``."""

    async def list_tools(self) -> list[ToolSpec]: ...

    async def execute(self, invocation: ToolInvocation) -> ToolResult: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into normalised vectors of one fixed dimension."""

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


class Session(BaseModel):
    id: str
    user_id: str
    title: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    version: int = 0  # bumped by every write, in its transaction


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a listing; pass ``next_cursor`` back to get the next one."""

    items: list[T]
    next_cursor: str | None = None


class TurnRecord(BaseModel):
    """A finished turn, kept so a retry with the same idempotency key gets the same reply."""

    user_id: str
    idempotency_key: str
    session_id: str
    response: ChatResponse


@runtime_checkable
class ConversationStore(Protocol):
    """The source of truth for sessions, their messages and finished turns.

    Every method that takes ``user_id`` answers ``NotFoundError`` for a session
    of another user, exactly as for an id that does not exist.
    """

    async def setup(self) -> None:
        """Open connections and apply pending migrations (safe when replicas race)."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailableError`` unless the store answers."""
        ...

    async def get_or_create_session(self, session_id: str | None, user_id: str) -> Session:
        """Return the user's session, creating it when ``session_id`` is None or new.

        Raises:
            NotFoundError: the id exists but belongs to another user.
        """
        ...

    async def get_session(self, session_id: str, user_id: str) -> Session: ...

    async def list_sessions(self, user_id: str, limit: int = 20, cursor: str | None = None) -> Page[Session]:
        """The user's sessions, most recently updated first."""
        ...

    async def delete_session(self, session_id: str, user_id: str) -> None:
        """Delete a session with its messages and turns."""
        ...

    async def history(self, session_id: str, limit: int) -> list[Message]:
        """The newest ``limit`` messages of a session, oldest first."""
        ...

    async def list_messages(
        self, session_id: str, user_id: str, limit: int = 50, cursor: str | None = None
    ) -> Page[Message]:
        """A session's messages, oldest first."""
        ...

    async def append(self, session_id: str, messages: list[Message], turn: TurnRecord | None = None) -> int:
        """Store messages (and the finished turn) in one transaction before returning.

        Returns:
            The session's new ``version`` (the one before it was this minus one).

        Raises:
            StoreUnavailableError: nothing was written.
            ConflictError: ``turn``'s idempotency key is already used (nothing was written).
        """
        ...

    async def find_turn(self, user_id: str, idempotency_key: str) -> TurnRecord | None:
        """The finished turn stored under this key, if any."""
        ...


class MemoryItem(BaseModel):
    """Something a user said or asked to remember, searchable by meaning."""

    id: str = Field(default_factory=lambda: new_id("mem"))
    user_id: str
    session_id: str | None = None
    kind: str = "message"  # "message" (remembered after a turn) or "note" (added on purpose)
    text: str
    created_at: datetime = Field(default_factory=utcnow)


class MemoryHit(BaseModel):
    item: MemoryItem
    score: float  # cosine similarity, higher is closer


@runtime_checkable
class VectorMemory(Protocol):
    """Per-user semantic memory. Vectors are normalised; every call is scoped to one user."""

    async def setup(self) -> None: ...

    async def add(self, items: list[MemoryItem], vectors: list[list[float]], *, new: bool = False) -> None:
        """Store the items; one whose id the user has already replaces it.

        ``new=True`` says the caller made the ids just now, so none can be stored
        yet and a store may append without looking for them.
        """
        ...

    async def search(self, user_id: str, vector: list[float], k: int) -> list[MemoryHit]:
        """The user's ``k`` closest items, closest first; never another user's."""
        ...

    async def delete(self, user_id: str, item_id: str) -> None:
        """Raises ``NotFoundError`` for a missing id or another user's item."""
        ...

    async def delete_session(self, user_id: str, session_id: str) -> int:
        """Delete the user's items of one session; returns how many."""
        ...

    async def count(self, user_id: str) -> int: ...


@runtime_checkable
class Observer(Protocol):
    """Told about each LLM and tool call (metrics); must not raise, and must return quickly."""

    def on_llm_call(
        self,
        model: str,
        ok: bool,
        ttft_s: float | None,
        duration_s: float,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        """One LLM call ended; ``ttft_s`` is None when it streamed no text (tool calls only, or failed first)."""
        ...

    def on_tool_call(self, name: str, outcome: str, duration_s: float) -> None:
        """One tool call ended; ``outcome`` is ``ok`` or the ``ToolErrorKind`` value."""
        ...

    def on_memory_recall(self, outcome: str, duration_s: float) -> None:
        """A turn's recall ended: ``ok``, or ``error``/``timeout`` (the turn went on without memory)."""
        ...


@runtime_checkable
class MemoryObserver(Protocol):
    """Told about semantic memory's background writes (metrics); must not raise, and must return quickly."""

    def on_memory_write(self, outcome: str, count: int) -> None:
        """``count`` messages settled: ``stored``, or ``dropped`` (never reached the vector store)."""
        ...

    def on_memory_queue(self, delta: int) -> None:
        """Writes queued or being written moved by ``delta`` (one replica's backlog)."""
        ...


@runtime_checkable
class VectorSearchObserver(Protocol):
    """Told how a vector store answered each search (metrics); must not raise, and must return quickly."""

    def on_vector_search(self, path: str) -> None:
        """One search: ``copy`` (the replica's copy of the table), ``read`` (the table read into a copy
        first), ``lancedb`` (searched in the store itself) or ``empty`` (the user has no table)."""
        ...

    def on_vector_cache(self, delta_bytes: int) -> None:
        """The memory the replica's copies take moved by ``delta_bytes``."""
        ...
