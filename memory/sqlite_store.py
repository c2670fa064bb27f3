"""SQLite conversation store: the embedded default, one file in WAL mode.

Several replica processes on one machine may share the file: readers never
block (WAL), writers queue on the file lock for up to ``busy_timeout_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from agent.dto import ChatResponse, Message, new_id, utcnow
from agent.errors import ConflictError, StoreUnavailableError
from agent.keys import ApiKeyRecord
from agent.ports import Page, Session, TurnRecord
from memory import codec
from memory.migrations import migrate_sqlite

logger = logging.getLogger(__name__)

R = TypeVar("R")

_SELECT_SESSION = "SELECT id, user_id, title, created_at, updated_at, version FROM sessions WHERE id = ?"
_LIST_SESSIONS = (
    "SELECT id, user_id, title, created_at, updated_at, version FROM sessions WHERE user_id = ?"
    " ORDER BY updated_at DESC, id DESC LIMIT ?"
)
_LIST_SESSIONS_AFTER = (
    "SELECT id, user_id, title, created_at, updated_at, version FROM sessions"
    " WHERE user_id = ? AND (updated_at, id) < (?, ?) ORDER BY updated_at DESC, id DESC LIMIT ?"
)
_HISTORY = (
    "SELECT * FROM (SELECT id, role, content, tool_calls, tool_call_id, name, usage, created_at, seq"
    " FROM messages WHERE session_id = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq"
)
_LIST_MESSAGES = (
    "SELECT id, role, content, tool_calls, tool_call_id, name, usage, created_at, seq"
    " FROM messages WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)
_SELECT_KEYS = "SELECT id, prefix, hash, owner, name, scopes, created_at, last_used_at, revoked_at FROM api_keys"
_INSERT_KEY = (
    "INSERT INTO api_keys (id, prefix, hash, owner, name, scopes, created_at, last_used_at, revoked_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@contextlib.contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: all of it or nothing.

    NOTE: ``BEGIN IMMEDIATE`` takes the write lock up front, waiting up to the
    busy timeout. A deferred transaction that reads first and writes later can
    fail with "database is locked" at once, without waiting, when another
    process wrote in between.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _session(row: sqlite3.Row) -> Session:
    return Session(
        id=row["id"],
        user_id=row["user_id"],
        title=row["title"],
        created_at=codec.ts_parse(row["created_at"]),
        updated_at=codec.ts_parse(row["updated_at"]),
        version=row["version"],
    )


def _message(row: sqlite3.Row) -> Message:
    return codec.message_from(
        id=row["id"],
        role=row["role"],
        content=row["content"],
        tool_calls=row["tool_calls"],
        tool_call_id=row["tool_call_id"],
        name=row["name"],
        usage=row["usage"],
        created_at=codec.ts_parse(row["created_at"]),
    )


def _owned(conn: sqlite3.Connection, session_id: str, user_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(_SELECT_SESSION, (session_id,)).fetchone()
    if row is None or row["user_id"] != user_id:
        raise codec.session_not_found(session_id)
    return row


class SqliteConversationStore:
    """``ConversationStore`` and ``ApiKeyStore`` in one SQLite file, run in worker threads.

    Args:
        path: The database file; its parent directory is created.
        busy_timeout_ms: How long a write waits for another process's write.
    """

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._migrated = False
        # NOTE: one connection per store, used by one thread at a time.
        self._lock = threading.Lock()

    async def _run(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        return await asyncio.to_thread(self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        with self._lock:
            try:
                conn = self._connection()
                if not self._migrated:
                    self._migrate(conn)
                    self._migrated = True
                return fn(conn)
            except sqlite3.OperationalError as exc:
                logger.warning("conversation store (sqlite) unavailable: %s", exc)
                raise StoreUnavailableError("the conversation store is unavailable", retry_after=1.0) from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_ms / 1000,
                isolation_level=None,  # we BEGIN and COMMIT ourselves
                check_same_thread=False,
            )
            try:
                conn.row_factory = sqlite3.Row
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
                conn.execute("PRAGMA foreign_keys = ON")
                self._enable_wal(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # NOTE: switching a new file to WAL takes an exclusive lock, and when replicas
        # race for it SQLite answers "database is locked" at once instead of calling
        # the busy handler (waiting could deadlock); so we retry up to the busy timeout.
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        delay = 0.005
        while True:
            try:
                mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        if mode.lower() != "wal":
            logger.warning("conversation store (sqlite): journal mode is %r, not WAL (file system?)", mode)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        with _write(conn):
            for migration in migrate_sqlite(conn):
                logger.info("conversation store (sqlite): applied schema version %d", migration.version)

    async def setup(self) -> None:
        """Open the file (WAL mode) and apply pending migrations; later calls do it lazily too."""
        await self._run(lambda conn: None)

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(close)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def get_or_create_session(self, session_id: str | None, user_id: str) -> Session:
        return await self._run(lambda conn: self._get_or_create(conn, session_id, user_id))

    @staticmethod
    def _get_or_create(conn: sqlite3.Connection, session_id: str | None, user_id: str) -> Session:
        row = conn.execute(_SELECT_SESSION, (session_id,)).fetchone() if session_id else None
        if row is None:
            session_id = session_id or new_id("ses")
            now = codec.ts_text(utcnow())
            with _write(conn):
                conn.execute(
                    "INSERT INTO sessions (id, user_id, title, created_at, updated_at)"
                    " VALUES (?, ?, NULL, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (session_id, user_id, now, now),
                )
                row = conn.execute(_SELECT_SESSION, (session_id,)).fetchone()
        if row["user_id"] != user_id:
            raise codec.session_not_found(row["id"])
        return _session(row)

    async def get_session(self, session_id: str, user_id: str) -> Session:
        return await self._run(lambda conn: _session(_owned(conn, session_id, user_id)))

    async def list_sessions(self, user_id: str, limit: int = 20, cursor: str | None = None) -> Page[Session]:
        codec.check_limit(limit)
        after = codec.parse_session_cursor(cursor) if cursor is not None else None

        def query(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            if after is None:
                return conn.execute(_LIST_SESSIONS, (user_id, limit + 1)).fetchall()
            stamp, last_id = after
            return conn.execute(_LIST_SESSIONS_AFTER, (user_id, codec.ts_text(stamp), last_id, limit + 1)).fetchall()

        rows = await self._run(query)
        items = [_session(r) for r in rows[:limit]]
        return Page(items=items, next_cursor=codec.session_cursor(items[-1]) if len(rows) > limit else None)

    async def delete_session(self, session_id: str, user_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            with _write(conn):
                cur = conn.execute("DELETE FROM sessions WHERE id = ? AND user_id = ?", (session_id, user_id))
                if cur.rowcount == 0:
                    raise codec.session_not_found(session_id)

        await self._run(delete)

    async def history(self, session_id: str, limit: int) -> list[Message]:
        if limit <= 0:
            return []
        rows = await self._run(lambda conn: conn.execute(_HISTORY, (session_id, limit)).fetchall())
        return [_message(r) for r in rows]

    async def list_messages(
        self, session_id: str, user_id: str, limit: int = 50, cursor: str | None = None
    ) -> Page[Message]:
        codec.check_limit(limit)
        after = codec.parse_message_cursor(cursor) if cursor is not None else 0

        def query(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            _owned(conn, session_id, user_id)
            return conn.execute(_LIST_MESSAGES, (session_id, after, limit + 1)).fetchall()

        rows = await self._run(query)
        more = len(rows) > limit
        return Page(
            items=[_message(r) for r in rows[:limit]],
            next_cursor=codec.message_cursor(rows[limit - 1]["seq"]) if more else None,
        )

    async def append(self, session_id: str, messages: list[Message], turn: TurnRecord | None = None) -> int:
        if turn is not None and turn.session_id != session_id:
            raise ValueError("turn.session_id differs from session_id")
        return await self._run(lambda conn: self._append(conn, session_id, messages, turn))

    @staticmethod
    def _append(conn: sqlite3.Connection, session_id: str, messages: list[Message], turn: TurnRecord | None) -> int:
        now = codec.ts_text(utcnow())
        with _write(conn):
            row = conn.execute(
                "UPDATE sessions SET updated_at = ?, version = version + 1,"
                " title = COALESCE(NULLIF(title, ''), ?) WHERE id = ? RETURNING version",
                (now, codec.title_from(messages), session_id),
            ).fetchone()
            if row is None:
                raise codec.session_not_found(session_id)
            version = int(row[0])
            if turn is not None:
                cur = conn.execute(
                    "INSERT INTO turns (user_id, idempotency_key, session_id, response, created_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (turn.user_id, turn.idempotency_key, session_id, turn.response.model_dump_json(), now),
                )
                if cur.rowcount == 0:
                    raise ConflictError("idempotency key already used", field="idempotency_key")
            seq = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE session_id = ?", (session_id,)
            ).fetchone()[0]
            rows = [
                (*codec.message_values(m), session_id, seq + i, codec.ts_text(m.created_at))
                for i, m in enumerate(messages, start=1)
            ]
            try:
                conn.executemany(
                    "INSERT INTO messages (id, role, content, tool_calls, tool_call_id, name, usage,"
                    " session_id, seq, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except sqlite3.IntegrityError as exc:
                raise ConflictError("message id already stored") from exc
        return version

    async def find_turn(self, user_id: str, idempotency_key: str) -> TurnRecord | None:
        sql = "SELECT session_id, response FROM turns WHERE user_id = ? AND idempotency_key = ?"
        row = await self._run(lambda conn: conn.execute(sql, (user_id, idempotency_key)).fetchone())
        if row is None:
            return None
        return TurnRecord(
            user_id=user_id,
            idempotency_key=idempotency_key,
            session_id=row["session_id"],
            response=ChatResponse.model_validate_json(row["response"]),
        )

    # ------------------------------------------------------------------ API keys (one statement each: atomic)

    async def create_api_key(self, record: ApiKeyRecord) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(_INSERT_KEY, codec.api_key_values(record, codec.ts_text))
            except sqlite3.IntegrityError as exc:
                raise ConflictError("API key id or prefix already stored") from exc

        await self._run(insert)

    async def get_api_key_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        row = await self._run(lambda conn: conn.execute(_SELECT_KEYS + " WHERE prefix = ?", (prefix,)).fetchone())
        return codec.api_key_from(row) if row is not None else None

    async def list_api_keys(self, owner: str | None = None) -> list[ApiKeyRecord]:
        sql = _SELECT_KEYS + " WHERE ? IS NULL OR owner = ? ORDER BY created_at, id"
        rows = await self._run(lambda conn: conn.execute(sql, (owner, owner)).fetchall())
        return [codec.api_key_from(r) for r in rows]

    async def revoke_api_key(self, key_id: str) -> None:
        sql = "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?"
        updated = await self._run(lambda conn: conn.execute(sql, (codec.ts_text(utcnow()), key_id)).rowcount)
        if updated == 0:
            raise codec.api_key_not_found(key_id)

    async def touch_api_key(self, key_id: str) -> None:
        sql = "UPDATE api_keys SET last_used_at = ? WHERE id = ?"
        await self._run(lambda conn: conn.execute(sql, (codec.ts_text(utcnow()), key_id)))
