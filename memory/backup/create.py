"""``create_backup``: a consistent snapshot of the conversation store and the vector memory, as one archive."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from agent.dto import utcnow
from memory.backup import sql, vectors
from memory.backup.archive import (
    FORMAT_VERSION,
    MANIFEST,
    TABLES,
    Manifest,
    TableInfo,
    VectorTableInfo,
    digest,
    store_member,
    vector_member,
    versions,
    write_archive,
)
from memory.backup.errors import BackupError, io_errors
from memory.backup.progress import PROGRESS_EVERY, Progress, RowCounter
from memory.factory import StoreLocation


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
    with io_errors(f"backup to {dest} failed"), tempfile.TemporaryDirectory(prefix="agentserve-") as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "store").mkdir()
        (scratch / "lancedb").mkdir()
        tables: dict[str, TableInfo] = {}
        vector_tables: dict[str, VectorTableInfo] = {}
        with sql.snapshot(store, scratch) as snap:
            pinned = {} if vectors.missing(lancedb_uri) else vectors.lance(lancedb_uri, vectors.pin)
            if progress is not None:
                progress(f"snapshot taken: {snap.source} at schema version {snap.level}, {len(pinned)} vector tables")
            for table, cols in snap.columns.items():
                count = RowCounter(progress, table, progress_every)
                kinds = [TABLES[table][c] for c in cols]
                with open(scratch / store_member(table), "w", encoding="utf-8") as out:
                    for row in snap.rows(table, cols):
                        values = {c: sql.portable(k, v) for c, k, v in zip(cols, kinds, row, strict=True)}
                        out.write(json.dumps(values, ensure_ascii=False, separators=(",", ":")) + "\n")
                        count.add(1)
                tables[table] = TableInfo(columns=cols, rows=count.done("backed up"))
        for name, pinned_table in pinned.items():
            count = RowCounter(progress, f"memory {name}", progress_every)
            vector_tables[name] = vectors.write_vectors(pinned_table, scratch / vector_member(name), count)
        names = [*map(store_member, tables), *map(vector_member, vector_tables)]
        manifest = Manifest(
            format_version=FORMAT_VERSION, created_at=utcnow(), versions=versions(snap.source, snap.server_version),
            source=snap.source, schema_version=snap.level, tables=tables, vector_tables=vector_tables,
            members={name: digest(scratch / name) for name in names},
        )  # fmt: skip
        (scratch / MANIFEST).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        if progress is not None:
            progress(f"compressing into {dest} ...")
        write_archive(dest, scratch, names)
    if progress is not None:
        progress(f"backup written: {dest} ({dest.stat().st_size} bytes)")
    return manifest
