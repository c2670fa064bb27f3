"""The conversation store's side: a consistent snapshot to read, an empty target to fill.

SQLite is snapshotted through its online backup API, PostgreSQL in one
REPEATABLE READ READ ONLY transaction. A target is one transaction on an empty
(or new) database: migrated, checked empty, filled, committed.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.abc import Query
from psycopg.types.json import Jsonb

from memory import codec, factory
from memory.backup.archive import TABLES, Kind
from memory.backup.errors import BackupError, refuse_newer, refusing_newer
from memory.factory import SqliteLocation, StoreLocation
from memory.migrations import migrate_postgres_sync, migrate_sqlite

_ORDER = {"sessions": "id", "messages": "session_id, seq", "turns": "user_id, idempotency_key", "api_keys": "id"}

Rows = Callable[[str, list[str]], Iterator[tuple[Any, ...]]]
Insert = Callable[[str, list[str], Iterable[dict[str, Any]]], None]


def store_location(database_url: str | None, data_dir: str) -> StoreLocation:
    """Where ``DATABASE_URL`` points, by the rules of ``memory.factory.store_location``; refusals as ``BackupError``."""
    try:
        return factory.store_location(database_url, data_dir)
    except ValueError as exc:  # its message never repeats the URL
        raise BackupError(str(exc)) from None


@dataclass
class Snapshot:
    source: Literal["sqlite", "postgresql"]
    server_version: str
    level: int
    columns: dict[str, list[str]]  # the tables present, with the columns we know
    rows: Rows


def snapshot(store: StoreLocation, scratch: Path) -> AbstractContextManager[Snapshot]:
    """A consistent snapshot of ``store`` (SQLite copies its file into ``scratch``)."""
    return _sqlite_snapshot(store.path, scratch) if isinstance(store, SqliteLocation) else _postgres_snapshot(store.dsn)


def target(store: StoreLocation) -> AbstractContextManager[Insert]:
    """The empty ``store`` to restore into, in one transaction: committed when the block ends without error."""
    return _sqlite_target(store.path) if isinstance(store, SqliteLocation) else _postgres_target(store.dsn)


def _snapshot_of(
    source: Literal["sqlite", "postgresql"],
    version: str,
    level: int | None,
    present: dict[str, set[str]],
    rows: Rows,
    what: str,
) -> Snapshot:
    refuse_newer(level or 0, what)
    if not level:
        raise BackupError(f"{what} has no agentserve schema (never set up?)")
    columns = {t: [c for c in spec if c in present[t]] for t, spec in TABLES.items() if t in present}
    return Snapshot(source, version, level, columns, rows)


@contextmanager
def _sqlite_snapshot(path: str, scratch: Path) -> Iterator[Snapshot]:
    if not os.path.isfile(path):
        raise BackupError(f"no SQLite database at {path}")
    source = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        with closing(sqlite3.connect(scratch / "snapshot.db")) as conn:
            with closing(sqlite3.connect(source, uri=True, timeout=30)) as live:
                live.backup(conn)  # NOTE: in one step, so the copy is one read transaction: a consistent snapshot
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            present = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in names}
            migrated = "schema_migrations" in present
            level = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] if migrated else None

            def rows(table: str, cols: list[str]) -> Iterator[tuple[Any, ...]]:
                yield from conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {_ORDER[table]}")  # noqa: S608

            yield _snapshot_of("sqlite", sqlite3.sqlite_version, level, present, rows, f"the SQLite database {path}")
    except sqlite3.Error as exc:
        raise BackupError(f"cannot read the SQLite database {path}: {exc}") from exc


@contextmanager
def _pg_errors(dsn: str, action: str) -> Iterator[None]:
    """psycopg's errors as ``BackupError``: their first line, with any password of ``dsn`` blotted out."""
    try:
        yield
    except psycopg.Error as exc:
        text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
        raise BackupError(f"PostgreSQL: {action}: {text.replace(str(password), '***') if password else text}") from None


def _connect(dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:  # its message would repeat the DSN, password and all
        raise BackupError("DATABASE_URL is not a valid PostgreSQL URL") from None
    return psycopg.connect(dsn, connect_timeout=10)


def _one(conn: psycopg.Connection[tuple[Any, ...]], query: Query) -> Any:
    row = conn.execute(query).fetchone()
    return row[0] if row else None


@contextmanager
def _postgres_snapshot(dsn: str) -> Iterator[Snapshot]:
    with _pg_errors(dsn, "backup failed"), _connect(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            # NOTE: the snapshot is taken at the transaction's first statement; every read below sees it.
            present: dict[str, set[str]] = {}
            for table, column in conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            ):
                present.setdefault(table, set()).add(column)
            level = _one(conn, "SELECT MAX(version) FROM schema_migrations") if "schema_migrations" in present else None

            def rows(table: str, cols: list[str]) -> Iterator[tuple[Any, ...]]:
                query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(table), sql.SQL(_ORDER[table])
                )
                with conn.cursor(name=f"backup_{table}") as cur:  # server side: the rows stream in
                    cur.itersize = 2000
                    yield from cur.execute(query)

            version = str(_one(conn, "SHOW server_version"))
            yield _snapshot_of("postgresql", version, level, present, rows, "the PostgreSQL database")


def portable(kind: Kind, value: Any) -> Any:
    """A column value as the archive holds it: timestamps as fixed-width UTC text, JSON decoded."""
    if value is None or kind in ("text", "int"):
        return value
    if kind == "ts":
        return value if isinstance(value, str) else codec.ts_text(value)
    return json.loads(value) if isinstance(value, str) else value


def _native(kind: Kind, value: Any) -> Any:
    """An archive value as PostgreSQL takes it."""
    if value is None or kind in ("text", "int"):
        return value
    return codec.ts_parse(value) if kind == "ts" else Jsonb(value)


def _refuse_rows(has_rows: Callable[[str], bool], what: str) -> None:
    full = [t for t in TABLES if has_rows(t)]
    if full:
        raise BackupError(f"{what} is not empty (rows in {', '.join(full)}); restore needs an empty target")


@contextmanager
def _sqlite_target(path: str) -> Iterator[Insert]:
    existed = os.path.exists(path)
    committed = False
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    except (OSError, sqlite3.Error) as exc:
        raise BackupError(f"cannot open the SQLite database {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN IMMEDIATE")
        with refusing_newer(f"the SQLite database {path}"):
            migrate_sqlite(conn)
        exists = "SELECT EXISTS (SELECT 1 FROM {})"
        _refuse_rows(lambda t: bool(conn.execute(exists.format(t)).fetchone()[0]), f"the SQLite database {path}")

        def insert(table: str, cols: list[str], rows: Iterable[dict[str, Any]]) -> None:
            kinds = [TABLES[table][c] for c in cols]
            statement = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"  # noqa: S608
            dump = [json.dumps if k == "json" else None for k in kinds]
            conn.executemany(statement, (
                [f(r[c]) if f and r[c] is not None else r[c] for c, f in zip(cols, dump, strict=True)] for r in rows
            ))  # fmt: skip

        yield insert
        conn.execute("COMMIT")
        committed = True
    except sqlite3.Error as exc:
        raise BackupError(f"restore into the SQLite database {path} failed, nothing written: {exc}") from exc
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
        if not committed and not existed:  # leave no empty file behind
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(path + suffix).unlink(missing_ok=True)


@contextmanager
def _postgres_target(dsn: str) -> Iterator[Insert]:
    with _pg_errors(dsn, "restore failed, nothing written"), _connect(dsn) as conn, conn.transaction():
        with refusing_newer("the PostgreSQL database"):
            migrate_postgres_sync(conn)
        exists = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})")
        _refuse_rows(lambda t: bool(_one(conn, exists.format(sql.Identifier(t)))), "the PostgreSQL database")

        def insert(table: str, cols: list[str], rows: Iterable[dict[str, Any]]) -> None:
            kinds = [TABLES[table][c] for c in cols]
            statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols))
            )
            with conn.cursor() as cur, cur.copy(statement) as copy:
                for r in rows:
                    copy.write_row([_native(k, r[c]) for c, k in zip(cols, kinds, strict=True)])

        yield insert
