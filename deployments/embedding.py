"""EmbeddingDeployment: all-MiniLM-L6-v2 with dynamic batching (``deployments.batcher``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from deployments.batcher import DispatchBatcher
from deployments.process import set_up_replica_process
from memory.embedder import SentenceTransformerEmbedder
from memory.encoder_process import SubprocessEncoder
from serve_app.args import EmbeddingArgs
from serve_app.observability import get_metrics

log = logging.getLogger(__name__)


class Encoder(Protocol):
    def encode(self, texts: list[str]) -> list[list[float]]: ...


class EmbeddingDeployment:
    """Embeds texts; concurrent requests are gathered into one model batch.

    Batches run in a worker thread, so the replica keeps taking calls in while the
    model encodes, and each batch takes what queued meanwhile (``DispatchBatcher``).
    The model itself runs in a child process (``SubprocessEncoder``, unless
    ``model_process`` is off), where its Python does not wait for this process's GIL;
    if that process dies, or spends ``model_stall_timeout_s`` on one batch,
    ``check_health`` fails and Serve replaces the replica.
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
        self._model_process: SubprocessEncoder | None = None  # the one this replica started
        if encoder is None and cfg.model_process:
            encoder = self._model_process = SubprocessEncoder(cfg.model_path, precision=cfg.precision)
        elif encoder is None:
            encoder = SentenceTransformerEmbedder(cfg.model_path, precision=cfg.precision)
        self.embedder = encoder
        if (precision := getattr(encoder, "precision", None)) is not None:
            log.info("embedding model loaded: %s (precision %s)", precision, cfg.precision)
        self.stall_timeout_s = cfg.model_stall_timeout_s
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

    async def ping(self) -> None:
        """The Agent's health report (``/health``): raises what ``check_health`` would."""
        await self.check_health()

    async def check_health(self) -> None:
        """Fails once the model's process is gone or stuck in a batch, so that Serve replaces this replica."""
        if not isinstance(self.embedder, SubprocessEncoder):
            return
        if not self.embedder.alive():
            raise RuntimeError("the embedding model process exited")
        busy = self.embedder.busy_for()
        if busy > self.stall_timeout_s:
            raise RuntimeError(f"the embedding model has been encoding one batch for {busy:.0f} s")

    def __del__(self) -> None:
        if getattr(self, "_model_process", None) is not None:
            self._model_process.close(timeout_s=1.0)
