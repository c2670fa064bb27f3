"""EmbeddingDeployment: all-MiniLM-L6-v2 with dynamic batching (``@serve.batch``)."""

from __future__ import annotations

import asyncio

from ray import serve

from deployments.metrics_ray import RayMetricsBackend
from memory.embedder import SentenceTransformerEmbedder
from serve_app.args import EmbeddingArgs
from serve_app.observability import get_metrics, set_metrics_backend


class EmbeddingDeployment:
    """Embeds texts; concurrent requests are gathered into one model batch.

    Args:
        args: ``EmbeddingArgs`` (or its dict): model path and batching knobs.
    """

    def __init__(self, args: EmbeddingArgs | dict[str, object] | None = None) -> None:
        set_metrics_backend(RayMetricsBackend())
        cfg = EmbeddingArgs.model_validate(args or {})
        self.embedder = SentenceTransformerEmbedder(cfg.model_path)
        self._embed_batch.set_max_batch_size(cfg.max_batch_size)
        self._embed_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        # NOTE: the model runs on the replica's loop, on purpose. In a worker thread it
        # held the GIL so much that the loop took requests in slowly: batches of 3 texts
        # on average under 64 clients, 96 texts/s. On the loop, requests pile up while
        # a batch encodes and the next batch takes them all: 18 on average, 146 texts/s
        # (bench/batching.py). The cost: the replica answers nothing else meanwhile.
        get_metrics().embedding_batch(len(texts))
        return self.embedder.encode(texts)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Normalised 384-dimensional vectors, one per text, in order."""
        return list(await asyncio.gather(*(self._embed_batch(t) for t in texts)))

    async def check_health(self) -> None:
        return None
