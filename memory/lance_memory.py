"""Vector memory in LanceDB: one table per user, cosine search, an ANN index past a threshold.

Each user's items live in their own table (``u_`` + 32 hex digits of the SHA-256
of the user id), so a search reads one user's rows; every filter also names the
user, as a second guard. Below ``index_threshold`` rows a search is exact (a flat
scan, ~14 ms at 10,000 rows here). The add that brings a table to the threshold
starts an IVF_HNSW_SQ build in the background (one build at a time per replica;
searches, also of that user, go on meanwhile, flat). Rows added after the build
are still found: LanceDB scans unindexed rows exactly and merges them with the
index's answer; a periodic ``optimize`` folds them into the index and compacts
the small files each write leaves (300 one-item adds: search 35 ms -> 5 ms).

Tables below the threshold are also kept in the replica's memory (Arrow
columns and a numpy matrix, labelled with the table's version; an LRU bounded
by ``cache_mb``): a search asks LanceDB only for the table's latest version
(~0.3 ms) and, when the copy is of that version, searches the matrix exactly,
as LanceDB's flat scan would in ~5-10 ms, making items for the hits only;
else it reads the table again (one query, as a search would have been). The
replica's own appends extend the copy when their commit is the very next
version, so the writes of a user's turns keep it current; anything else
(another replica's write, an upsert, an ``optimize``, a delete) makes the next
search read the table again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.expr import Expr, col, lit
from lancedb.index import HnswSq
from lancedb.table import AsyncTable

from agent.errors import AgentError, StoreUnavailableError
from agent.ports import MemoryHit, MemoryItem, VectorSearchObserver
from memory.codec import as_utc
from memory.vector_in_memory import DIM, Matrix, as_matrix, batches_by_user, check_k, memory_not_found, top_k

log = logging.getLogger(__name__)

# NOTE: Lance 13 writes a warning of its own to stderr (plain text, past our JSON logs) at every
# optimize of an indexed table, about index statistics that would include the centroids; it
# asks to set this variable to keep that (true) or opt in to its coming default (false). We
# never read index statistics: false, unless the operator set it.
os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")

# IVF_HNSW_SQ with LanceDB's default partitioning. ef_construction 150 instead of the default 300
# halved the build at 100k rows here (62 -> 31 s); with refine_factor 10, recall@10 stayed 0.999.
INDEX_EF_CONSTRUCTION = 150

ITEM_COLUMNS = ["id", "user_id", "session_id", "kind", "text", "created_at"]


def table_name(user_id: str) -> str:
    """The table of one user: safe for any user id, stable across processes."""
    return "u_" + hashlib.sha256(user_id.encode()).hexdigest()[:32]


def item_schema(dim: int) -> pa.Schema:
    texts = [pa.field(name, pa.string(), nullable=name == "session_id") for name in ITEM_COLUMNS[:-1]]
    vector = pa.field("vector", pa.list_(pa.float32(), dim), nullable=False)
    return pa.schema([*texts, vector, pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False)])


@contextmanager
def _store_errors(action: str) -> Iterator[None]:
    """LanceDB's (and the file system's) errors as ``StoreUnavailableError``; ours pass through."""
    try:
        yield
    except AgentError:
        raise
    except Exception as exc:
        log.warning("vector memory: %s failed: %s: %s", action, type(exc).__name__, exc)
        raise StoreUnavailableError(f"vector memory unavailable ({action} failed)") from exc


ID_OVERHEAD_BYTES = 120  # an id in the set of a cached table, besides the Arrow columns
# Copies found behind someone else's write this many searches in a row: the table is being
# written through other replicas, so each search would read it whole; LanceDB searches it for a while.
STALE_LIMIT = 2
OWN_VERSIONS_KEPT = 256  # per table, the replica's own latest commits


@dataclass(eq=False)
class _Cached:
    """A user's table in memory. It holds at least what version ``version`` holds: a table read
    just as a write committed holds that write's rows too, and a later version reads it again."""

    version: int
    meta: pa.Table  # ITEM_COLUMNS; row i belongs to vectors[i]
    vectors: Matrix  # unit rows
    ids: set[str]

    @property
    def nbytes(self) -> int:
        return int(self.meta.nbytes) + self.vectors.nbytes + ID_OVERHEAD_BYTES * len(self.ids)

    def search(self, query: Matrix, k: int) -> list[MemoryHit]:
        if not self.ids:
            return []
        scores = self.vectors @ query
        top = top_k(scores, k)
        rows = self.meta.take(pa.array(top)).to_pylist()
        return [
            MemoryHit(item=MemoryItem(**row), score=float(np.clip(scores[i], -1.0, 1.0)))
            for row, i in zip(rows, top, strict=True)
        ]


def _log_failure(job: str, table: AsyncTable, exc: Exception) -> None:
    # A commit conflict means another replica did the same job first: nothing to worry about.
    level = logging.INFO if "commit conflict" in str(exc).lower() else logging.WARNING
    log.log(level, "vector memory: %s on %s failed: %s", job, table.name, exc)


class LanceVectorMemory:
    """``VectorMemory`` in a LanceDB directory (local path or object store URI).

    Call ``await setup()`` once (per replica, on the loop that will use it) and
    ``await close()`` at shutdown. Adding an item whose id the user already has
    replaces it. Items of several users in one ``add`` are written user by user
    (each user's write is atomic, the whole call is not).

    Args:
        uri: The LanceDB directory, e.g. ``/data/memory`` or ``s3://bucket/memory``.
        index_threshold: Rows at which a user's table gets its ANN index.
        nprobes: IVF partitions probed per search.
        refine_factor: Candidates fetched per result and re-ranked with exact
            distances (10 takes IVF_HNSW_SQ from recall@10 ~0.75 to ~1.0 for ~2 ms).
        optimize_every: Writes to one table (by this replica) between background
            ``optimize`` runs (compaction, new rows into the index, old versions pruned).
        read_consistency: How stale a table handle may be; ``timedelta(0)`` sees
            other replicas' writes at once (one manifest check per call).
        cache_mb: Memory for tables kept in the replica (below ``index_threshold``
            rows), least recently searched dropped first; 0 turns the cache off.
        stale_pause_s: How long a table whose copy was behind another writer's
            writes ``STALE_LIMIT`` searches in a row is searched in LanceDB instead.
        dim: The vectors' dimension.
        observer: Told how each search was answered and what the copies take (metrics).
    """

    def __init__(
        self,
        uri: str,
        *,
        index_threshold: int = 5000,
        nprobes: int = 20,
        refine_factor: int = 10,
        optimize_every: int = 50,
        read_consistency: timedelta | None = timedelta(0),
        cache_mb: float = 64.0,
        stale_pause_s: float = 30.0,
        dim: int = DIM,
        observer: VectorSearchObserver | None = None,
    ) -> None:
        self._uri = uri
        self._index_threshold = index_threshold
        self._nprobes = nprobes
        self._refine_factor = refine_factor
        self._optimize_every = optimize_every
        self._read_consistency = read_consistency
        self._dim = dim
        self._schema = item_schema(dim)
        self._db: lancedb.AsyncConnection | None = None
        self._tables: dict[str, AsyncTable] = {}
        self._create_lock = asyncio.Lock()
        self._indexed: set[str] = set()
        self._writes: dict[str, int] = {}
        self._jobs: dict[str, asyncio.Task[None]] = {}
        # NOTE: one maintenance job (index build or optimize) at a time per replica: a build
        # takes both cores for tens of seconds at 100k rows.
        self._maintenance = asyncio.Semaphore(1)
        self._cache_limit = int(cache_mb * 2**20)
        self._cache: OrderedDict[str, _Cached] = OrderedDict()  # by table name, least recently searched first
        self._cache_bytes = 0
        self.cache_loads = 0  # tables read into memory (a first search, or one after another's write)
        self._stale_pause_s = stale_pause_s
        self._stale: dict[str, int] = {}  # table -> copies found behind, in a row
        # table -> versions this replica's writes committed: a copy behind only these is not
        # behind another writer (its optimize: see _optimize)
        self._own: dict[str, set[int]] = {}
        self._writing: dict[str, int] = {}  # table -> this replica's writes committing now
        # table -> until when (monotonic) LanceDB searches it; forever past index_threshold rows
        self._paused: dict[str, float] = {}
        self._observer = observer

    async def setup(self) -> None:
        if self._db is None:
            with _store_errors("connect"):
                self._db = await lancedb.connect_async(self._uri, read_consistency_interval=self._read_consistency)

    async def close(self) -> None:
        """Stop background jobs (an unfinished index build is redone after a later add)."""
        for job in list(self._jobs.values()):
            job.cancel()
        await asyncio.gather(*self._jobs.values(), return_exceptions=True)
        self._tables.clear()
        self._cache.clear()
        self._cache_moved(-self._cache_bytes)
        self._db = None

    async def wait_background(self) -> None:
        """Wait until the background index builds and optimize runs have finished."""
        while self._jobs:
            await asyncio.gather(*list(self._jobs.values()), return_exceptions=True)

    async def has_index(self, user_id: str) -> bool:
        """Whether the user's table has its vector index (built by any replica)."""
        with _store_errors("list indices"):
            table = await self._table(user_id, create=False)
            return table is not None and await self._has_vector_index(table)

    # ------------------------------------------------------------ the port

    async def add(self, items: list[MemoryItem], vectors: list[list[float]], *, new: bool = False) -> None:
        for user_id, rows, unit in batches_by_user(items, vectors, self._dim):
            data = self._rows([items[i] for i in rows], unit)
            with _store_errors("add"):
                table = await self._table(user_id, create=True)
                assert table is not None
                # NOTE: an append unless one of the ids is there already. For one row a merge
                # (upsert) took ~16 ms here, the look for the ids 2-8 ms (more with more small
                # files) and the append ~5 ms; a turn's remembered message has a new id, so
                # it skips the look (``new``). Two adds of one id at once could both append;
                # ids are minted by the caller, so nothing here does that.
                if not new and await self._holds_any(table, user_id, [items[i].id for i in rows]):
                    merge = table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
                    # NOTE: on an AsyncTable, execute() returns an awaitable (typed as the sync result).
                    with self._own_write(table.name):
                        merged = await cast("Awaitable[Any]", merge.execute(data))
                        self._committed(table.name, int(merged.version))
                    self._cache_drop(table.name)  # rows replaced: the next search reads the table
                else:
                    with self._own_write(table.name):
                        added = await table.add(data)
                        self._committed(table.name, added.version)
                    try:  # the copy must never fail a write that LanceDB has made
                        self._cache_append(table.name, added.version, data, unit)
                    except Exception as exc:
                        log.warning("vector memory: copy of %s dropped: %s: %s", table.name, type(exc).__name__, exc)
                        self._cache_drop(table.name)
            await self._after_write(table)

    async def search(self, user_id: str, vector: list[float], k: int) -> list[MemoryHit]:
        check_k(k)
        query_vector = as_matrix([vector], self._dim)[0]
        with _store_errors("search"):
            table = await self._table(user_id, create=False)
            if table is None:
                self._searched("empty")
                return []
            cached, path = await self._cached(table, user_id)
            self._searched(path)
            if cached is not None:
                return cached.search(query_vector, k)
            query = (
                table.query()
                .nearest_to(query_vector)
                .distance_type("cosine")
                .where(self._owned_by(user_id))
                .postfilter()  # every row is the user's: filtering first would only cost time
                .select([*ITEM_COLUMNS, "_distance"])
                .limit(k)
                .nprobes(self._nprobes)
            )
            if self._refine_factor > 0:
                query = query.refine_factor(self._refine_factor)
            rows = (await query.to_arrow()).to_pylist()
        return [
            MemoryHit(
                item=MemoryItem(**{c: row[c] for c in ITEM_COLUMNS}),
                score=min(1.0, max(-1.0, 1.0 - float(row["_distance"]))),
            )
            for row in rows
        ]

    async def delete(self, user_id: str, item_id: str) -> None:
        if not await self._delete(user_id, self._owned_by(user_id) & (col("id") == lit(item_id))):
            raise memory_not_found(item_id)

    async def delete_session(self, user_id: str, session_id: str) -> int:
        return await self._delete(user_id, self._owned_by(user_id) & (col("session_id") == lit(session_id)))

    async def count(self, user_id: str) -> int:
        with _store_errors("count"):
            table = await self._table(user_id, create=False)
            return 0 if table is None else await table.count_rows(self._owned_by(user_id).to_sql())

    # ------------------------------------------------------------ internals

    @staticmethod
    def _owned_by(user_id: str) -> Expr:
        # NOTE: expressions, not SQL text: LanceDB quotes the values (a "'" in an id is data).
        return col("user_id") == lit(user_id)

    def _rows(self, items: list[MemoryItem], vectors: Matrix) -> pa.Table:
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        columns = [
            pa.array([it.id for it in items], pa.string()),
            pa.array([it.user_id for it in items], pa.string()),
            pa.array([it.session_id for it in items], pa.string()),
            pa.array([it.kind for it in items], pa.string()),
            pa.array([it.text for it in items], pa.string()),
            pa.FixedSizeListArray.from_arrays(flat, self._dim),
            pa.array([as_utc(it.created_at) for it in items], pa.timestamp("us", tz="UTC")),
        ]
        return pa.Table.from_arrays(columns, schema=self._schema)

    async def _holds_any(self, table: AsyncTable, user_id: str, ids: list[str]) -> bool:
        return bool(await table.count_rows((self._owned_by(user_id) & col("id").isin(ids)).to_sql()))

    async def _delete(self, user_id: str, where: Expr) -> int:
        with _store_errors("delete"):
            table = await self._table(user_id, create=False)
            if table is None:
                return 0
            with self._own_write(table.name):
                result = await table.delete(where)
                self._committed(table.name, int(result.version))
            # NOTE: num_deleted_rows is there at runtime (0.40) but missing from the type stubs.
            deleted = int(getattr(result, "num_deleted_rows"))  # noqa: B009
        if deleted:
            self._cache_drop(table.name)  # deleted rows leave the replica's memory now, not at the next search
            await self._after_write(table)
        return deleted

    async def _table(self, user_id: str, *, create: bool) -> AsyncTable | None:
        """The user's table; None when it does not exist and ``create`` is false."""
        if self._db is None:
            raise StoreUnavailableError("vector memory is not set up")
        name = table_name(user_id)
        if name in self._tables:
            return self._tables[name]
        try:
            table = await self._db.open_table(name)
        except ValueError as exc:
            if "not found" not in str(exc).lower():
                raise
            if not create:
                return None
            async with self._create_lock:
                try:
                    table = await self._db.create_table(name, schema=self._schema, exist_ok=True)
                except Exception:  # NOTE: another replica may have created it since our open.
                    table = await self._db.open_table(name)
        self._tables[name] = table
        return table

    async def _cached(self, table: AsyncTable, user_id: str) -> tuple[_Cached | None, str]:
        """The user's table in memory, as of its latest version (read if need be), and the search's
        path (``copy``, ``read``); None and ``lancedb``: search LanceDB."""
        name = table.name
        if not self._cache_limit or self._pause_continues(name):
            return None, "lancedb"
        version = await table.version()
        cached = self._cache.get(name)
        path = "copy"
        if cached is not None and cached.version >= version:  # versions only grow: a later label is as good
            self._stale.pop(name, None)
        else:
            if cached is not None and self._foreign(name, cached.version, version) and self._fell_behind(name):
                return None, "lancedb"  # written through other replicas: LanceDB searches it for a while
            path = "read"
            # NOTE: the rows read may be newer than ``version`` (a write in between): a label
            # never claims more than the rows hold, and a later version reads them again.
            query = table.query().where(self._owned_by(user_id)).limit(self._index_threshold + 1)
            data = await query.to_arrow()
            self.cache_loads += 1
            if data.num_rows > self._index_threshold:
                self._paused[name] = math.inf
                self._cache_drop(name)
                return None, "lancedb"
            vectors = data.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, self._dim)
            meta = data.select(ITEM_COLUMNS).combine_chunks()
            loaded = _Cached(
                version, meta, np.ascontiguousarray(vectors, dtype=np.float32), set(meta["id"].to_pylist())
            )
            cached = self._cache.get(name)  # a write of this replica may have moved it on meanwhile
            if cached is None or cached.version < version:
                self._cache_put(name, loaded)
                cached = loaded
        if name in self._cache:  # not when it alone is over the limit
            self._cache.move_to_end(name)
        return cached, path

    def _fell_behind(self, name: str) -> bool:
        """Count a copy found behind another writer's write; at ``STALE_LIMIT`` in a row, pause the table."""
        self._stale[name] = self._stale.get(name, 0) + 1
        if self._stale[name] < STALE_LIMIT:
            return False
        del self._stale[name]
        self._paused[name] = time.monotonic() + self._stale_pause_s
        self._cache_drop(name)
        return True

    @contextmanager
    def _own_write(self, name: str) -> Iterator[None]:
        """Around one of this replica's commits, until its version is recorded."""
        self._writing[name] = self._writing.get(name, 0) + 1
        try:
            yield
        finally:
            self._writing[name] -= 1
            if not self._writing[name]:
                del self._writing[name]

    def _committed(self, name: str, version: int) -> None:
        own = self._own.setdefault(name, set())
        own.add(version)
        if len(own) > OWN_VERSIONS_KEPT:
            own.discard(min(own))

    def _foreign(self, name: str, since: int, upto: int) -> bool:
        """Whether a version after ``since``, up to ``upto``, was committed by another writer."""
        if self._writing.get(name) or name in self._jobs:
            return False  # a commit of this replica's may be there, not yet known by its version
        own = self._own.get(name, set())
        return any(v not in own for v in range(since + 1, upto + 1))

    def _pause_continues(self, name: str) -> bool:
        until = self._paused.get(name)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._paused[name]
        return False

    def _cache_append(self, name: str, version: int, data: pa.Table, vectors: Matrix) -> None:
        """This replica's append, committed as ``version``: added in memory only if nothing came between."""
        cached = self._cache.get(name)
        if cached is None:
            return
        fresh = data.column("id").to_pylist()
        if cached.ids.issuperset(fresh):
            # NOTE: the table was read while this append committed: it holds the rows (which no
            # version before ``version`` had), so it holds at least ``version``.
            cached.version = max(cached.version, version)
            return
        if cached.version != version - 1 or not cached.ids.isdisjoint(fresh):
            self._cache_drop(name)  # another write came between: the next search reads the table
            if self._foreign(name, cached.version, version - 1):
                self._fell_behind(name)
            return
        if len(cached.ids) + len(fresh) > self._index_threshold:
            self._cache_drop(name)
            return
        meta = pa.concat_tables([cached.meta, data.select(ITEM_COLUMNS)])
        if meta.column(0).num_chunks > 32:  # a take over many small chunks is slower
            meta = meta.combine_chunks()
        self._cache_put(
            name, _Cached(version, meta, np.concatenate([cached.vectors, vectors]), cached.ids | set(fresh))
        )

    def _cache_put(self, name: str, cached: _Cached) -> None:
        self._cache_drop(name)
        if name in self._own:  # versions the copy holds need no account any more
            self._own[name] = {v for v in self._own[name] if v > cached.version}
        self._cache[name] = cached
        self._cache_moved(cached.nbytes)
        while self._cache_bytes > self._cache_limit and self._cache:
            _, evicted = self._cache.popitem(last=False)
            self._cache_moved(-evicted.nbytes)

    def _cache_drop(self, name: str) -> None:
        cached = self._cache.pop(name, None)
        if cached is not None:
            self._cache_moved(-cached.nbytes)

    def _cache_moved(self, delta: int) -> None:
        self._cache_bytes += delta
        if self._observer is not None and delta:
            self._observer.on_vector_cache(delta)

    def _searched(self, path: str) -> None:
        if self._observer is not None:
            self._observer.on_vector_search(path)

    @staticmethod
    async def _has_vector_index(table: AsyncTable) -> bool:
        return any(list(ix.columns) == ["vector"] for ix in await table.list_indices())

    async def _after_write(self, table: AsyncTable) -> None:
        """Start the index build or an optimize run when one is due (never fails the write)."""
        name = table.name
        self._writes[name] = self._writes.get(name, 0) + 1
        if name in self._jobs:
            return
        try:
            if name not in self._indexed and await table.count_rows() >= self._index_threshold:
                self._spawn(name, self._build_index(table))
            elif self._writes[name] >= self._optimize_every:
                self._writes[name] = 0
                self._spawn(name, self._optimize(table))
        except Exception as exc:
            log.warning("vector memory: maintenance check on %s failed: %s", name, exc)

    def _spawn(self, name: str, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job, name=f"vector-memory:{name}")
        self._jobs[name] = task
        task.add_done_callback(lambda done: self._jobs.pop(name, None) if self._jobs.get(name) is done else None)

    async def _build_index(self, table: AsyncTable) -> None:
        async with self._maintenance:
            try:
                if not await self._has_vector_index(table):
                    started = time.monotonic()
                    config = HnswSq(distance_type="cosine", ef_construction=INDEX_EF_CONSTRUCTION)
                    # replace=False: when another replica built it first, this fails instead of redoing it.
                    await table.create_index("vector", config=config, replace=False)
                    log.info("vector memory: indexed %s in %.1f s", table.name, time.monotonic() - started)
            except Exception as exc:  # tried again after a later write (which then finds a rival's index)
                _log_failure("index build", table, exc)
                return
            self._indexed.add(table.name)

    async def _optimize(self, table: AsyncTable) -> None:
        async with self._maintenance:
            try:
                await table.optimize()
            except Exception as exc:
                _log_failure("optimize", table, exc)
            finally:
                # NOTE: the rows are the same, the version is not. Dropped, the copy is read again
                # at the next search, which a copy found behind would count as another writer's
                # doing (every 50 writes, two of those in a row left the table to LanceDB for 30 s).
                self._cache_drop(table.name)
