"""Vector memory search: LanceDB (flat, then IVF_HNSW_SQ) vs exact numpy search, per size.

For each size N, one user gets N clustered synthetic 384-d unit vectors (N/1000
clusters, at least 10; cosine ~0.5 within a cluster, ~0 between) in both
``LanceVectorMemory`` (a temporary directory, default settings but
``index_threshold=N``) and ``InMemoryVectorMemory`` (exact numpy search). Both
are driven through the ``VectorMemory`` port, so the figures include building
``MemoryHit`` objects. Steps:

1. add N-1 items (batches of 5,000) and time flat LanceDB search (no index yet);
2. add the N-th item: that add starts the index build in the background; wait;
3. time ``--queries`` sequential searches (k=10) on both, after a short warm-up,
   and compare LanceDB's top 10 with the exact top 10 (recall@10).

Run ``python -m bench.memory_search --sizes 10000,100000``; results go to
``bench/results/memory_search.json``. ~3-4 min on 2 cores (the 100k build dominates).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.ports import MemoryItem, VectorMemory
from memory.lance_memory import INDEX_EF_CONSTRUCTION, LanceVectorMemory
from memory.vector_in_memory import DIM, InMemoryVectorMemory

RESULTS = Path(__file__).parent / "results"
USER = "bench-user"
BATCH = 5000
K = 10

Vectors = npt.NDArray[np.float32]


def unit_rows(x: npt.NDArray[np.float64]) -> Vectors:
    unit: Vectors = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return unit


def clustered(n: int, n_queries: int, seed: int) -> tuple[Vectors, Vectors]:
    """``n`` data points and ``n_queries`` queries drawn around the same random centres."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(max(10, n // 1000), DIM)))

    def around(m: int) -> Vectors:
        return unit_rows(centres[rng.integers(0, len(centres), m)] + rng.normal(size=(m, DIM)) / np.sqrt(DIM))

    return around(n), around(n_queries)


async def add_range(mem: VectorMemory, data: Vectors, start: int, stop: int) -> None:
    for lo in range(start, stop, BATCH):
        hi = min(stop, lo + BATCH)
        items = [MemoryItem(id=f"m{i}", user_id=USER, session_id="s", text=f"item {i}") for i in range(lo, hi)]
        await mem.add(items, data[lo:hi].tolist())


async def timed_searches(
    search: Callable[[list[float]], Awaitable[list[str]]], queries: Vectors, warmup: int = 10
) -> tuple[list[float], list[list[str]]]:
    for q in queries[:warmup]:
        await search(q.tolist())
    latencies, answers = [], []
    for q in queries:
        as_list = q.tolist()
        started = time.perf_counter()
        answers.append(await search(as_list))
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, answers


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "n": len(latencies),
    }


def ids_of(mem: VectorMemory) -> Callable[[list[float]], Awaitable[list[str]]]:
    async def search(q: list[float]) -> list[str]:
        return [h.item.id for h in await mem.search(USER, q, K)]

    return search


def recall(got: list[list[str]], want: list[list[str]]) -> float:
    return round(float(np.mean([len(set(g) & set(w)) / K for g, w in zip(got, want, strict=True)])), 4)


async def run_size(n: int, a: argparse.Namespace) -> dict[str, Any]:
    data, queries = clustered(n, a.queries, seed=n)
    exact = InMemoryVectorMemory()
    await add_range(exact, data, 0, n)
    exact_lat, exact_ids = await timed_searches(ids_of(exact), queries)

    with tempfile.TemporaryDirectory(prefix="bench-lance-") as tmp:
        lance = LanceVectorMemory(tmp, index_threshold=n)
        await lance.setup()
        try:
            started = time.perf_counter()
            await add_range(lance, data, 0, n - 1)
            add_s = time.perf_counter() - started
            flat_lat, flat_ids = await timed_searches(ids_of(lance), queries[: a.flat_queries], warmup=3)

            started = time.perf_counter()
            await add_range(lance, data, n - 1, n)  # reaches the threshold: the build starts
            await lance.wait_background()
            build_s = time.perf_counter() - started
            assert await lance.has_index(USER), "the index was not built"
            index_lat, index_ids = await timed_searches(ids_of(lance), queries)
        finally:
            await lance.close()

    return {
        "n": n,
        "clusters": max(10, n // 1000),
        "exact_numpy": summary(exact_lat),
        "lance_flat": {**summary(flat_lat), "recall_at_10": recall(flat_ids, exact_ids[: a.flat_queries])},
        "lance_indexed": {**summary(index_lat), "recall_at_10": recall(index_ids, exact_ids)},
        "lance_add_s": round(add_s, 1),
        "index_build_s": round(build_s, 1),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'N':>7} {'stack':<22} {'p50 ms':>8} {'p99 ms':>8} {'recall@10':>9} {'queries':>7}")
    for r in rows:
        for stack in ("exact_numpy", "lance_flat", "lance_indexed"):
            s = r[stack]
            rec = f"{s['recall_at_10']:.3f}" if "recall_at_10" in s else "1 (ref)"
            print(f"{r['n']:>7} {stack:<22} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {rec:>9} {s['n']:>7}")
        print(f"{'':>7} LanceDB add {r['lance_add_s']} s, index build {r['index_build_s']} s")


async def main_async(a: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for n in a.sizes:
        print(f"N={n} ...", flush=True)
        rows.append(await run_size(n, a))
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "loadavg_after": os.getloadavg(),
        "versions": {p: version(p) for p in ("lancedb", "pyarrow", "numpy")},
        "index": {"type": "IVF_HNSW_SQ", "distance": "cosine", "ef_construction": INDEX_EF_CONSTRUCTION},
        "search": {"k": K, "nprobes": 20, "refine_factor": 10},
        "sizes": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--queries", type=int, default=200, help="timed queries per stack (indexed, exact)")
    parser.add_argument("--flat-queries", type=int, default=50, help="timed queries before the index exists")
    parser.add_argument("--out", type=Path, default=RESULTS / "memory_search.json")
    a = parser.parse_args()
    results = asyncio.run(main_async(a))
    print_table(results["sizes"])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
