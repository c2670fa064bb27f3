"""The VectorMemory contract, run on the numpy fake and on LanceDB, then LanceDB's index duties."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import lancedb
import numpy as np
import numpy.typing as npt
import pytest

from agent.errors import InvalidRequestError, NotFoundError, StoreUnavailableError
from agent.ports import MemoryItem, VectorMemory
from memory.lance_memory import LanceVectorMemory, table_name
from memory.vector_in_memory import DIM, InMemoryVectorMemory
from serve_app.observability import PrometheusBackend
from serve_app.observability.observer import MetricsObserver
from tests.support import lance_writer
from tests.support.prom import sample

Vectors = npt.NDArray[np.float32]


def unit_rows(x: npt.NDArray[np.float64]) -> Vectors:
    unit: Vectors = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return unit


def random_vectors(n: int, seed: int = 0) -> Vectors:
    return unit_rows(np.random.default_rng(seed).normal(size=(n, DIM)))


def clustered_vectors(n: int, centres: Vectors, seed: int, spread: float = 1.0) -> Vectors:
    """``n`` points around the ``centres`` (cosine ~0.5 within a cluster)."""
    rng = np.random.default_rng(seed)
    noise = spread * rng.normal(size=(n, DIM)) / np.sqrt(DIM)
    return unit_rows(centres[rng.integers(0, len(centres), n)] + noise)


def near(v: Vectors, seed: int, spread: float = 0.3) -> list[float]:
    """A query close to ``v`` (cosine ~0.9)."""
    noise = spread * np.random.default_rng(seed).normal(size=(1, DIM)) / np.sqrt(DIM)
    return [float(x) for x in unit_rows(v[None, :] + noise)[0]]


def items_for(user_id: str, n: int, prefix: str = "m", session_id: str | None = "s1") -> list[MemoryItem]:
    return [
        MemoryItem(id=f"{prefix}{i}", user_id=user_id, session_id=session_id, text=f"{prefix} text {i}")
        for i in range(n)
    ]


def as_lists(v: Vectors) -> list[list[float]]:
    return [[float(x) for x in row] for row in v]


@pytest.fixture(params=["in_memory", "lance"])
async def memory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorMemory]:
    """Each implementation in turn, set up and empty."""
    made: InMemoryVectorMemory | LanceVectorMemory
    made = InMemoryVectorMemory() if request.param == "in_memory" else LanceVectorMemory(str(tmp_path / "lance"))
    await made.setup()
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def lance(tmp_path: Path) -> AsyncIterator[LanceVectorMemory]:
    made = LanceVectorMemory(str(tmp_path / "lance"), index_threshold=300)
    await made.setup()
    try:
        yield made
    finally:
        await made.close()


# ---------------------------------------------------------------- the contract


async def test_search_returns_the_closest_first_with_cosine_scores(memory: VectorMemory) -> None:
    assert isinstance(memory, VectorMemory)
    vectors = random_vectors(50)
    stored = items_for("alice", 50)
    stored[7] = stored[7].model_copy(update={"kind": "note", "created_at": datetime(2026, 1, 2, 3, 4, 5, 6, UTC)})
    await memory.add(stored, as_lists(vectors))

    query = near(vectors[7], seed=1)
    hits = await memory.search("alice", query, k=10)

    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].item == stored[7]
    assert all(-1.0 <= h.score <= 1.0 for h in hits)
    exact = vectors @ np.asarray(query, dtype=np.float32)
    for h in hits:
        assert h.score == pytest.approx(float(exact[int(h.item.id[1:])]), abs=1e-3)
    assert hits[0].score > 0.8 and hits[-1].score < 0.3


async def test_k_is_respected(memory: VectorMemory) -> None:
    vectors = random_vectors(20)
    await memory.add(items_for("alice", 20), as_lists(vectors))
    assert len(await memory.search("alice", as_lists(vectors)[0], k=5)) == 5
    assert len(await memory.search("alice", as_lists(vectors)[0], k=1)) == 1
    assert len(await memory.search("alice", as_lists(vectors)[0], k=100)) == 20
    with pytest.raises(InvalidRequestError):
        await memory.search("alice", as_lists(vectors)[0], k=0)


async def test_an_unknown_user_has_nothing(memory: VectorMemory) -> None:
    assert await memory.search("nobody", as_lists(random_vectors(1))[0], k=5) == []
    assert await memory.count("nobody") == 0
    assert await memory.delete_session("nobody", "s1") == 0
    with pytest.raises(NotFoundError):
        await memory.delete("nobody", "m1")
    await memory.add([], [])
    assert await memory.count("nobody") == 0


async def test_users_are_isolated(memory: VectorMemory) -> None:
    vectors = random_vectors(30)
    await memory.add(items_for("alice", 20, "a"), as_lists(vectors[:20]))
    # bob's items sit right next to alice's, and one has the same id as one of hers
    await memory.add(
        items_for("bob", 10, "b") + items_for("bob", 1, "a"), [*as_lists(vectors[20:]), near(vectors[0], 2)]
    )

    hits = await memory.search("bob", as_lists(vectors)[0], k=50)
    assert len(hits) == 11 and {h.item.user_id for h in hits} == {"bob"}
    assert all(h.item.user_id == "alice" for h in await memory.search("alice", as_lists(vectors)[25], k=50))
    assert (await memory.count("alice"), await memory.count("bob")) == (20, 11)

    with pytest.raises(NotFoundError):
        await memory.delete("bob", "a5")
    assert await memory.delete_session("bob", "s1") == 11
    assert await memory.count("alice") == 20
    assert "a5" in {h.item.id for h in await memory.search("alice", as_lists(vectors)[5], k=1)}


async def test_delete_removes_one_item(memory: VectorMemory) -> None:
    vectors = random_vectors(10)
    await memory.add(items_for("alice", 10), as_lists(vectors))
    await memory.delete("alice", "m3")
    assert await memory.count("alice") == 9
    assert "m3" not in {h.item.id for h in await memory.search("alice", as_lists(vectors)[3], k=10)}
    with pytest.raises(NotFoundError):
        await memory.delete("alice", "m3")
    with pytest.raises(NotFoundError):
        await memory.delete("alice", "never")


async def test_delete_session_removes_only_that_sessions_items(memory: VectorMemory) -> None:
    vectors = random_vectors(12)
    batch = items_for("alice", 5, "x", "s1") + items_for("alice", 4, "y", "s2") + items_for("alice", 3, "z", None)
    await memory.add(batch, as_lists(vectors))
    await memory.add(items_for("bob", 2, "x", "s1"), as_lists(vectors[:2]))

    assert await memory.delete_session("alice", "s1") == 5
    assert await memory.delete_session("alice", "s1") == 0
    left = await memory.search("alice", as_lists(vectors)[0], k=20)
    assert sorted(h.item.id for h in left) == sorted([f"y{i}" for i in range(4)] + [f"z{i}" for i in range(3)])
    assert await memory.count("bob") == 2


async def test_adding_an_existing_id_replaces_the_item(memory: VectorMemory) -> None:
    vectors = random_vectors(4)
    await memory.add(items_for("alice", 3), as_lists(vectors[:3]))
    changed = MemoryItem(id="m1", user_id="alice", session_id="s9", kind="note", text="changed")
    await memory.add([changed], as_lists(vectors[3:]))
    assert await memory.count("alice") == 3
    hits = await memory.search("alice", as_lists(vectors)[3], k=1)
    assert hits[0].item == changed and hits[0].score == pytest.approx(1.0, abs=1e-4)


async def test_a_batch_of_new_and_existing_ids_replaces_some_and_adds_the_rest(memory: VectorMemory) -> None:
    vectors = random_vectors(5)
    await memory.add(items_for("alice", 2), as_lists(vectors[:2]))
    await memory.add(items_for("bob", 2), as_lists(vectors[:2]))  # the same ids, another user's
    again = [MemoryItem(id=f"m{i}", user_id="alice", text=f"again {i}") for i in range(1, 4)]  # m1 is there
    await memory.add(again, as_lists(vectors[2:]))
    await memory.add(again[2:], as_lists(vectors[4:]))  # the same item twice: still one row
    assert await memory.count("alice") == 4 and await memory.count("bob") == 2
    hits = await memory.search("alice", as_lists(vectors)[0], k=10)
    assert sorted((h.item.id, h.item.text) for h in hits) == [
        ("m0", "m text 0"), ("m1", "again 1"), ("m2", "again 2"), ("m3", "again 3"),
    ]  # fmt: skip
    assert {h.item.text for h in await memory.search("bob", as_lists(vectors)[0], k=10)} == {"m text 0", "m text 1"}


async def test_items_added_as_new_are_stored_and_found(memory: VectorMemory) -> None:
    vectors = random_vectors(4)
    await memory.add(items_for("alice", 2), as_lists(vectors[:2]))
    await memory.add(items_for("alice", 2, prefix="n"), as_lists(vectors[2:]), new=True)
    assert await memory.count("alice") == 4 and await memory.count("bob") == 0
    hits = await memory.search("alice", as_lists(vectors)[3], k=4)
    assert hits[0].item.id == "n1" and {h.item.id for h in hits} == {"m0", "m1", "n0", "n1"}


@pytest.mark.parametrize("user_id", ["org:team.x-1", "o'brien", "a' OR '1'='1", "ünï 😀", ""])
async def test_any_user_id_and_item_id_is_just_data(memory: VectorMemory, user_id: str) -> None:
    vectors = random_vectors(3)
    odd = [MemoryItem(id=i, user_id=user_id, session_id=i, text=i) for i in ["it's", "x' OR 1=1 --", 'q"\\']]
    await memory.add(odd, as_lists(vectors))
    await memory.add(items_for("other", 2), as_lists(vectors[:2]))
    assert {h.item.id for h in await memory.search(user_id, as_lists(vectors)[0], k=5)} == {i.id for i in odd}
    await memory.delete(user_id, "it's")
    assert await memory.delete_session(user_id, "x' OR 1=1 --") == 1
    assert await memory.count(user_id) == 1
    assert await memory.count("other") == 2


async def test_malformed_vectors_are_refused(memory: VectorMemory) -> None:
    with pytest.raises(ValueError):
        await memory.add(items_for("alice", 2), as_lists(random_vectors(1)))
    with pytest.raises(ValueError):
        await memory.add(items_for("alice", 1), [[0.1] * (DIM - 1)])
    with pytest.raises(ValueError):
        await memory.add(items_for("alice", 1), [[0.0] * DIM])
    with pytest.raises(ValueError):
        await memory.search("alice", [0.1] * 3, k=1)
    assert await memory.count("alice") == 0


# ---------------------------------------------------------------- LanceDB's own duties


def test_table_names_are_safe_and_distinct() -> None:
    names = {table_name(u) for u in ["alice", "Alice", "a:b.c-d", "../etc", "", "o'brien"]}
    assert len(names) == 6 and all(re.fullmatch(r"u_[0-9a-f]{32}", n) for n in names)


async def test_the_index_is_built_once_past_the_threshold_with_exact_like_recall(
    lance: LanceVectorMemory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="memory.lance_memory")
    exact = InMemoryVectorMemory()
    centres = random_vectors(20, seed=2)
    data = clustered_vectors(1000, centres, seed=3)
    stored = items_for("alice", 1000)
    for start in range(0, 1000, 250):  # the build starts after the 2nd batch, during the later ones
        batch = stored[start : start + 250], as_lists(data[start : start + 250])
        await lance.add(*batch)
        await exact.add(*batch)
    await lance.wait_background()
    assert await lance.has_index("alice")
    assert not await lance.has_index("bob")

    queries = clustered_vectors(50, centres, seed=4)
    recalls = []
    for q in as_lists(queries):
        got = {h.item.id for h in await lance.search("alice", q, k=10)}
        want = {h.item.id for h in await exact.search("alice", q, k=10)}
        recalls.append(len(got & want) / 10)
    assert np.mean(recalls) >= 0.95

    # rows added after the build are not in the index, and are still found
    late = random_vectors(20, seed=5)
    await lance.add(items_for("alice", 20, "late"), as_lists(late))
    db = await lancedb.connect_async(str(tmp_path / "lance"))
    stats = await (await db.open_table(table_name("alice"))).index_stats("vector_idx")
    assert stats is not None and stats.num_unindexed_rows >= 20
    for i in range(20):
        hits = await lance.search("alice", near(late[i], seed=i), k=3)
        assert hits[0].item.id == f"late{i}"
    await lance.wait_background()
    assert sum("indexed u_" in r.getMessage() for r in caplog.records) == 1


async def test_another_replica_sees_the_writes_and_the_index(
    lance: LanceVectorMemory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="memory.lance_memory")
    data = clustered_vectors(400, random_vectors(8, seed=1), seed=6)
    await lance.add(items_for("alice", 400), as_lists(data))
    await lance.wait_background()
    other = LanceVectorMemory(str(tmp_path / "lance"), index_threshold=300)
    await other.setup()
    try:
        assert await other.count("alice") == 400 and await other.has_index("alice")
        await other.add(items_for("alice", 1, "new"), as_lists(random_vectors(1, seed=7)))
        await other.wait_background()
        assert await lance.count("alice") == 401
        assert (await lance.search("alice", as_lists(random_vectors(1, seed=7))[0], k=1))[0].item.id == "new0"
    finally:
        await other.close()
    assert sum("indexed u_" in r.getMessage() for r in caplog.records) == 1


async def test_lancedb_failures_are_store_unavailable(tmp_path: Path) -> None:
    not_set_up = LanceVectorMemory(str(tmp_path / "x"))
    with pytest.raises(StoreUnavailableError):
        await not_set_up.count("alice")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailableError) as caught:
        await LanceVectorMemory(str(blocker / "lance")).setup()
    assert caught.value.message == "vector memory unavailable (connect failed)"

    gone = LanceVectorMemory(str(tmp_path / "gone"))
    await gone.setup()
    try:
        await gone.add(items_for("alice", 1), as_lists(random_vectors(1)))
        shutil.rmtree(tmp_path / "gone")
        (tmp_path / "gone").write_text("not a directory")
        with pytest.raises(StoreUnavailableError) as caught:
            await gone.add(items_for("alice", 1, "n"), as_lists(random_vectors(1)))
        assert caught.value.message == "vector memory unavailable (add failed)"
    finally:
        await gone.close()


# ---------------------------------------------------------------- the replica's copy of small tables


async def _same_answers(cached: LanceVectorMemory, reference: LanceVectorMemory, queries: Vectors) -> None:
    """Every query gets the same items, in the same order and with the same scores, from both."""
    for q in as_lists(queries):
        got = await cached.search("alice", q, k=5)
        want = await reference.search("alice", q, k=5)
        assert [h.item for h in got] == [h.item for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)


async def test_a_small_table_is_searched_in_memory_and_follows_every_write(tmp_path: Path) -> None:
    """A replica's copy answers as LanceDB does, stays warm through its own writes, and
    reloads after anyone else's write or a delete."""
    uri = str(tmp_path / "lance")
    replica, other = LanceVectorMemory(uri), LanceVectorMemory(uri)
    reference = LanceVectorMemory(uri, cache_mb=0)  # always asks LanceDB
    for m in (replica, other, reference):
        await m.setup()
    queries = random_vectors(6, seed=11)
    try:
        data = random_vectors(40, seed=10)
        await replica.add(items_for("alice", 30), as_lists(data[:30]))
        await _same_answers(replica, reference, queries)
        assert replica.cache_loads == 1

        for i in range(30, 35):  # the replica's own writes keep its copy current
            await replica.add(items_for("alice", 1, f"own{i}"), as_lists(data[i : i + 1]), new=True)
            hits = await replica.search("alice", as_lists(data[i : i + 1])[0], k=1)
            assert hits[0].item.id == f"own{i}0" and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert replica.cache_loads == 1
        await replica.add(items_for("alice", 1), as_lists(data[35:36]))  # replaces m0: read again
        await _same_answers(replica, reference, queries)
        assert replica.cache_loads == 2

        await other.add(items_for("alice", 4, "theirs"), as_lists(data[36:40]))  # another replica
        hits = await replica.search("alice", as_lists(data[37:38])[0], k=1)
        assert hits[0].item.id == "theirs1" and replica.cache_loads == 3
        await _same_answers(replica, reference, queries)

        await other.add(items_for("alice", 1, "between"), as_lists(data[0:1]), new=True)
        await replica.add(items_for("alice", 1, "after"), as_lists(data[1:2]), new=True)  # not the next version
        assert (await replica.search("alice", as_lists(data[0:1])[0], k=2))[0].item.id in {"between0", "m0"}
        await _same_answers(replica, reference, queries)

        await other.delete("alice", "theirs1")
        assert (await replica.search("alice", as_lists(data[37:38])[0], k=1))[0].item.id != "theirs1"
        assert await replica.delete_session("alice", "s1") == 40
        assert await replica.search("alice", as_lists(data[36:37])[0], k=5) == []
        await _same_answers(replica, reference, queries)
    finally:
        for m in (replica, other, reference):
            await m.close()


async def test_the_copy_is_bounded_and_big_tables_stay_in_lancedb(tmp_path: Path) -> None:
    uri = str(tmp_path / "lance")
    small = LanceVectorMemory(uri, cache_mb=0.035, index_threshold=100)  # ~26 kB a user of 15: one fits, not two
    reference = LanceVectorMemory(uri, cache_mb=0, index_threshold=100)
    for m in (small, reference):
        await m.setup()
    try:
        data = random_vectors(150, seed=12)
        for user, rows in (("alice", data[:15]), ("bob", data[15:30])):
            await small.add(items_for(user, 15), as_lists(rows))
        for user in ("alice", "bob", "alice"):
            await small.search(user, as_lists(data[:1])[0], k=3)
        assert small.cache_loads == 3  # bob's copy pushed alice's out, so hers was read again
        assert small._cache_bytes <= small._cache_limit

        await small.add(items_for("alice", 120, "more"), as_lists(data[30:150]))  # past index_threshold
        await small.wait_background()
        loads = small.cache_loads
        for _ in range(3):
            await _same_answers(small, reference, random_vectors(3, seed=13))
        assert small.cache_loads == loads + 1  # found too big once, then never read whole again
    finally:
        for m in (small, reference):
            await m.close()


async def test_a_copy_read_while_its_own_append_committed_does_not_count_the_rows_twice(tmp_path: Path) -> None:
    """The race, set up by hand: the search read the version before this replica's append
    committed, and the rows after; the append then finds its rows there and only moves the
    copy's version on (under load, dropping it made the next search read the table again)."""
    memory = LanceVectorMemory(str(tmp_path / "lance"))
    await memory.setup()
    try:
        data = random_vectors(3, seed=14)
        await memory.add(items_for("alice", 2), as_lists(data[:2]))
        await memory.add(items_for("alice", 1, "raced"), as_lists(data[2:3]), new=True)
        memory._cache.clear()
        await memory.search("alice", as_lists(data[:1])[0], k=1)  # read after the append...
        name = table_name("alice")
        memory._cache[name].version -= 1  # ...labelled with the version before it
        table = await memory._table("alice", create=False)
        assert table is not None
        raced = (await table.query().where("id = 'raced0'").to_arrow()).select(
            [*memory._cache[name].meta.column_names, "vector"]
        )
        memory._cache_append(name, await table.version(), raced, data[2:3])  # the append's own update, late
        loads = memory.cache_loads
        hits = await memory.search("alice", as_lists(data[2:3])[0], k=3)
        assert [h.item.id for h in hits].count("raced0") == 1
        assert memory.cache_loads == loads  # the copy was current, not read again
        other = LanceVectorMemory(str(tmp_path / "lance"))  # and claims no later version than it holds
        await other.setup()
        await other.add(items_for("alice", 1, "later"), as_lists(data[1:2]), new=True)
        await other.close()
        assert "later0" in {h.item.id for h in await memory.search("alice", as_lists(data[1:2])[0], k=2)}
    finally:
        await memory.close()


async def test_a_table_written_through_another_replica_is_left_to_lancedb_for_a_while(tmp_path: Path) -> None:
    """Found behind another replica's writes twice in a row, a copy would be read whole at
    every search: the table is searched in LanceDB for ``stale_pause_s``, then copied again."""
    uri = str(tmp_path / "lance")
    reader, writer = LanceVectorMemory(uri, stale_pause_s=0.3), LanceVectorMemory(uri)
    for m in (reader, writer):
        await m.setup()
    data = random_vectors(8, seed=15)
    try:
        await writer.add(items_for("alice", 1, "w0"), as_lists(data[0:1]))
        assert (await reader.search("alice", as_lists(data[0:1])[0], k=1))[0].item.id == "w00"
        assert reader.cache_loads == 1
        for i in range(1, 5):  # each search finds the other replica's latest write
            await writer.add(items_for("alice", 1, f"w{i}"), as_lists(data[i : i + 1]), new=True)
            assert (await reader.search("alice", as_lists(data[i : i + 1])[0], k=1))[0].item.id == f"w{i}0"
        assert reader.cache_loads == 2  # behind once (read again), behind twice: left to LanceDB
        await asyncio.sleep(0.35)
        await writer.add(items_for("alice", 1, "w5"), as_lists(data[5:6]), new=True)
        assert (await reader.search("alice", as_lists(data[5:6])[0], k=1))[0].item.id == "w50"
        assert reader.cache_loads == 3  # copied again after the pause
    finally:
        for m in (reader, writer):
            await m.close()


async def test_a_replica_whose_appends_keep_landing_after_another_s_leaves_the_table_to_lancedb(
    tmp_path: Path,
) -> None:
    """Between this replica's search and its append another replica writes, so the copy can
    never be extended and each search would read the table whole: that counts as falling
    behind too, and after two in a row LanceDB searches the table."""
    uri = str(tmp_path / "lance")
    one, two = LanceVectorMemory(uri), LanceVectorMemory(uri)
    for m in (one, two):
        await m.setup()
    data = random_vectors(16, seed=16)
    try:
        await two.add(items_for("alice", 1, "first"), as_lists(data[0:1]))
        for i in range(1, 8):
            await one.search("alice", as_lists(data[i : i + 1])[0], k=1)
            await two.add(items_for("alice", 1, f"theirs{i}"), as_lists(data[i : i + 1]), new=True)
            await one.add(items_for("alice", 1, f"mine{i}"), as_lists(data[8 + i : 9 + i]), new=True)
        assert one.cache_loads == 2  # read, fell behind, read again, fell behind: then left to LanceDB
        assert (await one.search("alice", as_lists(data[7:8])[0], k=1))[0].item.id == "theirs70"
    finally:
        for m in (one, two):
            await m.close()


async def test_a_copy_that_cannot_take_a_write_is_dropped_and_the_write_stands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = LanceVectorMemory(str(tmp_path / "lance"))
    await memory.setup()
    try:
        data = random_vectors(2, seed=17)
        await memory.add(items_for("alice", 1, "a"), as_lists(data[0:1]))
        await memory.search("alice", as_lists(data[0:1])[0], k=1)  # the copy is made

        def broken(*args: object) -> None:
            raise ValueError("schema mismatch")

        monkeypatch.setattr(memory, "_cache_append", broken)
        await memory.add(items_for("alice", 1, "b"), as_lists(data[1:2]), new=True)
        assert table_name("alice") not in memory._cache
        assert (await memory.search("alice", as_lists(data[1:2])[0], k=1))[0].item.id == "b0"
    finally:
        await memory.close()


async def test_each_search_is_counted_by_the_path_that_answered_it(
    tmp_path: Path, prometheus: PrometheusBackend
) -> None:
    """The metrics that say whether the copies serve: a search of a user with no table, one
    that reads the table, one from the copy (also after the replica's own append), one read
    again after another replica's write, one left to LanceDB; the copies' bytes follow."""
    uri = str(tmp_path / "lance")
    memory, other = LanceVectorMemory(uri, observer=MetricsObserver()), LanceVectorMemory(uri)
    for m in (memory, other):
        await m.setup()
    data = random_vectors(8, seed=18)

    def searches(path: str) -> float:
        return sample(prometheus.render().decode(), "ray_agentserve_memory_vector_searches_total", 0.0, path=path)

    def cache_bytes() -> float:
        return sample(prometheus.render().decode(), "ray_agentserve_memory_vector_cache_bytes")

    try:
        assert await memory.search("bob", as_lists(data[0:1])[0], k=1) == []
        await memory.add(items_for("alice", 3), as_lists(data[:3]))
        await memory.search("alice", as_lists(data[0:1])[0], k=1)
        await memory.search("alice", as_lists(data[1:2])[0], k=1)
        await memory.add(items_for("alice", 1, "own"), as_lists(data[3:4]), new=True)
        assert (await memory.search("alice", as_lists(data[3:4])[0], k=1))[0].item.id == "own0"
        assert [searches(p) for p in ("empty", "read", "copy", "lancedb")] == [1, 1, 2, 0]
        assert cache_bytes() == memory._cache_bytes > 0

        for i in (4, 5):  # behind another replica's write once (read again), twice (left to LanceDB)
            await other.add(items_for("alice", 1, f"theirs{i}"), as_lists(data[i : i + 1]), new=True)
            assert (await memory.search("alice", as_lists(data[i : i + 1])[0], k=1))[0].item.id == f"theirs{i}0"
        assert [searches(p) for p in ("empty", "read", "copy", "lancedb")] == [1, 2, 2, 1]
        assert cache_bytes() == memory._cache_bytes == 0  # the copy was dropped with the pause

        await memory.search("carol", as_lists(data[0:1])[0], k=1)
        await memory.add(items_for("carol", 2), as_lists(data[6:8]))
        await memory.search("carol", as_lists(data[6:7])[0], k=1)
        assert cache_bytes() > 0
        await memory.close()
        assert cache_bytes() == 0
    finally:
        for m in (memory, other):
            await m.close()


class _Paths:
    """A ``VectorSearchObserver`` that keeps the paths."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def on_vector_search(self, path: str) -> None:
        self.paths.append(path)

    def on_vector_cache(self, delta_bytes: int) -> None:
        return None


async def test_the_replica_s_own_optimize_does_not_hand_the_table_to_lancedb(tmp_path: Path) -> None:
    """An ``optimize`` (every ``optimize_every`` writes) made by this replica moves the
    table's version as another writer's write would: the copy is read again, but that is
    not falling behind, so the table is never left to LanceDB (under goal 1's turn it was,
    for 30 s after each optimize)."""
    uri = str(tmp_path / "lance")
    seen = _Paths()
    memory = LanceVectorMemory(uri, optimize_every=3, observer=seen)
    reference = LanceVectorMemory(uri, cache_mb=0)
    for m in (memory, reference):
        await m.setup()
    data = random_vectors(30, seed=19)
    try:
        await memory.add(items_for("alice", 2), as_lists(data[:2]))
        for i in range(2, 26):  # a turn: recall, then its message remembered
            hits = await memory.search("alice", as_lists(data[i - 1 : i])[0], k=1)
            assert hits[0].score == pytest.approx(1.0, abs=1e-5)
            await memory.add(items_for("alice", 1, f"t{i}"), as_lists(data[i : i + 1]), new=True)
            await memory.wait_background()  # (a search while it runs: the next test)
        await memory.wait_background()
        await _same_answers(memory, reference, random_vectors(4, seed=20))
        assert "lancedb" not in seen.paths, " ".join(seen.paths)
        assert seen.paths.count("read") >= 3  # the optimizes did make it read again
    finally:
        for m in (memory, reference):
            await m.close()


async def test_the_replica_s_own_deletes_do_not_hand_the_table_to_lancedb(tmp_path: Path) -> None:
    seen = _Paths()
    memory = LanceVectorMemory(str(tmp_path / "lance"), observer=seen)
    await memory.setup()
    data = random_vectors(4, seed=23)
    try:
        await memory.add(items_for("alice", 4), as_lists(data))
        await memory.search("alice", as_lists(data[0:1])[0], k=1)
        for gone in ("m0", "m1"):
            await memory.delete("alice", gone)
            assert gone not in {h.item.id for h in await memory.search("alice", as_lists(data[0:1])[0], k=4)}
        assert (await memory.search("alice", as_lists(data[3:4])[0], k=1))[0].item.id == "m3"
        assert seen.paths == ["read", "read", "read", "copy"]
    finally:
        await memory.close()


async def test_after_its_own_optimize_one_other_writer_does_not_hand_the_table_to_lancedb(tmp_path: Path) -> None:
    """The copy a replica's own optimize left behind is dropped with the job, so the
    replica's next append is not counted as falling behind, nor is another writer's
    write after it counted twice."""
    uri = str(tmp_path / "lance")
    seen = _Paths()
    memory, other = LanceVectorMemory(uri, optimize_every=2, observer=seen), LanceVectorMemory(uri)
    for m in (memory, other):
        await m.setup()
    data = random_vectors(6, seed=21)
    try:
        await memory.add(items_for("alice", 1, "a"), as_lists(data[0:1]))
        await memory.search("alice", as_lists(data[0:1])[0], k=1)
        await memory.add(items_for("alice", 1, "b"), as_lists(data[1:2]), new=True)  # the second write: optimize
        await memory.wait_background()
        await memory.add(items_for("alice", 1, "c"), as_lists(data[2:3]), new=True)
        await memory.search("alice", as_lists(data[2:3])[0], k=1)
        await other.add(items_for("alice", 1, "d"), as_lists(data[3:4]), new=True)
        assert (await memory.search("alice", as_lists(data[3:4])[0], k=1))[0].item.id == "d0"
        assert seen.paths == ["read", "read", "read"]
    finally:
        for m in (memory, other):
            await m.close()


async def test_a_search_while_the_replica_s_own_optimize_runs_is_not_falling_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search between the optimize's commit and the end of its job finds the copy behind;
    that is this replica's doing, so one other writer's write after it does not pause the table."""
    uri = str(tmp_path / "lance")
    seen = _Paths()
    memory, other = LanceVectorMemory(uri, optimize_every=2, observer=seen), LanceVectorMemory(uri)
    for m in (memory, other):
        await m.setup()
    data = random_vectors(6, seed=22)
    committed, finish = asyncio.Event(), asyncio.Event()
    try:
        await memory.add(items_for("alice", 1, "a"), as_lists(data[0:1]))
        await memory.search("alice", as_lists(data[0:1])[0], k=1)
        table = await memory._table("alice", create=False)
        assert table is not None
        optimize = table.optimize

        async def held_optimize(*args: object, **kwargs: object) -> object:
            done = await optimize()
            committed.set()
            await finish.wait()  # the job is still running
            return done

        monkeypatch.setattr(table, "optimize", held_optimize)
        before = await table.version()
        await memory.add(items_for("alice", 1, "b"), as_lists(data[1:2]), new=True)  # the second write: optimize
        await asyncio.wait_for(committed.wait(), 30)
        assert await table.version() > before + 1  # the append, then the optimize's commit
        assert (await memory.search("alice", as_lists(data[1:2])[0], k=1))[0].item.id == "b0"
        await other.add(items_for("alice", 1, "c"), as_lists(data[2:3]), new=True)
        assert (await memory.search("alice", as_lists(data[2:3])[0], k=1))[0].item.id == "c0"
        finish.set()
        await memory.wait_background()
        assert seen.paths == ["read", "read", "read"]
    finally:
        finish.set()
        for m in (memory, other):
            await m.close()


async def test_one_replica_s_searches_and_appends_at_once_never_hand_the_table_to_lancedb(tmp_path: Path) -> None:
    """Under load one replica reads its table while its own appends commit, so a copy is
    found behind versions that this replica wrote: that is not another writer, and the
    table is not paused (in `bench.throughput` with semantic memory on, the baseline, one
    process, searched LanceDB on a quarter of its turns)."""
    uri = str(tmp_path / "lance")
    seen = _Paths()
    memory = LanceVectorMemory(uri, observer=seen, optimize_every=7)
    reference = LanceVectorMemory(uri, cache_mb=0)
    for m in (memory, reference):
        await m.setup()
    data = random_vectors(160, seed=24)
    try:
        await memory.add(items_for("alice", 10), as_lists(data[:10]))
        for i in range(10, 160, 6):
            await asyncio.gather(
                *(memory.search("alice", as_lists(data[j : j + 1])[0], k=3) for j in range(i - 6, i)),
                *(
                    memory.add(items_for("alice", 1, f"t{j}"), as_lists(data[j : j + 1]), new=True)
                    for j in range(i, i + 6)
                ),
            )
        await memory.wait_background()
        await _same_answers(memory, reference, random_vectors(4, seed=25))
        assert "lancedb" not in seen.paths, " ".join(seen.paths)
    finally:
        for m in (memory, reference):
            await m.close()


async def test_a_copy_behind_only_the_replica_s_own_commit_is_not_behind_another_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search that asked for the version just before the replica's own append committed,
    and read the table just after, labels its copy with the version before (set up here by
    holding ``version()`` back once): the next search reads the table again, but the
    version it finds is the replica's own, so one other writer's write after it does not
    pause the table."""
    uri = str(tmp_path / "lance")
    seen = _Paths()
    memory, other = LanceVectorMemory(uri, observer=seen), LanceVectorMemory(uri)
    for m in (memory, other):
        await m.setup()
    data = random_vectors(4, seed=26)
    try:
        await memory.add(items_for("alice", 1, "a"), as_lists(data[0:1]))
        table = await memory._table("alice", create=False)
        assert table is not None
        before = await table.version()
        await memory.add(items_for("alice", 1, "b"), as_lists(data[1:2]), new=True)  # no copy yet
        version = table.version

        async def held_back() -> int:
            monkeypatch.setattr(table, "version", version)
            return before

        monkeypatch.setattr(table, "version", held_back)
        assert (await memory.search("alice", as_lists(data[1:2])[0], k=1))[0].item.id == "b0"
        assert memory._cache[table_name("alice")].version == before  # holds b, labelled before it
        assert (await memory.search("alice", as_lists(data[1:2])[0], k=1))[0].item.id == "b0"
        await other.add(items_for("alice", 1, "c"), as_lists(data[2:3]), new=True)
        assert (await memory.search("alice", as_lists(data[2:3])[0], k=1))[0].item.id == "c0"
        assert seen.paths == ["read", "read", "read"]
    finally:
        for m in (memory, other):
            await m.close()


async def test_two_replicas_writing_one_table_at_once_lose_nothing(tmp_path: Path) -> None:
    """Two processes (two Agent replicas) create, append to, replace in and delete from one
    user's table at the same time, each building the index and compacting it as it goes:
    LanceDB retries the commits that conflict, so no write fails and every item either
    wrote ends as its last write left it, with no other row."""
    uri = str(tmp_path / "lance")
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(2), ctx.Queue()
    writers = [ctx.Process(target=lance_writer.write, args=(uri, tag, 150, start, results)) for tag in "ab"]
    for p in writers:
        p.start()
    try:
        done = dict(results.get(timeout=180) for _ in writers)
    finally:
        for p in writers:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert done["a"]["errors"] == [] and done["b"]["errors"] == []
    expected = {**done["a"]["live"], **done["b"]["live"]}
    assert len(expected) == 2 * 94  # 150 writes each: 107 appends, 30 replacements, 13 deletions
    memory = LanceVectorMemory(uri)
    await memory.setup()
    try:
        table = await memory._table("alice", create=False)
        assert table is not None
        rows = (await table.query().select(["id", "text"]).to_arrow()).to_pylist()
        assert {r["id"]: r["text"] for r in rows} == expected and len(rows) == len(expected)
        assert await memory.has_index("alice")
    finally:
        await memory.close()


async def test_optimizing_an_indexed_table_writes_nothing_to_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Lance's own (Rust) warnings go to the process's stderr as plain text, past the JSON
    logs: an optimize that folds new rows into the index, every ``optimize_every`` writes in
    production, must not write one (Lance 13's notice about index statistics, opted out of
    at import)."""
    memory = LanceVectorMemory(str(tmp_path / "lance"), index_threshold=40, optimize_every=1000)
    await memory.setup()
    try:
        await memory.add(items_for("alice", 45), as_lists(random_vectors(45, seed=30)))
        await memory.wait_background()
        assert await memory.has_index("alice")
        await memory.add(items_for("alice", 3, "late"), as_lists(random_vectors(3, seed=31)), new=True)
        capfd.readouterr()
        table = await memory._table("alice", create=False)
        assert table is not None
        await memory._optimize(table)
        err = capfd.readouterr().err
        assert "WARN" not in err and "centroids" not in err, err
    finally:
        await memory.close()
