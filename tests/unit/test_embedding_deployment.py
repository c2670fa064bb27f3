"""EmbeddingDeployment: a call alone is encoded at once, overlapping calls share one batch.

The deployment class runs here without Ray (its batcher is plain asyncio); the
encoder records what it was asked to encode, so each test sees which path a call took.
The Serve tier runs the same class in a replica (tests/serve/test_handles.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from deployments.embedding import EmbeddingDeployment
from tests.support.fake_embedder import HashingEmbedder


class RecordingEncoder:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def encode(self, texts: list[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        return [HashingEmbedder._one(t) for t in texts]


def deployment(**args: Any) -> tuple[EmbeddingDeployment, RecordingEncoder]:
    enc = RecordingEncoder()
    return EmbeddingDeployment({"max_batch_size": 64, "batch_wait_timeout_s": 0.05, **args}, encoder=enc), enc


async def test_a_call_alone_skips_the_batch_queue() -> None:
    dep, enc = deployment()
    batched: list[str] = []
    real = dep._batcher.submit

    async def spy(text: str) -> list[float]:
        batched.append(text)
        return await real(text)

    dep._batcher.submit = spy  # type: ignore[method-assign]
    for text in ("one", "two"):
        [vec] = await dep.embed([text])
        assert vec == HashingEmbedder._one(text)
    both = await dep.embed(["three", "four"])
    assert both == [HashingEmbedder._one("three"), HashingEmbedder._one("four")]
    assert await dep.embed([]) == []
    # Nothing went through the batcher: each call was encoded by itself, in order.
    assert batched == []
    assert enc.batches == [["one"], ["two"], ["three", "four"]]


async def test_calls_that_overlap_are_encoded_as_one_batch() -> None:
    dep, enc = deployment()
    texts = [f"text {i}" for i in range(10)]
    vectors = await asyncio.gather(*(dep.embed([t]) for t in texts))
    assert [v[0] for v in vectors] == [HashingEmbedder._one(t) for t in texts]
    assert enc.batches == [texts]


async def test_a_call_arriving_while_others_wait_joins_their_batch() -> None:
    dep, enc = deployment()
    first = [asyncio.create_task(dep.embed([f"early {i}"])) for i in range(3)]
    await asyncio.sleep(0.01)  # inside the 50 ms batch wait of the first three
    late = await dep.embed(["late"])
    await asyncio.gather(*first)
    assert late == [HashingEmbedder._one("late")]
    assert enc.batches == [["early 0", "early 1", "early 2", "late"]]


async def test_the_batch_size_limit_still_holds() -> None:
    dep, enc = deployment(max_batch_size=4)
    texts = [f"t{i}" for i in range(10)]
    await asyncio.gather(*(dep.embed([t]) for t in texts))
    assert sorted(t for b in enc.batches for t in b) == sorted(texts)
    assert max(len(b) for b in enc.batches) == 4


async def test_a_failing_encode_fails_the_call_and_the_replica_goes_on() -> None:
    dep, enc = deployment()
    boom = RuntimeError("model failed")

    def failing(texts: list[str]) -> list[list[float]]:
        raise boom

    dep.embedder = type("Failing", (), {"encode": staticmethod(failing)})()  # type: ignore[assignment]
    try:
        await dep.embed(["x"])
        raise AssertionError("expected the encoder's error")
    except RuntimeError as exc:
        assert exc is boom
    dep.embedder = enc
    assert await dep.embed(["y"]) == [HashingEmbedder._one("y")]
    assert dep._in_flight == 0


async def test_a_failing_batch_fails_its_calls_and_the_replica_goes_on() -> None:
    dep, enc = deployment()

    def failing(texts: list[str]) -> list[list[float]]:
        raise RuntimeError("model failed")

    dep.embedder = type("Failing", (), {"encode": staticmethod(failing)})()  # type: ignore[assignment]
    results = await asyncio.gather(*(dep.embed([t]) for t in ("a", "b", "c")), return_exceptions=True)
    assert [str(r) for r in results] == ["model failed"] * 3
    dep.embedder = enc
    assert await asyncio.gather(dep.embed(["d"]), dep.embed(["e"])) == [
        [HashingEmbedder._one("d")],
        [HashingEmbedder._one("e")],
    ]
    assert enc.batches == [["d", "e"]]
    assert dep._in_flight == 0
