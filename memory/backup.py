"""Backup and restore of the conversation store and the vector memory, as one portable archive.

An archive is a gzipped tar: ``manifest.json`` (format and package versions, the
schema migration level, row counts, the SHA-256 of every other member), one
JSON-lines file per conversation-store table (timestamps as text, JSON columns
decoded, so a SQLite backup restores into PostgreSQL and back) and one Arrow IPC
stream per LanceDB table, vectors included.

A backup is a consistent snapshot taken while the platform serves traffic: SQLite
through its online backup API, PostgreSQL in one REPEATABLE READ READ ONLY
transaction, each LanceDB table read at the version it had right after that
snapshot. A restore checks the whole archive before it touches the target and
writes only into an empty target, all or nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import sqlite3
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import lancedb
import psycopg
import pyarrow as pa
from lancedb.index import HnswSq
from lancedb.table import Table
from psycopg import sql
from psycopg.abc import Query
from psycopg.types.json import Jsonb
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from agent.dto import utcnow
from memory import codec
from memory.factory import DEFAULT_SQLITE_FILE
from memory.lance_memory import INDEX_EF_CONSTRUCTION, item_schema, table_name
from memory.migrations import (
    LATEST_VERSION,
    PG_MIGRATION_LOCK,
    PG_SCHEMA_MIGRATIONS,
    SQLITE_SCHEMA_MIGRATIONS,
    SchemaVersionError,
    pending,
)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROGRESS_EVERY = 10_000

Kind = Literal["text", "int", "ts", "json"]
# The conversation store's tables at LATEST_VERSION, in restore order (sessions first: foreign keys).
TABLES: dict[str, dict[str, Kind]] = {
    "sessions": {"id": "text", "user_id": "text", "title": "text", "created_at": "ts", "updated_at": "ts",
                 "version": "int"},
    "messages": {"id": "text", "session_id": "text", "seq": "int", "role": "text", "content": "text",
                 "tool_calls": "json", "tool_call_id": "text", "name": "text", "usage": "json", "created_at": "ts"},
    "turns": {"user_id": "text", "idempotency_key": "text", "session_id": "text", "response": "json",
              "created_at": "ts"},
    "api_keys": {"id": "text", "prefix": "text", "hash": "text", "owner": "text", "name": "text", "scopes": "json",
                 "created_at": "ts", "last_used_at": "ts", "revoked_at": "ts"},
}  # fmt: skip
_ORDER = {"sessions": "id", "messages": "session_id, seq", "turns": "user_id, idempotency_key", "api_keys": "id"}
_VECTOR_TABLE = re.compile(r"u_[0-9a-f]{32}")
_MEMBER = re.compile(r"store/(?P<table>[a-z_]+)\.jsonl|lancedb/(?P<vectors>u_[0-9a-f]{32})\.arrow")

Progress = Callable[[str], None]
R = TypeVar("R")


class BackupError(RuntimeError):
    """A backup or restore was refused or failed; the message says why (and never holds a password)."""


@dataclass(frozen=True)
class SqliteLocation:
    path: str


@dataclass(frozen=True)
class PostgresLocation:
    dsn: str = field(repr=False)  # may hold a password


StoreLocation = SqliteLocation | PostgresLocation


def store_location(database_url: str | None, data_dir: str) -> StoreLocation:
    """Where ``DATABASE_URL`` points, by the rules of ``memory.factory.build_conversation_store``."""
    url = (database_url or "").strip()
    if not url:
        return SqliteLocation(os.path.join(data_dir, DEFAULT_SQLITE_FILE))
    if url.lower().startswith(("postgresql://", "postgres://")):
        return PostgresLocation(url)
    parts = urlsplit(url)
    if url.lower().startswith("sqlite:///") and not parts.netloc and not parts.query and parts.path.strip("/"):
        return SqliteLocation("/" + parts.path.lstrip("/"))
    raise BackupError("DATABASE_URL must be postgresql://..., postgres://... or sqlite:///<absolute path to a file>")


def store_member(table: str) -> str:
    return f"store/{table}.jsonl"


def vector_member(name: str) -> str:
    return f"lancedb/{name}.arrow"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TableInfo(_Strict):
    columns: list[str]
    rows: int = Field(ge=0)


class VectorTableInfo(_Strict):
    version: int = Field(ge=1, description="the LanceDB table version the rows were read at")
    rows: int = Field(ge=0)
    indexed: bool = Field(description="the table had its vector index (rebuilt on restore)")


class MemberInfo(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Manifest(_Strict):
    format: Literal["agentserve-backup"] = "agentserve-backup"
    format_version: int = Field(ge=1)
    created_at: AwareDatetime
    versions: dict[str, str]
    source: Literal["sqlite", "postgresql"]
    schema_version: int = Field(ge=1)
    tables: dict[str, TableInfo]
    vector_tables: dict[str, VectorTableInfo]
    members: dict[str, MemberInfo]


def _versions(source: str, server_version: str) -> dict[str, str]:
    found = {"python": sys.version.split()[0], source: server_version}
    for package in ("agentserve", "lancedb", "pyarrow", "psycopg"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "unknown"
    return found


def _refuse_newer(level: int, what: str) -> None:
    try:
        pending(level)
    except SchemaVersionError:
        raise BackupError(
            f"{what} has schema version {level}, newer than the {LATEST_VERSION} this code knows;"
            " use a release that knows it"
        ) from None


@contextmanager
def _io_errors(what: str) -> Iterator[None]:
    """File-system errors (a full disk, a missing directory) as ``BackupError``."""
    try:
        yield
    except OSError as exc:
        raise BackupError(f"{what}: {exc}") from exc


class _Counter:
    """Rows done, reported every ``every`` rows and at the end."""

    def __init__(self, progress: Progress | None, what: str, every: int) -> None:
        self.progress, self.what, self.every, self.n = progress, what, every, 0

    def add(self, n: int) -> None:
        before, self.n = self.n, self.n + n
        if self.progress is not None and before // self.every != self.n // self.every:
            self.progress(f"{self.what}: {self.n} rows")

    def done(self, verb: str) -> int:
        if self.progress is not None:
            self.progress(f"{self.what}: {self.n} rows {verb}")
        return self.n


# ---------------------------------------------------------------- the SQL side


@dataclass
class _Snapshot:
    source: Literal["sqlite", "postgresql"]
    server_version: str
    level: int
    columns: dict[str, list[str]]  # the tables present, with the columns we know
    rows: Callable[[str, list[str]], Iterator[tuple[Any, ...]]]


def _snapshot_of(
    source: Literal["sqlite", "postgresql"],
    version: str,
    level: int | None,
    present: dict[str, set[str]],
    rows: Callable[[str, list[str]], Iterator[tuple[Any, ...]]],
    what: str,
) -> _Snapshot:
    _refuse_newer(level or 0, what)
    if not level:
        raise BackupError(f"{what} has no agentserve schema (never set up?)")
    columns = {t: [c for c in spec if c in present[t]] for t, spec in TABLES.items() if t in present}
    return _Snapshot(source, version, level, columns, rows)


@contextmanager
def _sqlite_snapshot(path: str, scratch: Path) -> Iterator[_Snapshot]:
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
def _postgres_snapshot(dsn: str) -> Iterator[_Snapshot]:
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


def _portable(kind: Kind, value: Any) -> Any:
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


Insert = Callable[[str, list[str], Iterable[dict[str, Any]]], None]


def _refuse_rows(has_rows: Callable[[str], bool], what: str) -> None:
    full = [t for t in TABLES if has_rows(t)]
    if full:
        raise BackupError(f"{what} is not empty (rows in {', '.join(full)}); restore needs an empty target")


@contextmanager
def _sqlite_target(path: str) -> Iterator[Insert]:
    """One write transaction on an empty (or new) SQLite file: migrated, checked empty, filled, committed."""
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
        conn.execute(SQLITE_SCHEMA_MIGRATIONS)
        applied = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
        _refuse_newer(applied or 0, f"the SQLite database {path}")
        for migration in pending(applied):
            for statement in migration.sqlite:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                         (migration.version, codec.ts_text(utcnow())))  # fmt: skip
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
    """One transaction on an empty (or new) PostgreSQL database: migrated, checked empty, filled, committed."""
    with _pg_errors(dsn, "restore failed, nothing written"), _connect(dsn) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_MIGRATION_LOCK,))
        conn.execute(PG_SCHEMA_MIGRATIONS)
        applied = _one(conn, "SELECT MAX(version) FROM schema_migrations")
        _refuse_newer(applied or 0, "the PostgreSQL database")
        for migration in pending(applied):
            for statement in migration.postgres:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (migration.version,))
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


# ---------------------------------------------------------------- the vector side


def _missing(uri: str) -> bool:
    """A local LanceDB directory that does not exist (connecting would make it)."""
    return "://" not in uri and not os.path.exists(uri)


def _lance(uri: str, use: Callable[[lancedb.DBConnection], R]) -> R:
    try:
        return use(lancedb.connect(uri))
    except (OSError, ValueError, RuntimeError) as exc:
        raise BackupError(f"cannot open the vector memory at {uri}: {exc}") from exc


def _table_names(db: lancedb.DBConnection) -> list[str]:
    names, token = [], None
    while True:
        page = db.list_tables(page_token=token)
        names += page.tables
        if not (token := page.page_token):
            return sorted(names)


def _pin(db: lancedb.DBConnection) -> dict[str, Table]:
    """The vector memory's tables, each checked out at its current version: later writes change nothing we read."""
    pinned: dict[str, Table] = {}
    for name in filter(_VECTOR_TABLE.fullmatch, _table_names(db)):
        table = db.open_table(name)
        table.checkout(table.version)
        pinned[name] = table
    return pinned


def _write_vectors(table: Table, path: Path, count: _Counter) -> VectorTableInfo:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.search().limit(None).to_batches(1000):
            writer.write_batch(batch)
            count.add(batch.num_rows)
    indexed = any(list(ix.columns) == ["vector"] for ix in table.list_indices())
    return VectorTableInfo(version=table.version, rows=count.done("backed up"), indexed=indexed)


def _restore_vectors(db: lancedb.DBConnection, path: Path, name: str, info: VectorTableInfo, count: _Counter) -> None:
    with pa.ipc.open_stream(pa.OSFile(str(path), "rb")) as reader:

        def counted() -> Iterator[pa.RecordBatch]:
            for batch in reader:
                count.add(batch.num_rows)
                yield batch

        table = db.create_table(name, data=pa.RecordBatchReader.from_batches(reader.schema, counted()))
    count.done("restored")
    if info.indexed:  # as LanceVectorMemory builds it
        if count.progress is not None:
            count.progress(f"memory {name}: building the vector index")
        config = HnswSq(distance_type="cosine", ef_construction=INDEX_EF_CONSTRUCTION)
        table.create_index("vector", config=config, replace=False)


# ---------------------------------------------------------------- backup


def _digest(path: Path) -> MemberInfo:
    with open(path, "rb") as f:
        return MemberInfo(sha256=hashlib.file_digest(f, "sha256").hexdigest(), bytes=path.stat().st_size)


def create_backup(
    dest: str | os.PathLike[str],
    store: StoreLocation,
    lancedb_uri: str,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> Manifest:
    """Write a consistent snapshot of the conversation store and the vector memory to ``dest``.

    The archive appears at ``dest`` only once complete (written beside it, then renamed).

    Raises:
        BackupError: ``dest`` exists (without ``overwrite``), the store is missing,
            unreachable or newer than this code, or writing failed.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise BackupError(f"{dest} exists already (overwrite it with --force)")
    if not dest.parent.is_dir():
        raise BackupError(f"cannot write {dest}: {dest.parent} is not a directory")
    partial = dest.with_name(dest.name + ".partial")
    with _io_errors(f"backup to {dest} failed"), tempfile.TemporaryDirectory(prefix="agentserve-") as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "store").mkdir()
        (scratch / "lancedb").mkdir()
        tables: dict[str, TableInfo] = {}
        vectors: dict[str, VectorTableInfo] = {}
        snapshot = (_sqlite_snapshot(store.path, scratch) if isinstance(store, SqliteLocation)
                    else _postgres_snapshot(store.dsn))  # fmt: skip
        with snapshot as snap:
            pinned = {} if _missing(lancedb_uri) else _lance(lancedb_uri, _pin)
            if progress is not None:
                progress(f"snapshot taken: {snap.source} at schema version {snap.level}, {len(pinned)} vector tables")
            for table, cols in snap.columns.items():
                count = _Counter(progress, table, progress_every)
                kinds = [TABLES[table][c] for c in cols]
                with open(scratch / store_member(table), "w", encoding="utf-8") as out:
                    for row in snap.rows(table, cols):
                        values = {c: _portable(k, v) for c, k, v in zip(cols, kinds, row, strict=True)}
                        out.write(json.dumps(values, ensure_ascii=False, separators=(",", ":")) + "\n")
                        count.add(1)
                tables[table] = TableInfo(columns=cols, rows=count.done("backed up"))
        for name, pinned_table in pinned.items():
            count = _Counter(progress, f"memory {name}", progress_every)
            vectors[name] = _write_vectors(pinned_table, scratch / vector_member(name), count)
        names = [*map(store_member, tables), *map(vector_member, vectors)]
        manifest = Manifest(
            format_version=FORMAT_VERSION, created_at=utcnow(), versions=_versions(snap.source, snap.server_version),
            source=snap.source, schema_version=snap.level, tables=tables, vector_tables=vectors,
            members={name: _digest(scratch / name) for name in names},
        )  # fmt: skip
        (scratch / MANIFEST).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        if progress is not None:
            progress(f"compressing into {dest} ...")
        try:
            with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
                for name in [MANIFEST, *names]:
                    tar.add(scratch / name, arcname=name, recursive=False)
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
    if progress is not None:
        progress(f"backup written: {dest} ({dest.stat().st_size} bytes)")
    return manifest


# ---------------------------------------------------------------- checking an archive


def _unpack(src: Path, into: Path) -> set[str]:
    """The members of ``src``, copied into ``into``; anything but our regular files is refused."""
    seen: set[str] = set()
    try:
        with gzip.open(src, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for member in tar:
                if not (member.name == MANIFEST or _MEMBER.fullmatch(member.name)) or not member.isfile() or (
                        member.name in seen):  # fmt: skip
                    raise BackupError(f"{src}: unexpected member {member.name!r}; not an agentserve backup")
                seen.add(member.name)
                (into / member.name).parent.mkdir(parents=True, exist_ok=True)
                reader = tar.extractfile(member)
                assert reader is not None  # a regular file
                with reader, open(into / member.name, "wb") as out:
                    shutil.copyfileobj(reader, out)
            while raw.read(1 << 20):  # NOTE: to the end, so gzip checks its CRC over everything
                pass
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BackupError(f"{src} is corrupt or truncated (not a readable gzipped tar): {exc}") from None
    return seen


def _read_archive(src: Path, into: Path) -> Manifest:
    """Unpack ``src`` into ``into`` and check all of it: manifest, checksums, rows and values."""
    if not src.is_file():
        raise BackupError(f"no backup archive at {src}")
    present = _unpack(src, into)
    if MANIFEST not in present:
        raise BackupError(f"{src} has no {MANIFEST}; not an agentserve backup")
    try:
        manifest = Manifest.model_validate_json((into / MANIFEST).read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise BackupError(f"{src}: {MANIFEST} is invalid at {where}: {first['msg']}") from None
    if manifest.format_version > FORMAT_VERSION:
        raise BackupError(f"{src} has archive format {manifest.format_version}, newer than the {FORMAT_VERSION} "
                          "this code reads; use a newer release")  # fmt: skip
    _refuse_newer(manifest.schema_version, f"the archive {src}")
    expected = {*map(store_member, manifest.tables), *map(vector_member, manifest.vector_tables)}
    if present - {MANIFEST} != expected or set(manifest.members) != expected:
        odd = sorted(expected ^ (present - {MANIFEST}) or expected ^ set(manifest.members))
        raise BackupError(f"{src}: members {odd} are missing or not in the manifest")
    for name, info in manifest.members.items():
        if _digest(into / name) != info:
            raise BackupError(f"{src}: checksum of {name} does not match the manifest (the archive is corrupt)")
    for table, table_info in manifest.tables.items():
        _check_rows(src, into / store_member(table), table, table_info)
    for name, vector_info in manifest.vector_tables.items():
        _check_vectors(src, into / vector_member(name), name, vector_info)
    return manifest


def _valid(kind: Kind, value: Any) -> bool:
    if value is None or kind == "json":
        return True
    if kind == "int":
        return type(value) is int
    if kind == "ts" and isinstance(value, str):
        try:
            codec.ts_parse(value)
        except ValueError:
            return False
    return isinstance(value, str)


def _check_rows(src: Path, path: Path, table: str, info: TableInfo) -> None:
    known = TABLES.get(table, {})
    if not known or not set(info.columns) <= set(known):
        raise BackupError(f"{src}: table {table!r} with columns {info.columns} is not one this code knows")
    n = 0
    with open(path, encoding="utf-8") as lines:
        for n, line in enumerate(lines, start=1):
            try:
                row = json.loads(line)
            except ValueError:
                raise BackupError(f"{src}: {path.name} line {n} is not JSON") from None
            if not isinstance(row, dict) or list(row) != info.columns:
                raise BackupError(f"{src}: {path.name} line {n} does not have the columns {info.columns}")
            bad = [c for c in info.columns if not _valid(known[c], row[c])]
            if bad:
                raise BackupError(f"{src}: {path.name} line {n}: {bad[0]} is not a valid {known[bad[0]]} value")
    if n != info.rows:
        raise BackupError(f"{src}: {path.name} has {n} rows, the manifest says {info.rows}")


def _check_vectors(src: Path, path: Path, name: str, info: VectorTableInfo) -> None:
    rows, users = 0, set()
    try:
        with pa.ipc.open_stream(pa.OSFile(str(path), "rb")) as reader:
            vector = reader.schema.field("vector").type
            dim = vector.list_size if isinstance(vector, pa.FixedSizeListType) else 0
            if dim < 1 or not reader.schema.equals(item_schema(dim)):
                raise BackupError(f"{src}: {path.name} does not have the vector memory's columns")
            for batch in reader:
                rows += batch.num_rows
                users.update(batch.column("user_id").to_pylist())
    except (pa.ArrowException, KeyError) as exc:
        raise BackupError(f"{src}: {path.name} is not a readable Arrow stream: {exc}") from None
    if rows != info.rows:
        raise BackupError(f"{src}: {path.name} has {rows} rows, the manifest says {info.rows}")
    if any(table_name(u) != name for u in users):
        raise BackupError(f"{src}: {path.name} holds items of a user other than the table's")


def verify_backup(src: str | os.PathLike[str]) -> Manifest:
    """Check an archive whole (manifest, checksums, rows) without restoring it.

    Raises:
        BackupError: the archive is unreadable, corrupt, or newer than this code.
    """
    with _io_errors(f"checking {src} failed"), tempfile.TemporaryDirectory(prefix="agentserve-") as scratch:
        return _read_archive(Path(src), Path(scratch))


# ---------------------------------------------------------------- restore


def _rows(path: Path, count: _Counter) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            count.add(1)
            yield json.loads(line)


def restore_backup(
    src: str | os.PathLike[str],
    store: StoreLocation,
    lancedb_uri: str,
    *,
    progress: Progress | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> Manifest:
    """Restore an archive into an empty conversation store and an empty LanceDB directory.

    The archive is checked whole before the target is touched. The store is
    written in one transaction, committed only after the vector tables were
    made; those are dropped again when anything fails, so a failed restore
    leaves the target as it was.

    Raises:
        BackupError: the archive is corrupt, truncated or newer than this code,
            the target is not empty, or writing failed.
    """
    with _io_errors(f"restore of {src} failed"), tempfile.TemporaryDirectory(prefix="agentserve-") as scratch_dir:
        scratch = Path(scratch_dir)
        if progress is not None:
            progress(f"checking {src} ...")
        manifest = _read_archive(Path(src), scratch)
        if progress is not None:
            progress(f"{src}: all {len(manifest.members)} members check out (schema version {manifest.schema_version})")
        # NOTE: a local LanceDB directory that is not there yet is made only once the store proved empty.
        fresh = _missing(lancedb_uri)
        if not fresh and _lance(lancedb_uri, _table_names):
            raise BackupError(f"the vector memory at {lancedb_uri} is not empty; restore needs an empty target")
        target = _sqlite_target(store.path) if isinstance(store, SqliteLocation) else _postgres_target(store.dsn)
        created: list[str] = []
        try:
            with target as insert:
                for table, info in manifest.tables.items():
                    count = _Counter(progress, table, progress_every)
                    insert(table, info.columns, _rows(scratch / store_member(table), count))
                    count.done("restored")
                db = _lance(lancedb_uri, lambda db: db)
                for name, vector_info in manifest.vector_tables.items():
                    created.append(name)  # NOTE: first: a create that fails half way may leave files
                    count = _Counter(progress, f"memory {name}", progress_every)
                    _restore_vectors(db, scratch / vector_member(name), name, vector_info, count)
        except BaseException:
            if fresh:
                shutil.rmtree(lancedb_uri, ignore_errors=True)  # made by us just now, holding only our tables
            elif created:
                for name in set(created) & set(_table_names(db)):
                    db.drop_table(name)
            raise
    return manifest
