"""EmbeddingDeployment: all-MiniLM-L6-v2 with dynamic batching (``@serve.batch``)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from ray import serve

from deployments.process import set_up_replica_process
from memory.embedder import SentenceTransformerEmbedder
from serve_app.args import EmbeddingArgs
from serve_app.observability import get_metrics

_DEFAULTS = EmbeddingArgs()  # the decorator's values; __init__ sets the configured ones


class Encoder(Protocol):
    def encode(self, texts: list[str]) -> list[list[float]]: ...


class EmbeddingDeployment:
    """Embeds texts; concurrent requests are gathered into one model batch.

    Args:
        args: ``EmbeddingArgs`` (or its dict): model path and batching knobs.
        encoder: What encodes (tests); the model at ``args.model_path`` by default.
    """

    def __init__(self, args: EmbeddingArgs | dict[str, object] | None = None, encoder: Encoder | None = None) -> None:
        set_up_replica_process()
        cfg = EmbeddingArgs.model_validate(args or {})
        self.embedder = encoder or SentenceTransformerEmbedder(cfg.model_path)
        self._embed_batch.set_max_batch_size(cfg.max_batch_size)
        self._embed_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self._in_flight = 0  # embed() calls this replica is answering now

    @serve.batch(max_batch_size=_DEFAULTS.max_batch_size, batch_wait_timeout_s=_DEFAULTS.batch_wait_timeout_s)
    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        # NOTE: the model runs on the user-code loop, on purpose. In a worker thread of
        # that loop it held the GIL so much that the loop took requests in slowly: batches
        # of 3 texts on average under 64 clients. On the loop, requests pile up while a
        # batch encodes and the next batch takes them all. That loop runs on its own
        # thread (serve_app/builder.py EMBEDDING_ENV), so Serve's main loop still takes
        # requests in and sends replies meanwhile (bench/batching.py, docs/benchmarks.md).
        return self._encode(texts)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        get_metrics().embedding_batch(len(texts))
        return self.embedder.encode(texts)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Normalised 384-dimensional vectors, one per text, in order.

        A call alone on the replica is encoded at once; calls that overlap are batched.
        NOTE: ``@serve.batch`` always waits ``batch_wait_timeout_s`` for a batch to fill,
        even when nothing else can come: 5 ms on every turn of one user (goal 1 of
        docs/benchmarks.md). "Alone" is decided after one pass of the loop, so calls that
        arrived together (e.g. while a batch was encoding) all see each other and batch.
        """
        if not texts:
            return []
        self._in_flight += 1
        try:
            await asyncio.sleep(0)
            if self._in_flight == 1:
                return self._encode(texts)
            return list(await asyncio.gather(*(self._embed_batch(t) for t in texts)))
        finally:
            self._in_flight -= 1

    async def check_health(self) -> None:
        return None
