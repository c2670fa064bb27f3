"""``restore_backup``: an archive, checked whole, into an empty conversation store and LanceDB directory."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memory.backup import sql, vectors
from memory.backup.archive import Manifest, read_archive, store_member, vector_member
from memory.backup.errors import BackupError, io_errors
from memory.backup.progress import PROGRESS_EVERY, Progress, RowCounter
from memory.factory import StoreLocation


def _rows(path: Path, count: RowCounter) -> Iterator[dict[str, Any]]:
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
    with io_errors(f"restore of {src} failed"), tempfile.TemporaryDirectory(prefix="agentserve-") as scratch_dir:
        scratch = Path(scratch_dir)
        if progress is not None:
            progress(f"checking {src} ...")
        manifest = read_archive(Path(src), scratch)
        if progress is not None:
            progress(f"{src}: all {len(manifest.members)} members check out (schema version {manifest.schema_version})")
        # NOTE: a local LanceDB directory that is not there yet is made only once the store proved empty.
        fresh = vectors.missing(lancedb_uri)
        if not fresh and vectors.lance(lancedb_uri, vectors.table_names):
            raise BackupError(f"the vector memory at {lancedb_uri} is not empty; restore needs an empty target")
        created: list[str] = []
        try:
            with sql.target(store) as insert:
                for table, info in manifest.tables.items():
                    count = RowCounter(progress, table, progress_every)
                    insert(table, info.columns, _rows(scratch / store_member(table), count))
                    count.done("restored")
                db = vectors.lance(lancedb_uri, lambda db: db)
                for name, vector_info in manifest.vector_tables.items():
                    created.append(name)  # NOTE: first: a create that fails half way may leave files
                    count = RowCounter(progress, f"memory {name}", progress_every)
                    vectors.restore_vectors(db, scratch / vector_member(name), name, vector_info, count)
        except BaseException:
            if fresh:
                shutil.rmtree(lancedb_uri, ignore_errors=True)  # made by us just now, holding only our tables
            elif created:
                for name in set(created) & set(vectors.table_names(db)):
                    db.drop_table(name)
            raise
    return manifest
