"""The ConversationStore contract, run on every implementation, then each backend's own duties."""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from agent.dto import ChatResponse, Message, Role, ToolCall, ToolCallRecord, Usage
from agent.errors import ConflictError, InvalidRequestError, NotFoundError, StoreUnavailableError
from agent.ports import ConversationStore, TurnRecord
from memory.factory import build_conversation_store
from memory.in_memory import InMemoryConversationStore
from memory.migrations import LATEST_VERSION, SchemaVersionError
from memory.postgres_store import PostgresConversationStore
from memory.sqlite_store import SqliteConversationStore
from tests.contract.conftest import pg_fetch

SPAWN = multiprocessing.get_context("spawn")


def user(text: str) -> Message:
    return Message(role=Role.USER, content=text)


def turn_for(session_id: str, key: str, user_id: str = "alice", text: str = "hi") -> TurnRecord:
    response = ChatResponse(
        response=text,
        session_id=session_id,
        message_id="msg_1",
        tool_calls=[ToolCallRecord(id="c1", name="calculator", arguments='{"x": 1}', result="1")],
        usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
    )
    return TurnRecord(user_id=user_id, idempotency_key=key, session_id=session_id, response=response)


# ---------------------------------------------------------------- sessions


async def test_new_session_gets_an_id_and_utc_timestamps(store: ConversationStore) -> None:
    s = await store.get_or_create_session(None, "alice")
    assert s.id.startswith("ses_") and s.user_id == "alice" and s.title is None
    assert s.created_at.utcoffset() == timedelta(0) and s.updated_at.utcoffset() == timedelta(0)
    assert await store.get_session(s.id, "alice") == s
    assert isinstance(store, ConversationStore)


async def test_session_with_a_chosen_id_is_created_once(store: ConversationStore) -> None:
    first = await store.get_or_create_session("ses_mine", "alice")
    again = await store.get_or_create_session("ses_mine", "alice")
    assert first.id == again.id == "ses_mine"
    assert [s.id for s in (await store.list_sessions("alice")).items] == ["ses_mine"]


async def test_another_users_session_is_not_found_like_a_missing_one(store: ConversationStore) -> None:
    s = await store.get_or_create_session(None, "alice")
    await store.append(s.id, [user("secret")])
    calls: dict[str, Callable[[str], Awaitable[object]]] = {
        "get_or_create": lambda sid: store.get_or_create_session(sid, "mallory"),
        "get": lambda sid: store.get_session(sid, "mallory"),
        "delete": lambda sid: store.delete_session(sid, "mallory"),
        "list_messages": lambda sid: store.list_messages(sid, "mallory"),
    }
    with pytest.raises(NotFoundError) as missing:
        await store.get_session("ses_missing", "alice")
    expected = str(missing.value).replace("ses_missing", "X")
    for name, call in calls.items():
        with pytest.raises(NotFoundError) as theirs:
            await call(s.id)
        assert str(theirs.value).replace(s.id, "X") == expected, name
    assert [m.content for m in await store.history(s.id, 10)] == ["secret"]


async def test_sessions_are_listed_newest_update_first_in_pages(store: ConversationStore) -> None:
    ids = [(await store.get_or_create_session(None, "alice")).id for _ in range(7)]
    await store.get_or_create_session(None, "bob")
    await store.append(ids[0], [user("bump")])  # the oldest becomes the most recent
    seen, cursor, pages = [], None, 0
    while True:
        page = await store.list_sessions("alice", limit=3, cursor=cursor)
        seen += page.items
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3 and len(seen) == 7 and len({s.id for s in seen}) == 7
    assert seen[0].id == ids[0]
    assert [(s.updated_at, s.id) for s in seen] == sorted(((s.updated_at, s.id) for s in seen), reverse=True)
    assert (await store.list_sessions("alice", limit=7)).next_cursor is None


async def test_a_bad_cursor_or_limit_is_an_invalid_request(store: ConversationStore) -> None:
    s = await store.get_or_create_session(None, "alice")
    for bad in ("not-a-cursor", "W10", "WyJ4IiwieSJd"):  # garbage, [], ["x","y"]
        with pytest.raises(InvalidRequestError):
            await store.list_sessions("alice", cursor=bad)
        with pytest.raises(InvalidRequestError):
            await store.list_messages(s.id, "alice", cursor=bad)
    with pytest.raises(InvalidRequestError):
        await store.list_sessions("alice", limit=0)


async def test_delete_session_removes_its_messages_and_turns(store: ConversationStore) -> None:
    gone = await store.get_or_create_session(None, "alice")
    kept = await store.get_or_create_session(None, "alice")
    await store.append(gone.id, [user("a")], turn=turn_for(gone.id, "k1"))
    await store.append(kept.id, [user("b")], turn=turn_for(kept.id, "k2"))
    await store.delete_session(gone.id, "alice")
    with pytest.raises(NotFoundError):
        await store.get_session(gone.id, "alice")
    assert await store.history(gone.id, 10) == []
    assert await store.find_turn("alice", "k1") is None
    assert await store.find_turn("alice", "k2") is not None
    assert [m.content for m in await store.history(kept.id, 10)] == ["b"]
    # The key of a deleted turn may be used again.
    again = await store.get_or_create_session(None, "alice")
    await store.append(again.id, [user("c")], turn=turn_for(again.id, "k1"))


# ---------------------------------------------------------------- messages


async def test_messages_round_trip_exactly_in_insertion_order(store: ConversationStore) -> None:
    s = await store.get_or_create_session(None, "alice")
    later = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    sent = [
        Message(role=Role.SYSTEM, content="be brief", created_at=later),
        user("what is 2+2?"),
        Message(
            role=Role.ASSISTANT,
            content=None,
            tool_calls=[ToolCall(id="c1", name="calculator", arguments='{"expression": "2+2"}')],
            usage=Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
            created_at=later - timedelta(days=400),  # order is insertion, not time
        ),
        Message(role=Role.TOOL, content="4", tool_call_id="c1", name="calculator"),
        Message(role=Role.ASSISTANT, content="4 — «ünïcode» 🚀", usage=Usage()),
    ]
    await store.append(s.id, sent[:2])
    await store.append(s.id, sent[2:])
    got = await store.history(s.id, 100)
    assert got == sent
    assert all(m.created_at.utcoffset() == timedelta(0) for m in got)
    assert await store.history(s.id, 2) == sent[-2:]
    assert await store.history(s.id, 0) == []
    assert await store.history("ses_missing", 5) == []


async def test_list_messages_pages_oldest_first(store: ConversationStore) -> None:
    s = await store.get_or_create_session(None, "alice")
    sent = [user(f"m{i}") for i in range(7)]
    for m in sent:
        await store.append(s.id, [m])
    seen, cursor = [], None
    while True:
        page = await store.list_messages(s.id, "alice", limit=3, cursor=cursor)
        seen += page.items
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == sent
    assert (await store.list_messages(s.id, "alice", limit=7)).next_cursor is None


async def test_append_bumps_updated_at_and_titles_from_the_first_user_message(
    store: ConversationStore,
) -> None:
    s = await store.get_or_create_session(None, "alice")
    await store.append(s.id, [Message(role=Role.SYSTEM, content="system text")])
    assert (await store.get_session(s.id, "alice")).title is None
    long = "Plan   a trip\nto Lisbon " + "with many details " * 10
    await store.append(s.id, [Message(role=Role.ASSISTANT, content="hello"), user(long)])
    after = await store.get_session(s.id, "alice")
    assert after.updated_at > s.updated_at
    assert after.title is not None and after.title.startswith("Plan a trip to Lisbon with")
    assert "\n" not in after.title and len(after.title) <= 60
    await store.append(s.id, [user("another question")])
    assert (await store.get_session(s.id, "alice")).title == after.title


async def test_append_to_a_missing_session_is_not_found(store: ConversationStore) -> None:
    with pytest.raises(NotFoundError):
        await store.append("ses_missing", [user("x")])


async def test_a_message_id_stored_twice_conflicts_and_writes_nothing(store: ConversationStore) -> None:
    s = await store.get_or_create_session(None, "alice")
    m = user("once")
    await store.append(s.id, [m])
    with pytest.raises(ConflictError):
        await store.append(s.id, [user("new"), m])
    assert [x.content for x in await store.history(s.id, 10)] == ["once"]


async def test_concurrent_appends_to_one_session_keep_each_batch_whole(store: ConversationStore) -> None:
    s = await store.get_or_create_session(None, "alice")
    batches = [[user(f"b{b}-{i}") for i in range(3)] for b in range(10)]
    await asyncio.gather(*(store.append(s.id, batch) for batch in batches))
    got = [m.content for m in await store.history(s.id, 100)]
    assert sorted(got) == sorted(m.content for batch in batches for m in batch)  # type: ignore[type-var]
    for i in range(0, 30, 3):
        assert len({c.split("-")[0] for c in got[i : i + 3] if c}) == 1


# ---------------------------------------------------------------- turns


async def test_a_turn_round_trips_and_is_found_only_by_its_owner(store: ConversationStore) -> None:
    s = await store.get_or_create_session(None, "alice")
    turn = turn_for(s.id, "idem-1")
    await store.append(s.id, [user("q"), Message(role=Role.ASSISTANT, content="a")], turn=turn)
    assert await store.find_turn("alice", "idem-1") == turn
    assert await store.find_turn("bob", "idem-1") is None
    assert await store.find_turn("alice", "idem-2") is None


async def test_a_reused_idempotency_key_conflicts_and_writes_nothing(store: ConversationStore) -> None:
    s = await store.get_or_create_session(None, "alice")
    await store.append(s.id, [user("first")], turn=turn_for(s.id, "idem"))
    before = await store.get_session(s.id, "alice")
    with pytest.raises(ConflictError):
        await store.append(s.id, [user("second")], turn=turn_for(s.id, "idem", text="other"))
    assert [m.content for m in await store.history(s.id, 10)] == ["first"]
    assert (await store.get_session(s.id, "alice")).updated_at == before.updated_at
    found = await store.find_turn("alice", "idem")
    assert found is not None and found.response.response == "hi"
    # The same key of another user is another turn.
    other = await store.get_or_create_session(None, "bob")
    await store.append(other.id, [user("x")], turn=turn_for(other.id, "idem", user_id="bob"))


# ---------------------------------------------------------------- SQLite across processes


def _append_in_process(path: str, session_id: str, worker: int, n: int, barrier: object) -> None:
    async def run() -> None:
        store = SqliteConversationStore(path)
        await store.setup()
        barrier.wait()  # type: ignore[attr-defined]
        for i in range(n):
            await store.append(session_id, [user(f"w{worker}-{i}")])
        await store.close()

    asyncio.run(run())


def _setup_in_process(url: str, barrier: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    asyncio.run(build_conversation_store(url, "/nonexistent").setup())


def _run_processes(target: Callable[..., None], args: list[tuple[object, ...]]) -> None:
    procs = [SPAWN.Process(target=target, args=a) for a in args]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * len(procs), "a process failed (see its stderr above)"


async def test_sqlite_four_processes_append_to_one_file_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    store = SqliteConversationStore(path)
    s = await store.get_or_create_session(None, "alice")
    barrier = SPAWN.Barrier(4)
    await asyncio.to_thread(_run_processes, _append_in_process, [(path, s.id, w, 50, barrier) for w in range(4)])
    got = [m.content or "" for m in await store.history(s.id, 1000)]
    assert len(got) == 200 and len(set(got)) == 200
    for w in range(4):  # each process's messages in the order it wrote them
        assert [c for c in got if c.startswith(f"w{w}-")] == [f"w{w}-{i}" for i in range(50)]
    await store.close()


async def test_sqlite_uses_wal_and_creates_the_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store.db"
    store = SqliteConversationStore(str(path))
    await store.setup()
    await store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ---------------------------------------------------------------- migrations (SQLite and PostgreSQL)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Callable[[str], list[tuple[object, ...]]]]:
    """(DATABASE_URL of an empty database, a function running SQL on it)."""
    if request.param == "sqlite":
        path = tmp_path / "fresh.db"

        def fetch(query: str) -> list[tuple[object, ...]]:
            with closing(sqlite3.connect(path)) as conn, conn:
                return conn.execute(query).fetchall()

        return f"sqlite://{path}", fetch
    dsn = request.getfixturevalue("fresh_pg_dsn")
    return dsn, lambda query: pg_fetch(dsn, query)


async def test_setup_twice_is_a_no_op(
    fresh_db: tuple[str, Callable[[str], list[tuple[object, ...]]]],
) -> None:
    url, fetch = fresh_db
    store = build_conversation_store(url, "/nonexistent")
    await store.setup()
    s = await store.get_or_create_session(None, "alice")
    await store.close()
    store = build_conversation_store(url, "/nonexistent")
    await store.setup()
    await store.setup()
    assert await store.get_session(s.id, "alice") == s
    await store.close()
    assert [r[0] for r in fetch("SELECT version FROM schema_migrations ORDER BY version")] == list(
        range(1, LATEST_VERSION + 1)
    )


async def test_a_database_newer_than_the_code_is_refused(
    fresh_db: tuple[str, Callable[[str], list[tuple[object, ...]]]],
) -> None:
    url, fetch = fresh_db
    store = build_conversation_store(url, "/nonexistent")
    await store.setup()
    await store.close()
    fetch(f"INSERT INTO schema_migrations (version, applied_at) VALUES ({LATEST_VERSION + 1}, '2030-01-01')")
    store = build_conversation_store(url, "/nonexistent")
    with pytest.raises(SchemaVersionError, match=f"version {LATEST_VERSION + 1}, newer"):
        await store.setup()
    await store.close()


async def test_replicas_starting_at_once_migrate_once(
    fresh_db: tuple[str, Callable[[str], list[tuple[object, ...]]]],
) -> None:
    url, fetch = fresh_db
    barrier = SPAWN.Barrier(4)
    await asyncio.to_thread(_run_processes, _setup_in_process, [(url, barrier)] * 4)
    assert fetch("SELECT COUNT(*), MAX(version) FROM schema_migrations") == [(LATEST_VERSION, LATEST_VERSION)]


# ---------------------------------------------------------------- PostgreSQL failures


@pytest.mark.postgres
async def test_postgres_full_pool_fails_with_store_unavailable(pg_dsn: str) -> None:
    store = PostgresConversationStore(pg_dsn, max_size=1, pool_timeout_s=0.3)
    await store.setup()
    async with store._pool.connection():  # hold the only connection
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await store.get_or_create_session(None, "alice")
        assert 0.25 <= time.monotonic() - started < 3
    await store.get_or_create_session(None, "alice")  # the pool serves again
    await store.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.postgres
async def test_postgres_unreachable_is_store_unavailable_without_the_password() -> None:
    store = PostgresConversationStore(
        f"postgresql://agent:hunter2secret@127.0.0.1:{_closed_port()}/agentserve", pool_timeout_s=0.3
    )
    for call in (
        store.setup,
        lambda: store.get_or_create_session(None, "alice"),
        lambda: store.history("s", 5),
    ):
        with pytest.raises(StoreUnavailableError) as err:
            await call()
        assert "hunter2secret" not in str(err.value)
    started = time.monotonic()  # concurrent calls share one attempt: one timeout, not five
    results = await asyncio.gather(*(store.history("s", 1) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, StoreUnavailableError) for r in results)
    assert time.monotonic() - started < 1.2
    await store.close()


@pytest.mark.postgres
async def test_postgres_store_works_once_the_database_appears_after_a_failed_setup(
    pg_admin_dsn: str, make_pg_database: Callable[[], str]
) -> None:
    dsn = make_pg_database()
    name = str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
    store = PostgresConversationStore(dsn, pool_timeout_s=0.5)
    with pytest.raises(StoreUnavailableError):
        await store.setup()
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    deadline = time.monotonic() + 30
    while True:  # the pool retries connecting with backoff; migrations run on first use
        try:
            s = await store.get_or_create_session(None, "alice")
            break
        except StoreUnavailableError:
            assert time.monotonic() < deadline, "the store never recovered"
            await asyncio.sleep(0.2)
    assert (await store.get_session(s.id, "alice")).id == s.id
    await store.close()


@pytest.mark.postgres
async def test_postgres_replaces_connections_the_server_dropped(fresh_pg_dsn: str, pg_admin_dsn: str) -> None:
    store = PostgresConversationStore(fresh_pg_dsn, min_size=2, max_size=2)
    s = await store.get_or_create_session(None, "alice")  # no setup(): migrated on first use
    dbname = psycopg.conninfo.conninfo_to_dict(fresh_pg_dsn)["dbname"]
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
    for _ in range(3):  # every pooled connection was dropped, yet no call fails
        assert (await store.get_session(s.id, "alice")).id == s.id
    await store.close()


# ---------------------------------------------------------------- factory


def test_factory_picks_the_store_from_database_url(tmp_path: Path) -> None:
    default = build_conversation_store(None, str(tmp_path))
    assert isinstance(default, SqliteConversationStore)
    assert default.path == str(tmp_path / "agentserve.db")
    assert isinstance(build_conversation_store("sqlite:///var/lib/a.db", "x"), SqliteConversationStore)
    assert build_conversation_store("sqlite:///var/lib/a.db", "x").path == "/var/lib/a.db"  # type: ignore[attr-defined]
    for url in ("postgresql://u:p@db:5432/app", "postgres://u@db/app"):
        assert isinstance(build_conversation_store(url, "x"), PostgresConversationStore)
    assert not isinstance(build_conversation_store(None, "x"), InMemoryConversationStore)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:hunter2secret@db/app",
        "hunter2secret",
        "sqlite://hunter2secret@host/x.db",
        "redis://:hunter2secret@r",
    ],
)
def test_factory_refuses_other_urls_without_echoing_them(url: str) -> None:
    with pytest.raises(ValueError, match="DATABASE_URL") as err:
        build_conversation_store(url, "x")
    assert "hunter2secret" not in str(err.value)
