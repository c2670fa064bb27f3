"""A deterministic embedder for fast tests: hashed bag of words, normalised to 384-d."""

from __future__ import annotations

import hashlib
import math
import re

DIM = 384


class HashingEmbedder:
    """Texts that share words get close vectors; no model, no randomness."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [self._one(t) for t in texts]

    @staticmethod
    def _one(text: str) -> list[float]:
        vec = [0.0] * DIM
        vec[0] = 0.1  # a small shared component: never the zero vector (a real model never gives one)
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
            vec[h % DIM] += 1.0 if (h >> 32) & 1 else -1.0
        norm = math.sqrt(sum(x * x for x in vec)) or 1.0
        return [x / norm for x in vec]
