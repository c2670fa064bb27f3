"""Conversation store latency: SQLite vs PostgreSQL, and the session cache in front of them.

For each store (SQLite in a temp dir; PostgreSQL in a throwaway database
``agentserve_bench_<hex>`` on ``--pg``) this measures, in one process, one
operation at a time:

1. **session reads** on ``--turns`` fresh sessions of ``2 * --history``
   messages each (four-message tool turns, written in one append): per session,
   interleaved, the uncached store (``get_session`` + ``history(limit=50)``: the
   baseline), then ``CachedConversationStore`` with ``InProcessSessionCache``
   and with ``RedisSessionCache`` (db 15 of ``--redis``, a unique key prefix),
   each a miss (the wrapper's first load of the session: a fresh key) and then
   a hit (the same load again). ``get_session`` always reads the store, so the
   table shows ``history`` alone and the whole load.
2. **append** of one turn (user, assistant with a tool call, tool, assistant)
   to each of those sessions.
3. **hit rate of a chat**: turns as ``Agent`` runs them (``get_or_create_session``,
   ``history``, ``append``) through each cached store.

Every measurement is preceded by a warm-up on other sessions. Run
``python -m bench.store_latency``; results go to ``bench/results/store_latency.json``.
The throwaway database and the Redis keys are removed on success and on error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import redis.asyncio as redis

from agent.dto import Message, Role, ToolCall
from agent.ports import ConversationStore
from memory.postgres_store import PostgresConversationStore
from memory.session_cache import CachedConversationStore, InProcessSessionCache, RedisSessionCache
from memory.sqlite_store import SqliteConversationStore

RESULTS = Path(__file__).parent / "results"
USER = "bench-user"
HISTORY_LIMIT = 50  # AgentConfig.history_limit's default
WARMUP = 20
CHAT_SESSIONS, CHAT_TURNS = 20, 5
ANSWER = "The product of 17 and 23 is 391. " * 8  # ~260 characters, a short reply


def tool_turn(i: int) -> list[Message]:
    """One turn as the agent stores it: user, assistant with a tool call, tool result, answer."""
    call = ToolCall(id=f"call_{uuid.uuid4().hex}", name="calculator", arguments='{"expression": "17*23"}')
    return [
        Message(role=Role.USER, content=f"question {i}: what is 17*23? Please show the working."),
        Message(role=Role.ASSISTANT, content=None, tool_calls=[call]),
        Message(role=Role.TOOL, content="391", tool_call_id=call.id, name="calculator"),
        Message(role=Role.ASSISTANT, content=ANSWER),
    ]


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(np.mean(ms)), 3),
        "n": len(ms),
    }


async def timed(call: Awaitable[Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call
    return (time.perf_counter() - started) * 1000, result


async def new_sessions(store: ConversationStore, count: int, n_messages: int) -> list[str]:
    ids = []
    for _ in range(count):
        session = await store.get_or_create_session(None, USER)
        messages = [m for i in range(-(-n_messages // 4)) for m in tool_turn(i)][:n_messages]
        await store.append(session.id, messages)
        ids.append(session.id)
    return ids


class Samples:
    """Latencies (ms) by name, and how many reads the cache did not answer as expected."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = {}
        self.fallbacks: dict[str, int] = {}

    def add(self, name: str, ms: float) -> None:
        self.ms.setdefault(name, []).append(ms)


async def read_pass(
    store: ConversationStore, caches: dict[str, CachedConversationStore], ids: list[str], n_messages: int, out: Samples
) -> None:
    """Baseline, then each cache's miss and hit, per session (interleaved so drift hits all alike)."""
    want = min(n_messages, HISTORY_LIMIT)
    for sid in ids:
        gs, _ = await timed(store.get_session(sid, USER))
        hist, got = await timed(store.history(sid, HISTORY_LIMIT))
        assert len(got) == want, (len(got), want)
        out.add("store.history", hist)
        out.add("store.load", gs + hist)
        for name, cached in caches.items():
            for outcome in ("miss", "hit"):
                before = cached.hits if outcome == "hit" else cached.misses
                gs, _ = await timed(cached.get_session(sid, USER))
                hist, got = await timed(cached.history(sid, HISTORY_LIMIT))
                assert len(got) == want, (len(got), want)
                after = cached.hits if outcome == "hit" else cached.misses
                if after != before + 1:  # the cache failed (e.g. a Redis timeout) and the store answered
                    out.fallbacks[f"{name}.{outcome}"] = out.fallbacks.get(f"{name}.{outcome}", 0) + 1
                    continue
                out.add(f"{name}.{outcome}.history", hist)
                out.add(f"{name}.{outcome}.load", gs + hist)


async def chat_hit_rate(cached: CachedConversationStore) -> dict[str, int]:
    """Turns in the order ``Agent._turn`` makes its store calls; counts the wrapper's hits and misses."""
    hits, misses = cached.hits, cached.misses
    for _ in range(CHAT_SESSIONS):
        session_id = None
        for t in range(CHAT_TURNS):
            session = await cached.get_or_create_session(session_id, USER)
            session_id = session.id
            await cached.history(session_id, HISTORY_LIMIT)
            await cached.append(session_id, tool_turn(t))
    return {"turns": CHAT_SESSIONS * CHAT_TURNS, "hits": cached.hits - hits, "misses": cached.misses - misses}


async def bench_store(
    name: str, store: ConversationStore, redis_cache: RedisSessionCache, a: argparse.Namespace
) -> dict[str, Any]:
    n_messages = 2 * a.history
    await store.setup()
    caches = {
        "inprocess": CachedConversationStore(store, InProcessSessionCache(max_entries=10 * a.turns)),
        "redis": CachedConversationStore(store, redis_cache),
    }
    print(f"{name}: writing {a.turns + WARMUP} sessions of {n_messages} messages ...", flush=True)
    warm_ids = await new_sessions(store, WARMUP, n_messages)
    ids = await new_sessions(store, a.turns, n_messages)

    print(f"{name}: reads ...", flush=True)
    await read_pass(store, caches, warm_ids, n_messages, Samples())
    reads = Samples()
    await read_pass(store, caches, ids, n_messages, reads)

    print(f"{name}: appends ...", flush=True)
    for sid in warm_ids:
        await store.append(sid, tool_turn(0))
    turns = [tool_turn(i) for i in range(len(ids))]  # built before the clock starts
    appends = []
    for sid, turn in zip(ids, turns, strict=True):
        ms, _ = await timed(store.append(sid, turn))
        appends.append(ms)

    print(f"{name}: chat hit rate ...", flush=True)
    chat = {cache: await chat_hit_rate(cached) for cache, cached in caches.items()}
    return {
        "append_turn": summary(appends),
        "reads": {key: summary(ms) for key, ms in reads.ms.items()},
        "cache_fallbacks": reads.fallbacks,
        "chat_hit_rate": chat,
    }


@asynccontextmanager
async def throwaway_database(server: str) -> AsyncIterator[tuple[str, int]]:
    """A new PostgreSQL database on ``server`` (a URL without a database), dropped afterwards; its DSN and version."""
    db = f"agentserve_bench_{uuid.uuid4().hex[:12]}"
    admin = f"{server}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
        server_version = conn.info.server_version
    try:
        yield f"{server}/{db}", server_version
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


async def delete_keys(url: str, prefix: str) -> int:
    client: Any = redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


async def main_async(a: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    prefix = f"agentserve-bench:{uuid.uuid4().hex[:12]}"
    stores: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
            sqlite_store = SqliteConversationStore(os.path.join(tmp, "conversations.db"))
            cache = RedisSessionCache(a.redis, prefix=f"{prefix}:sqlite")
            try:
                stores["sqlite"] = await bench_store("sqlite", sqlite_store, cache, a)
            finally:
                await cache.close()
                await sqlite_store.close()
        async with throwaway_database(a.pg) as (dsn, server_version):
            pg_store = PostgresConversationStore(dsn)
            cache = RedisSessionCache(a.redis, prefix=f"{prefix}:postgres")
            try:
                stores["postgres"] = await bench_store("postgres", pg_store, cache, a)
            finally:
                await cache.close()
                await pg_store.close()
    finally:
        deleted = await delete_keys(a.redis, prefix)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "versions": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "postgres_server": server_version,
            **{p: version(p) for p in ("psycopg", "psycopg-pool", "redis", "pydantic")},
        },
        "setup": {
            "turns": a.turns,
            "messages_per_read_session": 2 * a.history,
            "history_limit": HISTORY_LIMIT,
            "redis": a.redis,
            "redis_keys_deleted": deleted,
        },
        "stores": stores,
    }


def ratio(a: dict[str, float], b: dict[str, float], key: str) -> str:
    return f"{a[key] / b[key]:.2f}"


def print_tables(results: dict[str, Any]) -> None:
    s = results["setup"]
    print(
        f"\n{s['turns']} samples each; read sessions hold {s['messages_per_read_session']} messages, "
        f"history(limit={s['history_limit']}); load average before {results['loadavg_before']}, "
        f"after {results['loadavg_after']} on {results['cpus']} CPUs\n"
    )
    print("| store | operation | p50 ms | p99 ms |")
    print("| --- | --- | ---: | ---: |")
    for store, r in results["stores"].items():
        rows = [
            ("append one turn (4 messages)", r["append_turn"]),
            (f"history(limit={s['history_limit']})", r["reads"]["store.history"]),
            ("get_session + history", r["reads"]["store.load"]),
        ]
        for op, m in rows:
            print(f"| {store} | {op} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} |")

    print(
        "\n| store | cache | what is timed | store (baseline) p50 / p99 | miss p50 / p99 | hit p50 / p99"
        " | hit/miss p50 | hit/baseline p50 | chat turns hit |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for store, r in results["stores"].items():
        reads = r["reads"]
        for cache in ("inprocess", "redis"):
            chat = r["chat_hit_rate"][cache]
            for what in ("history", "load"):
                base, miss, hit = reads[f"store.{what}"], reads[f"{cache}.miss.{what}"], reads[f"{cache}.hit.{what}"]
                label = "history" if what == "history" else "get_session + history"
                print(
                    f"| {store} | {cache} | {label} "
                    f"| {base['p50_ms']:.3f} / {base['p99_ms']:.3f} "
                    f"| {miss['p50_ms']:.3f} / {miss['p99_ms']:.3f} "
                    f"| {hit['p50_ms']:.3f} / {hit['p99_ms']:.3f} "
                    f"| {ratio(hit, miss, 'p50_ms')} | {ratio(hit, base, 'p50_ms')} "
                    f"| {chat['hits']}/{chat['turns']} |"
                )
        if r["cache_fallbacks"]:
            print(f"| {store} | cache fallbacks (excluded) | {r['cache_fallbacks']} | | | | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=500, help="timed samples per measurement (appends, reads)")
    parser.add_argument(
        "--history", type=int, default=20, help="user/assistant exchanges per read session: 2N messages"
    )
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432", help="server URL, no database")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--out", type=Path, default=RESULTS / "store_latency.json")
    a = parser.parse_args()
    started = time.perf_counter()
    results = asyncio.run(main_async(a))
    results["wall_s"] = round(time.perf_counter() - started, 1)
    print_tables(results)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {a.out} ({results['wall_s']} s)")


if __name__ == "__main__":
    main()
