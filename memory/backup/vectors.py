"""The vector memory's side: LanceDB tables pinned at a version and exported as Arrow streams, and imported back."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import lancedb
import pyarrow as pa
from lancedb.index import HnswSq
from lancedb.table import Table

from memory.backup.archive import VectorTableInfo
from memory.backup.errors import BackupError
from memory.backup.progress import RowCounter
from memory.lance_memory import INDEX_EF_CONSTRUCTION

_VECTOR_TABLE = re.compile(r"u_[0-9a-f]{32}")

R = TypeVar("R")


def missing(uri: str) -> bool:
    """A local LanceDB directory that does not exist (connecting would make it)."""
    return "://" not in uri and not os.path.exists(uri)


def lance(uri: str, use: Callable[[lancedb.DBConnection], R]) -> R:
    """``use`` applied to the LanceDB at ``uri``; failing to open it is a ``BackupError``."""
    try:
        return use(lancedb.connect(uri))
    except (OSError, ValueError, RuntimeError) as exc:
        raise BackupError(f"cannot open the vector memory at {uri}: {exc}") from exc


def table_names(db: lancedb.DBConnection) -> list[str]:
    names, token = [], None
    while True:
        page = db.list_tables(page_token=token)
        names += page.tables
        if not (token := page.page_token):
            return sorted(names)


def pin(db: lancedb.DBConnection) -> dict[str, Table]:
    """The vector memory's tables, each checked out at its current version: later writes change nothing we read."""
    pinned: dict[str, Table] = {}
    for name in filter(_VECTOR_TABLE.fullmatch, table_names(db)):
        table = db.open_table(name)
        table.checkout(table.version)
        pinned[name] = table
    return pinned


def write_vectors(table: Table, path: Path, count: RowCounter) -> VectorTableInfo:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.search().limit(None).to_batches(1000):
            writer.write_batch(batch)
            count.add(batch.num_rows)
    indexed = any(list(ix.columns) == ["vector"] for ix in table.list_indices())
    return VectorTableInfo(version=table.version, rows=count.done("backed up"), indexed=indexed)


def restore_vectors(db: lancedb.DBConnection, path: Path, name: str, info: VectorTableInfo, count: RowCounter) -> None:
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
