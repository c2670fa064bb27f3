"""Backup and restore on the real stores: SQLite files, PostgreSQL databases, LanceDB directories.

Every round trip fills a store through its public API, backs it up, restores it
into a fresh database and directory, and compares all of it; refused archives
and targets must leave the target exactly as it was.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import tarfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import psycopg
import pytest

from agent.dto import ChatResponse, Message, Role, ToolCall, ToolCallRecord, Usage
from agent.keys import ApiKeyRecord
from agent.ports import MemoryItem, TurnRecord
from memory.backup import (
    BackupError,
    PostgresLocation,
    SqliteLocation,
    StoreLocation,
    create_backup,
    restore_backup,
    verify_backup,
)
from memory.lance_memory import LanceVectorMemory
from memory.migrations import LATEST_VERSION
from memory.postgres_store import PostgresConversationStore
from memory.sqlite_store import SqliteConversationStore
from serve_app.cli import main
from tests.support.fake_embedder import HashingEmbedder

TABLES = ("sessions", "messages", "turns", "api_keys")
USERS = ("alice", "bob", "o'brien")
QUERIES = ("the weather in paris", "calculator result", "note about travel plans")
MakeLocation = Callable[[str], StoreLocation]


@pytest.fixture
def make_location(tmp_path: Path, request: pytest.FixtureRequest) -> MakeLocation:
    """A fresh, empty store location of a kind: a new SQLite file or a new PostgreSQL database."""
    made = 0

    def make(kind: str) -> StoreLocation:
        nonlocal made
        made += 1
        if kind == "sqlite":
            return SqliteLocation(str(tmp_path / f"store{made}.db"))
        return PostgresLocation(request.getfixturevalue("make_pg_database")())

    return make


@asynccontextmanager
async def opened(location: StoreLocation) -> AsyncIterator[SqliteConversationStore | PostgresConversationStore]:
    store: SqliteConversationStore | PostgresConversationStore
    if isinstance(location, SqliteLocation):
        store = SqliteConversationStore(location.path)
    else:
        store = PostgresConversationStore(location.dsn, max_size=4)
    await store.setup()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def vector_memory(uri: Path, **kwargs: Any) -> AsyncIterator[LanceVectorMemory]:
    memory = LanceVectorMemory(str(uri), **kwargs)
    await memory.setup()
    try:
        yield memory
    finally:
        await memory.close()


async def remember(memory: LanceVectorMemory, user: str, texts: list[str], session_id: str | None = None) -> None:
    items = [MemoryItem(user_id=user, session_id=session_id, text=t) for t in texts]
    await memory.add(items, await HashingEmbedder().embed(texts))


async def fill(location: StoreLocation, lance_uri: Path) -> None:
    """Sessions, messages with tool calls and usage, turns, API keys and memories, through the real stores."""
    async with opened(location) as store, vector_memory(lance_uri) as memory:
        for u, user in enumerate(USERS):
            for s in range(2):
                session = await store.get_or_create_session(None, user)
                call = ToolCall(id=f"call_{u}{s}", name="calculator", arguments='{"expression": "17*23"}')
                await store.append(session.id, [
                    Message(role=Role.USER, content=f"What is the weather in Paris, {user}? ünïcode ✓"),
                    Message(role=Role.ASSISTANT, tool_calls=[call], usage=Usage(prompt_tokens=9, total_tokens=9)),
                    Message(role=Role.TOOL, tool_call_id=call.id, name="calculator", content="391"),
                ])  # fmt: skip
                reply = Message(role=Role.ASSISTANT, content="The calculator result is 391.")
                response = ChatResponse(
                    response=reply.content or "", session_id=session.id, message_id=reply.id,
                    tool_calls=[ToolCallRecord(id=call.id, name="calculator", arguments=call.arguments, result="391")],
                    usage=Usage(prompt_tokens=20, completion_tokens=5, total_tokens=25),
                )  # fmt: skip
                turn = TurnRecord(user_id=user, idempotency_key=f"idem-{s}", session_id=session.id, response=response)
                await store.append(session.id, [Message(role=Role.USER, content="and now?"), reply], turn)
                await remember(memory, user, [f"{user} asked about the weather in paris {s}"], session.id)
            await remember(memory, user, [f"note about travel plans of {user}", f"{user} likes the calculator"])
            key = ApiKeyRecord(prefix=f"pre{u}", key_hash=f"{u}" * 64, owner=user, name="ci", scopes=["chat", "memory"])
            await store.create_api_key(key)
            await store.touch_api_key(key.id)
        first = (await store.list_api_keys("alice"))[0]
        await store.revoke_api_key(first.id)


async def dump(location: StoreLocation, lance_uri: Path) -> dict[str, Any]:
    """Everything, read back through the stores' public APIs."""
    out: dict[str, Any] = {}
    async with opened(location) as store, vector_memory(lance_uri) as memory:
        embedder = HashingEmbedder()
        for user in [*USERS, "writer"]:
            sessions, cursor = [], None
            while True:
                page = await store.list_sessions(user, limit=2, cursor=cursor)
                sessions += page.items
                if (cursor := page.next_cursor) is None:
                    break
            for session in sessions:
                messages = (await store.list_messages(session.id, user, limit=500)).items
                out[f"messages/{session.id}"] = [m.model_dump() for m in messages]
            out[f"sessions/{user}"] = [s.model_dump() for s in sessions]
            out[f"turns/{user}"] = [
                t.model_dump() if (t := await store.find_turn(user, f"idem-{i}")) else None for i in range(2)
            ]
            out[f"memories/{user}"] = await memory.count(user)
            for query in QUERIES:
                hits = await memory.search(user, (await embedder.embed([query]))[0], k=3)
                out[f"search/{user}/{query}"] = [(h.item.model_dump(), round(h.score, 5)) for h in hits]
        out["api_keys"] = [k.model_dump() for k in await store.list_api_keys()]
    return out


def raw(location: StoreLocation, query: str) -> list[tuple[Any, ...]]:
    if isinstance(location, SqliteLocation):
        with sqlite3.connect(location.path) as conn:
            return conn.execute(query).fetchall()
    with psycopg.connect(location.dsn, autocommit=True) as pg:
        return pg.execute(query).fetchall()


def counts(location: StoreLocation) -> dict[str, int]:
    return {t: int(raw(location, f"SELECT COUNT(*) FROM {t}")[0][0]) for t in TABLES}


def is_untouched(location: StoreLocation, lance_uri: Path) -> bool:
    """No database file or no table at all, and no LanceDB directory."""
    if isinstance(location, SqliteLocation):
        sql_empty = not Path(location.path).exists()
    else:
        sql_empty = raw(location, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'")[0][
            0] == 0  # fmt: skip
    return sql_empty and not lance_uri.exists()


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("source", "target"),
    [("sqlite", "sqlite"), pytest.param("postgres", "postgres", marks=pytest.mark.postgres),
     pytest.param("sqlite", "postgres", marks=pytest.mark.postgres),
     pytest.param("postgres", "sqlite", marks=pytest.mark.postgres)],
)  # fmt: skip
async def test_round_trip_restores_everything(
    source: str, target: str, make_location: MakeLocation, tmp_path: Path
) -> None:
    src, dst = make_location(source), make_location(target)
    await fill(src, tmp_path / "lance-src")
    before = await dump(src, tmp_path / "lance-src")
    lines: list[str] = []

    manifest = await asyncio.to_thread(
        create_backup, tmp_path / "b.tar.gz", src, str(tmp_path / "lance-src"), progress=lines.append, progress_every=2
    )
    assert manifest.source == ("sqlite" if source == "sqlite" else "postgresql")
    assert manifest.schema_version == LATEST_VERSION and manifest.format_version == 1
    assert {"agentserve", "lancedb", "pyarrow", "python"} <= set(manifest.versions)
    assert {t: i.rows for t, i in manifest.tables.items()} == counts(src) == {
        "sessions": 6, "messages": 30, "turns": 6, "api_keys": 3}  # fmt: skip
    assert sorted(i.rows for i in manifest.vector_tables.values()) == [4, 4, 4]
    assert "messages: 2 rows" in lines and "messages: 30 rows backed up" in lines
    assert not any("@" in line for line in lines)  # no connection string

    restored = await asyncio.to_thread(restore_backup, tmp_path / "b.tar.gz", dst, str(tmp_path / "lance-dst"))
    assert restored == manifest
    assert counts(dst) == counts(src)
    assert raw(dst, "SELECT MAX(version) FROM schema_migrations")[0][0] == LATEST_VERSION
    after = await dump(dst, tmp_path / "lance-dst")
    assert after == before
    assert after["memories/alice"] == 4 and after["search/bob/the weather in paris"]
    assert after["api_keys"][0]["revoked_at"] is not None


async def test_the_vector_index_is_rebuilt_on_restore(make_location: MakeLocation, tmp_path: Path) -> None:
    src, dst = make_location("sqlite"), make_location("sqlite")
    async with opened(src), vector_memory(tmp_path / "lance-src", index_threshold=300) as memory:
        await remember(memory, "alice", [f"memory {i} about topic {i % 17} and item {i % 5}" for i in range(300)])
        await memory.wait_background()
        assert await memory.has_index("alice")
    manifest = await asyncio.to_thread(create_backup, tmp_path / "b.tar.gz", src, str(tmp_path / "lance-src"))
    assert [(i.rows, i.indexed) for i in manifest.vector_tables.values()] == [(300, True)]
    await asyncio.to_thread(restore_backup, tmp_path / "b.tar.gz", dst, str(tmp_path / "lance-dst"))
    embedder = HashingEmbedder()
    results = []
    for uri in (tmp_path / "lance-src", tmp_path / "lance-dst"):
        async with vector_memory(uri) as memory:
            assert await memory.has_index("alice") and await memory.count("alice") == 300
            hits = [await memory.search("alice", v, k=5) for v in await embedder.embed(["topic 3 item 2", "memory 42"])]
            results.append([[h.item.id for h in found] for found in hits])
    assert results[0] == results[1] and all(len(ids) == 5 for ids in results[0])


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_backup_while_writing_is_a_consistent_snapshot(
    kind: str, make_location: MakeLocation, tmp_path: Path
) -> None:
    src, dst = make_location(kind), make_location(kind)
    lance_src = tmp_path / "lance-src"
    loop = asyncio.get_running_loop()
    async with opened(src) as store, vector_memory(lance_src) as memory:
        stop, warmed = asyncio.Event(), asyncio.Event()
        sessions: list[str] = []

        async def turn(session_id: str | None, i: int) -> None:
            session = await store.get_or_create_session(session_id, "writer")
            sessions.append(session.id)
            await store.append(session.id, [Message(role=Role.USER, content=f"q{i}"),
                                            Message(role=Role.ASSISTANT, content=f"a{i}")])  # fmt: skip

        async def writer() -> None:
            i = 0
            while not stop.is_set():
                await turn(None if i % 3 == 0 else sessions[-1], i)
                i += 1
                if i == 6:
                    warmed.set()

        async def late_writes() -> None:
            await turn("ses_late", -1)
            await turn(sessions[0], -2)
            await remember(memory, "writer", ["a late memory"])

        def progress(line: str) -> None:
            # NOTE: after the sessions table is read, write more: a snapshot must not see any of it.
            if line.startswith("sessions:") and line.endswith("backed up"):
                asyncio.run_coroutine_threadsafe(late_writes(), loop).result()

        await remember(memory, "writer", ["an early memory", "another early memory"])
        task = asyncio.create_task(writer())
        await warmed.wait()
        manifest = await asyncio.to_thread(create_backup, tmp_path / "b.tar.gz", src, str(lance_src), progress=progress)
        stop.set()
        await task
        assert (await store.get_session("ses_late", "writer")).version >= 1  # the late writes happened

    await asyncio.to_thread(restore_backup, tmp_path / "b.tar.gz", dst, str(tmp_path / "lance-dst"))
    assert {t: i.rows for t, i in manifest.tables.items()} == counts(dst)
    assert manifest.tables["messages"].rows >= 12
    # Every message's session is there, and each session holds exactly two messages per write it counted.
    assert raw(dst, "SELECT COUNT(*) FROM messages m LEFT JOIN sessions s ON s.id = m.session_id"
                    " WHERE s.id IS NULL")[0][0] == 0  # fmt: skip
    balance = raw(dst, "SELECT s.id, s.version, COUNT(m.id) FROM sessions s"
                       " LEFT JOIN messages m ON m.session_id = s.id GROUP BY s.id, s.version")  # fmt: skip
    assert balance and all(n == 2 * version for _, version, n in balance)
    assert "ses_late" not in {row[0] for row in balance}
    async with vector_memory(tmp_path / "lance-dst") as restored:
        assert await restored.count("writer") == 2 == sum(i.rows for i in manifest.vector_tables.values())


# ---------------------------------------------------------------- refusals


def rewrite(src: Path, dst: Path, edit: Callable[[dict[str, bytes]], object]) -> None:
    """Copy an archive with its members edited (the checksums in the manifest left as they were)."""
    with tarfile.open(src, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    edit(members)
    with tarfile.open(dst, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def flip(members: dict[str, bytes]) -> None:
    data = bytearray(members["store/messages.jsonl"])
    data[len(data) // 2] ^= 0x01
    members["store/messages.jsonl"] = bytes(data)


def manifest_with(**changes: Any) -> Callable[[dict[str, bytes]], None]:
    def edit(members: dict[str, bytes]) -> None:
        members["manifest.json"] = json.dumps({**json.loads(members["manifest.json"]), **changes}).encode()

    return edit


def fewer_rows(members: dict[str, bytes]) -> None:
    manifest = json.loads(members["manifest.json"])
    manifest["tables"]["messages"]["rows"] = 29
    members["manifest.json"] = json.dumps(manifest).encode()


@pytest.fixture
async def archive(make_location: MakeLocation, tmp_path: Path) -> Path:
    src = make_location("sqlite")
    await fill(src, tmp_path / "lance-src")
    path = tmp_path / "good.tar.gz"
    await asyncio.to_thread(create_backup, path, src, str(tmp_path / "lance-src"))
    return path


def flip_raw_byte(good: Path, bad: Path) -> None:
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))


CORRUPTIONS: dict[str, tuple[Callable[[Path, Path], object], str]] = {
    "raw byte flipped": (flip_raw_byte, r"corrupt"),
    "truncated": (lambda good, bad: bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2]), r"truncated"),
    "member changed": (lambda good, bad: rewrite(good, bad, flip),
                       r"checksum of store/messages\.jsonl does not match the manifest \(the archive is corrupt\)"),
    "member removed": (lambda good, bad: rewrite(good, bad, lambda m: m.pop("store/turns.jsonl")),
                       r"\['store/turns\.jsonl'\] are missing or not in the manifest"),
    "manifest broken": (lambda good, bad: rewrite(good, bad, lambda m: m.update({"manifest.json": b'{"format": 1'})),
                        r"manifest\.json is invalid"),
    "newer schema": (lambda good, bad: rewrite(good, bad, manifest_with(schema_version=LATEST_VERSION + 1)),
                     rf"schema version {LATEST_VERSION + 1}, newer than the {LATEST_VERSION} this code knows"),
    "newer format": (lambda good, bad: rewrite(good, bad, manifest_with(format_version=2)),
                     r"archive format 2, newer than the 1 this code reads"),
    "path outside": (lambda good, bad: rewrite(good, bad, lambda m: m.update({"../evil.jsonl": b"{}"})),
                     r"unexpected member '\.\./evil\.jsonl'; not an agentserve backup"),
    "row count": (lambda good, bad: rewrite(good, bad, fewer_rows),
                  r"messages\.jsonl has 30 rows, the manifest says 29"),
    "not an archive": (lambda good, bad: bad.write_text("hello"), r"corrupt or truncated"),
}  # fmt: skip


# The archive is checked before any target is opened: PostgreSQL shows it for two kinds.
@pytest.mark.parametrize(
    ("corruption", "target"),
    [*((c, "sqlite") for c in CORRUPTIONS),
     *(pytest.param(c, "postgres", marks=pytest.mark.postgres) for c in ("member changed", "newer schema"))],
)  # fmt: skip
async def test_a_bad_archive_is_refused_and_the_target_left_untouched(
    corruption: str, target: str, archive: Path, make_location: MakeLocation, tmp_path: Path
) -> None:
    corrupt, message = CORRUPTIONS[corruption]
    bad = tmp_path / "bad.tar.gz"
    corrupt(archive, bad)
    dst, lance_dst = make_location(target), tmp_path / "lance-dst"
    with pytest.raises(BackupError, match=message):
        await asyncio.to_thread(restore_backup, bad, dst, str(lance_dst))
    with pytest.raises(BackupError, match=message):
        await asyncio.to_thread(verify_backup, bad)
    assert is_untouched(dst, lance_dst)


async def test_a_non_empty_target_is_refused_and_left_as_it_was(
    archive: Path, make_location: MakeLocation, tmp_path: Path
) -> None:
    store_full = make_location("sqlite")
    async with opened(store_full) as store:
        await store.get_or_create_session("ses_keep", "carol")
    with pytest.raises(BackupError, match=r"SQLite database .* is not empty \(rows in sessions\)"):
        await asyncio.to_thread(restore_backup, archive, store_full, str(tmp_path / "lance-a"))
    assert counts(store_full) == {"sessions": 1, "messages": 0, "turns": 0, "api_keys": 0}
    assert not (tmp_path / "lance-a").exists() or not list((tmp_path / "lance-a").iterdir())

    lance_full, empty = tmp_path / "lance-b", make_location("sqlite")
    async with vector_memory(lance_full) as memory:
        await remember(memory, "carol", ["keep me"])
    with pytest.raises(BackupError, match=r"vector memory at .*lance-b is not empty"):
        await asyncio.to_thread(restore_backup, archive, empty, str(lance_full))
    assert not Path(empty.path).exists()  # type: ignore[union-attr]
    async with vector_memory(lance_full) as memory:
        assert await memory.count("carol") == 1 and await memory.count("alice") == 0


async def test_a_set_up_but_empty_store_is_a_valid_target(
    archive: Path, make_location: MakeLocation, tmp_path: Path
) -> None:
    dst = make_location("sqlite")
    async with opened(dst):
        pass  # migrated, no rows: as a platform leaves it that started once
    manifest = await asyncio.to_thread(restore_backup, archive, dst, str(tmp_path / "lance-dst"))
    assert {t: i.rows for t, i in manifest.tables.items()} == counts(dst)
    assert raw(dst, "SELECT version FROM schema_migrations ORDER BY version") == [
        (v,) for v in range(1, LATEST_VERSION + 1)
    ]


@pytest.mark.postgres
async def test_a_non_empty_postgres_target_is_refused(
    archive: Path, make_location: MakeLocation, tmp_path: Path
) -> None:
    dst = make_location("postgres")
    async with opened(dst) as store:
        await store.create_api_key(ApiKeyRecord(prefix="keep", key_hash="f" * 64, owner="carol"))
    with pytest.raises(BackupError, match=r"PostgreSQL database is not empty \(rows in api_keys\)"):
        await asyncio.to_thread(restore_backup, archive, dst, str(tmp_path / "lance-dst"))
    assert counts(dst) == {"sessions": 0, "messages": 0, "turns": 0, "api_keys": 1}


async def test_a_backup_refuses_a_missing_store_and_an_existing_destination(
    archive: Path, make_location: MakeLocation, tmp_path: Path
) -> None:
    with pytest.raises(BackupError, match=r"no SQLite database at .*nothing\.db"):
        await asyncio.to_thread(create_backup, tmp_path / "x.tar.gz", SqliteLocation(str(tmp_path / "nothing.db")), "")
    before = archive.read_bytes()
    src = make_location("sqlite")
    async with opened(src):
        pass
    with pytest.raises(BackupError, match=r"good\.tar\.gz exists already"):
        await asyncio.to_thread(create_backup, archive, src, str(tmp_path / "lance-none"))
    assert archive.read_bytes() == before
    assert not list(tmp_path.glob("*.partial"))


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The store and vector memory in <tmp>/data, from the environment only (no .env file)."""
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "LANCEDB_URI", "AGENTSERVE_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AGENTSERVE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_the_cli_backs_up_and_restores_the_default_stores(
    cli_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = SqliteLocation(str(cli_env / "agentserve.db"))
    await fill(source, cli_env / "lancedb")
    archive = str(tmp_path / "b.tar.gz")

    code, out, err = await asyncio.to_thread(run, capsys, "backup", archive)
    assert code == 0 and out.startswith(f"backed up to {archive}: schema version {LATEST_VERSION} (sqlite)")
    assert "sessions 6, messages 30, turns 6, api_keys 3; 12 memories in 3 vector tables" in out
    assert "snapshot taken: sqlite" in err and "messages: 30 rows backed up" in err

    code, out, err = await asyncio.to_thread(run, capsys, "backup", archive)
    assert (code, out) == (2, "") and err == f"error: {archive} exists already (overwrite it with --force)\n"

    code, out, _ = await asyncio.to_thread(run, capsys, "restore", "--verify-only", archive)
    assert code == 0 and out.startswith(f"{archive} is intact: schema version {LATEST_VERSION}")

    restored = tmp_path / "restored"
    code, out, err = await asyncio.to_thread(run, capsys, "restore", archive, "--data-dir", str(restored), "-q")
    assert code == 0 and out.startswith(f"restored {archive}:") and err == ""
    assert await dump(SqliteLocation(str(restored / "agentserve.db")), restored / "lancedb") == await dump(
        source, cli_env / "lancedb"
    )

    code, out, err = await asyncio.to_thread(run, capsys, "restore", archive, "--data-dir", str(restored))
    assert code == 2 and f"{restored / 'lancedb'} is not empty; restore needs an empty target" in err
    assert "Traceback" not in err

    flip_raw_byte(Path(archive), tmp_path / "bad.tar.gz")
    code, out, err = await asyncio.to_thread(run, capsys, "restore", str(tmp_path / "bad.tar.gz"), "--data-dir",
                                             str(tmp_path / "never"))  # fmt: skip
    assert code == 2 and err.splitlines()[-1].startswith(f"error: {tmp_path / 'bad.tar.gz'} is corrupt")
    assert "Traceback" not in err
    assert not (tmp_path / "never").exists()


@pytest.mark.postgres
@pytest.mark.parametrize("url", ["postgresql://postgres:s3cret-pw@127.0.0.1:5432/agentserve_no_such_db",
                                 "postgresql://postgres:s3cret-pw@127.0.0.1:notaport/x"])  # fmt: skip
async def test_the_cli_never_shows_the_database_password(
    url: str,
    cli_env: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    pg_admin_dsn: str,  # the server is up: the errors are about the URL
) -> None:
    async with opened(SqliteLocation(str(cli_env / "agentserve.db"))):
        pass
    assert await asyncio.to_thread(run, capsys, "backup", str(tmp_path / "empty.tar.gz"), "-q") == (0, ANY, "")
    monkeypatch.setenv("DATABASE_URL", url)
    for argv, failed in [
        (("backup", str(tmp_path / "b.tar.gz")), "PostgreSQL: backup failed: "),
        (("restore", str(tmp_path / "empty.tar.gz")), "PostgreSQL: restore failed, nothing written: "),
    ]:
        code, out, err = await asyncio.to_thread(run, capsys, *argv)
        assert code == 2 and err.splitlines()[-1].startswith("error: " + failed)
        assert "s3cret-pw" not in out + err and "Traceback" not in err
    assert not (tmp_path / "b.tar.gz").exists()
