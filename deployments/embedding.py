"""EmbeddingDeployment: all-MiniLM-L6-v2 with dynamic batching (``deployments.batcher``)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from deployments.batcher import DispatchBatcher
from deployments.process import set_up_replica_process
from memory.embedder import SentenceTransformerEmbedder
from memory.encoder_process import SubprocessEncoder
from serve_app.args import EmbeddingArgs
from serve_app.observability import get_metrics


class Encoder(Protocol):
    def encode(self, texts: list[str]) -> list[list[float]]: ...


class EmbeddingDeployment:
    """Embeds texts; concurrent requests are gathered into one model batch.

    Batches run in a worker thread, so the replica keeps taking calls in while the
    model encodes, and each batch takes what queued meanwhile (``DispatchBatcher``).
    The model itself runs in a child process (``SubprocessEncoder``, unless
    ``model_process`` is off), where its Python does not wait for this process's GIL;
    if that process dies, ``check_health`` fails and Serve replaces the replica.
    NOTE: with ``@serve.batch`` a worker thread gave batches of 3 texts on average
    under 64 clients: the model's Python slowed the loop taking calls in, and that
    queue closes each batch ahead of the model. Formed when the model is free, they
    hold 31 on average (docs/benchmarks.md, "Tenth session").

    Args:
        args: ``EmbeddingArgs`` (or its dict): model path and batching knobs.
        encoder: What encodes (tests); the model at ``args.model_path`` by default.
    """

    def __init__(self, args: EmbeddingArgs | dict[str, object] | None = None, encoder: Encoder | None = None) -> None:
        set_up_replica_process()
        cfg = EmbeddingArgs.model_validate(args or {})
        if encoder is None:
            model = SubprocessEncoder if cfg.model_process else SentenceTransformerEmbedder
            encoder = model(cfg.model_path)
        self.embedder = encoder
        self._batcher = DispatchBatcher(self._encode, cfg.max_batch_size, cfg.batch_wait_timeout_s)
        self._in_flight = 0  # embed() calls this replica is answering now

    def _encode(self, texts: list[str]) -> list[list[float]]:
        get_metrics().embedding_batch(len(texts))
        return self.embedder.encode(texts)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Normalised 384-dimensional vectors, one per text, in order.

        A call alone on the replica is encoded at once; calls that overlap are batched.
        NOTE: an idle batcher waits ``batch_wait_timeout_s`` for a batch to fill, even
        when nothing else can come: 5 ms on every turn of one user (goal 1 of
        docs/benchmarks.md), and a thread hop. "Alone" is decided after one pass of the
        loop, so calls that arrived together all see each other and batch.
        """
        if not texts:
            return []
        self._in_flight += 1
        try:
            await asyncio.sleep(0)
            if self._in_flight == 1:
                return self._encode(texts)
            return list(await asyncio.gather(*(self._batcher.submit(t) for t in texts)))
        finally:
            self._in_flight -= 1

    async def check_health(self) -> None:
        """Fails once the model's process is gone, so that Serve replaces this replica."""
        if isinstance(self.embedder, SubprocessEncoder) and not self.embedder.alive():
            raise RuntimeError("the embedding model process exited")

    def __del__(self) -> None:
        if isinstance(getattr(self, "embedder", None), SubprocessEncoder):
            self.embedder.close(timeout_s=1.0)
