"""Pick the conversation store from ``DATABASE_URL``."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from agent.ports import ConversationStore
from memory.postgres_store import PostgresConversationStore
from memory.sqlite_store import SqliteConversationStore

DEFAULT_SQLITE_FILE = "agentserve.db"


def build_conversation_store(database_url: str | None, data_dir: str, *, pool_size: int = 10) -> ConversationStore:
    """Build the store ``database_url`` names; call ``await store.setup()`` before use.

    Args:
        database_url: ``postgresql://...`` or ``postgres://...`` for PostgreSQL,
            ``sqlite:///<absolute path>`` for a SQLite file; None (or blank) for
            the embedded default, SQLite at ``<data_dir>/agentserve.db``.
        data_dir: Where the embedded default keeps its file.
        pool_size: PostgreSQL connections at most, per store (per replica).

    Raises:
        ValueError: the URL is of no supported kind (the message never repeats it,
            since it may hold a password).
    """
    if database_url is None or not database_url.strip():
        return SqliteConversationStore(os.path.join(data_dir, DEFAULT_SQLITE_FILE))

    url = database_url.strip()
    if url.lower().startswith(("postgresql://", "postgres://")):
        return PostgresConversationStore(url, max_size=pool_size)
    if url.lower().startswith("sqlite:///"):
        parts = urlsplit(url)
        path = "/" + parts.path.lstrip("/")
        if not parts.netloc and not parts.query and path != "/":
            return SqliteConversationStore(path)
    raise ValueError("DATABASE_URL must be postgresql://..., postgres://... or sqlite:///<absolute path to a file>")
