"""The ``ApiKeyStore`` contract, on every conversation store (in-memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.errors import ConflictError, NotFoundError
from agent.keys import ApiKeyRecord, ApiKeyStore
from agent.ports import ConversationStore
from memory.migrations import LATEST_VERSION, MIGRATIONS
from memory.postgres_store import PostgresConversationStore
from memory.sqlite_store import SqliteConversationStore
from tests.contract.conftest import pg_fetch


@pytest.fixture
def keys(store: ConversationStore, request: pytest.FixtureRequest) -> ApiKeyStore:
    """The store under test as an ``ApiKeyStore``, with no keys."""
    if isinstance(store, PostgresConversationStore):
        # the shared test database outlives a test; the store fixture truncates only its own tables
        pg_fetch(request.getfixturevalue("pg_dsn"), "TRUNCATE api_keys")
    assert isinstance(store, ApiKeyStore)
    return store


def record(prefix: str, owner: str = "alice", **kw: object) -> ApiKeyRecord:
    digest = hashlib.sha256(f"as_{prefix}_secret".encode()).hexdigest()
    return ApiKeyRecord.model_validate({"prefix": prefix, "key_hash": digest, "owner": owner, "name": "n", **kw})


async def test_a_created_key_is_found_by_its_prefix(keys: ApiKeyStore) -> None:
    made = record("abcd1234", scopes=["memory", "chat", "chat"], name="laptop")
    await keys.create_api_key(made)
    found = await keys.get_api_key_by_prefix("abcd1234")
    assert found == made
    assert found.scopes == ["chat", "memory"]
    assert found.created_at.tzinfo is not None
    assert found.last_used_at is None and found.revoked_at is None and not found.revoked


async def test_an_unknown_prefix_is_none(keys: ApiKeyStore) -> None:
    await keys.create_api_key(record("abcd1234"))
    assert await keys.get_api_key_by_prefix("zzzz9999") is None
    assert await keys.get_api_key_by_prefix("abcd123") is None  # no partial matches


async def test_prefix_and_id_are_unique(keys: ApiKeyStore) -> None:
    first = record("abcd1234")
    await keys.create_api_key(first)
    with pytest.raises(ConflictError):
        await keys.create_api_key(record("abcd1234", owner="bob"))
    with pytest.raises(ConflictError):
        await keys.create_api_key(record("other123", id=first.id))
    assert [k.id for k in await keys.list_api_keys()] == [first.id]


async def test_list_is_oldest_first_and_filters_by_owner(keys: ApiKeyStore) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    a1 = record("aaaa0001", owner="alice", created_at=t0 + timedelta(seconds=2))
    b1 = record("bbbb0001", owner="bob", created_at=t0 + timedelta(seconds=1))
    a2 = record("aaaa0002", owner="alice", created_at=t0 + timedelta(seconds=3))
    for r in (a1, b1, a2):
        await keys.create_api_key(r)
    assert [k.prefix for k in await keys.list_api_keys()] == ["bbbb0001", "aaaa0001", "aaaa0002"]
    assert [k.prefix for k in await keys.list_api_keys("alice")] == ["aaaa0001", "aaaa0002"]
    assert await keys.list_api_keys("carol") == []
    listed = (await keys.list_api_keys("bob"))[0]
    assert listed == b1 and listed.created_at == t0 + timedelta(seconds=1)


async def test_revoke_marks_the_key_and_keeps_the_first_time(keys: ApiKeyStore) -> None:
    made = record("abcd1234")
    await keys.create_api_key(made)
    await keys.revoke_api_key(made.id)
    first = await keys.get_api_key_by_prefix("abcd1234")
    assert first is not None and first.revoked and first.revoked_at is not None
    await asyncio.sleep(0.002)
    await keys.revoke_api_key(made.id)
    again = await keys.get_api_key_by_prefix("abcd1234")
    assert again is not None and again.revoked_at == first.revoked_at
    assert (await keys.list_api_keys())[0].revoked  # revoked keys stay listed


async def test_revoking_an_unknown_key_is_not_found(keys: ApiKeyStore) -> None:
    with pytest.raises(NotFoundError):
        await keys.revoke_api_key("key_missing")


async def test_touch_sets_last_used(keys: ApiKeyStore) -> None:
    made = record("abcd1234")
    await keys.create_api_key(made)
    before = datetime.now(UTC) - timedelta(seconds=1)
    await keys.touch_api_key(made.id)
    found = await keys.get_api_key_by_prefix("abcd1234")
    assert found is not None and found.last_used_at is not None and found.last_used_at >= before
    await keys.touch_api_key("key_missing")  # a key gone meanwhile: nothing to do, no error


async def test_records_are_copies(keys: ApiKeyStore) -> None:
    made = record("abcd1234", scopes=["chat"])
    await keys.create_api_key(made)
    made.scopes.append("admin")
    found = await keys.get_api_key_by_prefix("abcd1234")
    assert found is not None and found.scopes == ["chat"]
    found.scopes.append("admin")
    again = await keys.get_api_key_by_prefix("abcd1234")
    assert again is not None and again.scopes == ["chat"]


# ---------------------------------------------------------------- migration from version 1


def _apply_v1_sqlite(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        for statement in MIGRATIONS[0].sqlite:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (1, '2025-01-01T00:00:00.000000Z')")
        conn.execute(
            "INSERT INTO sessions VALUES ('ses_old', 'alice', 't', '2025-01-01T00:00:00.000000Z',"
            " '2025-01-01T00:00:00.000000Z')"
        )


async def test_a_version_1_sqlite_database_gains_api_keys_and_keeps_its_sessions(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _apply_v1_sqlite(path)
    store = SqliteConversationStore(str(path))
    try:
        await store.setup()
        assert (await store.get_session("ses_old", "alice")).title == "t"
        await store.create_api_key(record("abcd1234"))
        assert await store.get_api_key_by_prefix("abcd1234") is not None
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == list(range(1, LATEST_VERSION + 1))


@pytest.mark.postgres
async def test_a_version_1_postgres_database_gains_api_keys(fresh_pg_dsn: str) -> None:
    pg_fetch(fresh_pg_dsn, "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)")
    for statement in MIGRATIONS[0].postgres:
        pg_fetch(fresh_pg_dsn, statement)
    pg_fetch(fresh_pg_dsn, "INSERT INTO schema_migrations VALUES (1, now())")
    pg_fetch(fresh_pg_dsn, "INSERT INTO sessions VALUES ('ses_old', 'alice', 't', now(), now())")
    store = PostgresConversationStore(fresh_pg_dsn, max_size=2)
    try:
        await store.setup()
        assert (await store.get_session("ses_old", "alice")).title == "t"
        await store.create_api_key(record("abcd1234"))
        assert await store.get_api_key_by_prefix("abcd1234") is not None
    finally:
        await store.close()
    rows = pg_fetch(fresh_pg_dsn, "SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, LATEST_VERSION + 1))
