"""PostgreSQL conversation store: the production source of truth (psycopg 3 + psycopg_pool).

Connection and pool failures surface as ``StoreUnavailableError`` (never with
the DSN in the message); every write is one transaction, so a failure leaves
nothing half written. The pool reconnects by itself when the database returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from agent.dto import ChatResponse, Message, new_id, utcnow
from agent.errors import ConflictError, StoreUnavailableError
from agent.keys import ApiKeyRecord
from agent.ports import Page, Session, TurnRecord
from memory import codec
from memory.migrations import migrate_postgres

logger = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[DictRow]

_SELECT_SESSION = "SELECT id, user_id, title, created_at, updated_at, version FROM sessions WHERE id = %s"
_LIST_SESSIONS = (
    "SELECT id, user_id, title, created_at, updated_at, version FROM sessions WHERE user_id = %s"
    " ORDER BY updated_at DESC, id DESC LIMIT %s"
)
_LIST_SESSIONS_AFTER = (
    "SELECT id, user_id, title, created_at, updated_at, version FROM sessions"
    " WHERE user_id = %s AND (updated_at, id) < (%s, %s) ORDER BY updated_at DESC, id DESC LIMIT %s"
)
_HISTORY = (
    "SELECT * FROM (SELECT id, role, content, tool_calls, tool_call_id, name, usage, created_at, seq"
    " FROM messages WHERE session_id = %s ORDER BY seq DESC LIMIT %s) AS newest ORDER BY seq"
)
_LIST_MESSAGES = (
    "SELECT id, role, content, tool_calls, tool_call_id, name, usage, created_at, seq"
    " FROM messages WHERE session_id = %s AND seq > %s ORDER BY seq LIMIT %s"
)
_INSERT_MESSAGE = (
    "INSERT INTO messages (id, role, content, tool_calls, tool_call_id, name, usage,"
    " session_id, seq, created_at) VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s::jsonb, %s, %s, %s)"
)
_SELECT_KEYS = "SELECT id, prefix, hash, owner, name, scopes, created_at, last_used_at, revoked_at FROM api_keys"
_INSERT_KEY = (
    "INSERT INTO api_keys (id, prefix, hash, owner, name, scopes, created_at, last_used_at, revoked_at)"
    " VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s)"
)

_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, PoolClosed)


def _session(row: DictRow) -> Session:
    return Session(
        id=row["id"],
        user_id=row["user_id"],
        title=row["title"],
        created_at=codec.as_utc(row["created_at"]),
        updated_at=codec.as_utc(row["updated_at"]),
        version=row["version"],
    )


def _message(row: DictRow) -> Message:
    fields = {k: row[k] for k in ("id", "role", "content", "tool_calls", "tool_call_id", "name", "usage")}
    return codec.message_from(**fields, created_at=row["created_at"])


async def _owned(conn: Conn, session_id: str, user_id: str) -> DictRow:
    row = await (await conn.execute(_SELECT_SESSION, (session_id,))).fetchone()
    if row is None or row["user_id"] != user_id:
        raise codec.session_not_found(session_id)
    return row


class PostgresConversationStore:
    """``ConversationStore`` and ``ApiKeyStore`` in PostgreSQL, through an async connection pool.

    Args:
        dsn: A libpq connection string or ``postgresql://`` URL.
        min_size: Connections the pool keeps open.
        max_size: Connections the pool may open.
        pool_timeout_s: How long an operation waits for a free connection
            before it fails with ``StoreUnavailableError``.
    """

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10, pool_timeout_s: float = 5.0) -> None:
        self._pool = AsyncConnectionPool[Conn](
            dsn,
            connection_class=Conn,
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=min_size,
            max_size=max_size,
            timeout=pool_timeout_s,
            open=False,
            # Discards connections broken while idle (e.g. by a database restart).
            check=AsyncConnectionPool.check_connection,
            name="conversation-store",
        )
        self._ready = False
        self._preparing: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        """A pooled connection (autocommit) with the schema migrated; failures → StoreUnavailableError."""
        try:
            if not self._ready:
                await self._prepare()
            async with self._pool.connection() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            logger.warning("conversation store (postgres) unavailable: %s: %s", type(exc).__name__, exc)
            raise StoreUnavailableError("the conversation store is unavailable", retry_after=1.0) from exc

    async def _prepare(self) -> None:
        # NOTE: the pool opens without waiting, so a database that is down at
        # start leaves a store that works as soon as it is back: migrations are
        # retried by the next operation until they succeed once. Concurrent
        # callers share one attempt, so an outage costs each at most one timeout.
        task = self._preparing
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._preparing = asyncio.create_task(self._migrate())
        await asyncio.shield(task)

    async def _migrate(self) -> None:
        await self._pool.open(wait=False)
        async with self._pool.connection() as conn, conn.transaction():
            for migration in await migrate_postgres(conn):
                logger.info("conversation store (postgres): applied schema version %d", migration.version)
        self._ready = True

    async def setup(self) -> None:
        """Open the pool and apply pending migrations (replicas serialise on an advisory lock).

        Raises:
            StoreUnavailableError: the database cannot be reached now; the store
                stays usable and migrates on first use once it can.
            SchemaVersionError: the database is newer than this code.
        """
        async with self._connection():
            pass

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.execute("SELECT 1")

    async def get_or_create_session(self, session_id: str | None, user_id: str) -> Session:
        async with self._connection() as conn:
            row = await (await conn.execute(_SELECT_SESSION, (session_id,))).fetchone() if session_id else None
            if row is None:
                session_id = session_id or new_id("ses")
                now = utcnow()
                await conn.execute(
                    "INSERT INTO sessions (id, user_id, title, created_at, updated_at)"
                    " VALUES (%s, %s, NULL, %s, %s) ON CONFLICT (id) DO NOTHING",
                    (session_id, user_id, now, now),
                )
                row = await (await conn.execute(_SELECT_SESSION, (session_id,))).fetchone()
            if row is None or row["user_id"] != user_id:
                raise codec.session_not_found(session_id or "")
            return _session(row)

    async def get_session(self, session_id: str, user_id: str) -> Session:
        async with self._connection() as conn:
            return _session(await _owned(conn, session_id, user_id))

    async def list_sessions(self, user_id: str, limit: int = 20, cursor: str | None = None) -> Page[Session]:
        codec.check_limit(limit)
        after = codec.parse_session_cursor(cursor) if cursor is not None else None
        async with self._connection() as conn:
            if after is None:
                cur = await conn.execute(_LIST_SESSIONS, (user_id, limit + 1))
            else:
                cur = await conn.execute(_LIST_SESSIONS_AFTER, (user_id, *after, limit + 1))
            rows = await cur.fetchall()
        items = [_session(r) for r in rows[:limit]]
        return Page(items=items, next_cursor=codec.session_cursor(items[-1]) if len(rows) > limit else None)

    async def delete_session(self, session_id: str, user_id: str) -> None:
        async with self._connection() as conn:
            cur = await conn.execute("DELETE FROM sessions WHERE id = %s AND user_id = %s", (session_id, user_id))
            if cur.rowcount == 0:
                raise codec.session_not_found(session_id)

    async def history(self, session_id: str, limit: int) -> list[Message]:
        if limit <= 0:
            return []
        async with self._connection() as conn:
            rows = await (await conn.execute(_HISTORY, (session_id, limit))).fetchall()
        return [_message(r) for r in rows]

    async def list_messages(
        self, session_id: str, user_id: str, limit: int = 50, cursor: str | None = None
    ) -> Page[Message]:
        codec.check_limit(limit)
        after = codec.parse_message_cursor(cursor) if cursor is not None else 0
        async with self._connection() as conn:
            await _owned(conn, session_id, user_id)
            rows = await (await conn.execute(_LIST_MESSAGES, (session_id, after, limit + 1))).fetchall()
        more = len(rows) > limit
        return Page(
            items=[_message(r) for r in rows[:limit]],
            next_cursor=codec.message_cursor(rows[limit - 1]["seq"]) if more else None,
        )

    async def append(self, session_id: str, messages: list[Message], turn: TurnRecord | None = None) -> int:
        if turn is not None and turn.session_id != session_id:
            raise ValueError("turn.session_id differs from session_id")
        now = utcnow()
        async with self._connection() as conn, conn.transaction():
            # NOTE: the UPDATE locks the session row until commit, so concurrent
            # appends to one session serialise and their seq numbers never collide.
            updated = await (
                await conn.execute(
                    "UPDATE sessions SET updated_at = %s, version = version + 1,"
                    " title = COALESCE(NULLIF(title, ''), %s) WHERE id = %s RETURNING version",
                    (now, codec.title_from(messages), session_id),
                )
            ).fetchone()
            if updated is None:
                raise codec.session_not_found(session_id)
            if turn is not None:
                cur = await conn.execute(
                    "INSERT INTO turns (user_id, idempotency_key, session_id, response, created_at)"
                    " VALUES (%s, %s, %s, %s::jsonb, %s) ON CONFLICT DO NOTHING",
                    (turn.user_id, turn.idempotency_key, session_id, turn.response.model_dump_json(), now),
                )
                if cur.rowcount == 0:
                    raise ConflictError("idempotency key already used", field="idempotency_key")
            row = await (
                await conn.execute(
                    "SELECT COALESCE(MAX(seq), 0) AS seq FROM messages WHERE session_id = %s", (session_id,)
                )
            ).fetchone()
            seq = row["seq"] if row else 0
            rows = [
                (*codec.message_values(m), session_id, seq + i, codec.as_utc(m.created_at))
                for i, m in enumerate(messages, start=1)
            ]
            try:
                async with conn.cursor() as c:
                    await c.executemany(_INSERT_MESSAGE, rows)
            except psycopg.errors.UniqueViolation as exc:
                raise ConflictError("message id already stored") from exc
        return int(updated["version"])

    async def find_turn(self, user_id: str, idempotency_key: str) -> TurnRecord | None:
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT session_id, response FROM turns WHERE user_id = %s AND idempotency_key = %s",
                (user_id, idempotency_key),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return TurnRecord(
            user_id=user_id,
            idempotency_key=idempotency_key,
            session_id=row["session_id"],
            response=ChatResponse.model_validate(row["response"]),
        )

    # ------------------------------------------------------------------ API keys

    async def create_api_key(self, record: ApiKeyRecord) -> None:
        async with self._connection() as conn:
            try:
                await conn.execute(_INSERT_KEY, codec.api_key_values(record, codec.as_utc))
            except psycopg.errors.UniqueViolation as exc:
                raise ConflictError("API key id or prefix already stored") from exc

    async def get_api_key_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        async with self._connection() as conn:
            row = await (await conn.execute(_SELECT_KEYS + " WHERE prefix = %s", (prefix,))).fetchone()
        return codec.api_key_from(row) if row is not None else None

    async def list_api_keys(self, owner: str | None = None) -> list[ApiKeyRecord]:
        sql = _SELECT_KEYS + " WHERE %s::text IS NULL OR owner = %s ORDER BY created_at, id"
        async with self._connection() as conn:
            rows = await (await conn.execute(sql, (owner, owner))).fetchall()
        return [codec.api_key_from(r) for r in rows]

    async def revoke_api_key(self, key_id: str) -> None:
        sql = "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, %s) WHERE id = %s"
        async with self._connection() as conn:
            cur = await conn.execute(sql, (utcnow(), key_id))
            if cur.rowcount == 0:
                raise codec.api_key_not_found(key_id)

    async def touch_api_key(self, key_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute("UPDATE api_keys SET last_used_at = %s WHERE id = %s", (utcnow(), key_id))
