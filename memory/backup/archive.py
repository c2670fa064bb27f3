"""The archive: its manifest, its members and their checksums, written and checked whole.

A gzipped tar: ``manifest.json`` (format and package versions, the schema
migration level, row counts, the SHA-256 of every other member), one JSON-lines
file per conversation-store table and one Arrow IPC stream per LanceDB table.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zlib
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from memory import codec
from memory.backup.errors import BackupError, io_errors, refuse_newer
from memory.lance_memory import item_schema, table_name

FORMAT_VERSION = 1
MANIFEST = "manifest.json"

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
_MEMBER = re.compile(r"store/(?P<table>[a-z_]+)\.jsonl|lancedb/(?P<vectors>u_[0-9a-f]{32})\.arrow")


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


def versions(source: str, server_version: str) -> dict[str, str]:
    """The versions a manifest records: Python, the database server and our packages."""
    found = {"python": sys.version.split()[0], source: server_version}
    for package in ("agentserve", "lancedb", "pyarrow", "psycopg"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "unknown"
    return found


def digest(path: Path) -> MemberInfo:
    with open(path, "rb") as f:
        return MemberInfo(sha256=hashlib.file_digest(f, "sha256").hexdigest(), bytes=path.stat().st_size)


def write_archive(dest: Path, scratch: Path, names: list[str]) -> None:
    """The manifest and ``names`` from ``scratch`` as a gzipped tar at ``dest``: written beside it, then renamed."""
    partial = dest.with_name(dest.name + ".partial")
    try:
        with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
            for name in [MANIFEST, *names]:
                tar.add(scratch / name, arcname=name, recursive=False)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


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


def read_archive(src: Path, into: Path) -> Manifest:
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
    refuse_newer(manifest.schema_version, f"the archive {src}")
    expected = {*map(store_member, manifest.tables), *map(vector_member, manifest.vector_tables)}
    if present - {MANIFEST} != expected or set(manifest.members) != expected:
        odd = sorted(expected ^ (present - {MANIFEST}) or expected ^ set(manifest.members))
        raise BackupError(f"{src}: members {odd} are missing or not in the manifest")
    for name, info in manifest.members.items():
        if digest(into / name) != info:
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
    with io_errors(f"checking {src} failed"), tempfile.TemporaryDirectory(prefix="agentserve-") as scratch:
        return read_archive(Path(src), Path(scratch))
