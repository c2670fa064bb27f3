"""In-process vector memory: exact cosine search with numpy.

The fake behind fast tests, and the reference that the LanceDB store's recall is
measured against. It lives as long as the replica and is not shared between
replicas.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.errors import InvalidRequestError, NotFoundError
from agent.ports import MemoryHit, MemoryItem

DIM = 384

Matrix = npt.NDArray[np.float32]


def as_matrix(vectors: list[list[float]], dim: int) -> Matrix:
    """``vectors`` as an (n, dim) float32 array of unit rows.

    Raises:
        ValueError: a vector has another dimension, a non-finite value or length zero.
    """
    m = np.asarray(vectors, dtype=np.float32)
    if m.ndim != 2 or m.shape[1] != dim:
        raise ValueError(f"vectors must have dimension {dim}")
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise ValueError("vectors must be finite and non-zero")
    unit: Matrix = m / norms
    return unit


def top_k(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    """Positions of the ``k`` highest scores, highest first (ties in position order)."""
    top = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
    ordered: npt.NDArray[np.intp] = top[np.argsort(-scores[top], kind="stable")]
    return ordered


def check_k(k: int) -> None:
    if k < 1:
        raise InvalidRequestError("k must be at least 1", field="k")


def rows_by_user(items: list[MemoryItem]) -> dict[str, list[int]]:
    """Positions of the items to store, per user: the last one of each (user, id), in order."""
    last = {(it.user_id, it.id): i for i, it in enumerate(items)}
    grouped: dict[str, list[int]] = {}
    for i in sorted(last.values()):
        grouped.setdefault(items[i].user_id, []).append(i)
    return grouped


def batches_by_user(
    items: list[MemoryItem], vectors: list[list[float]], dim: int
) -> list[tuple[str, list[int], Matrix]]:
    """What ``add`` stores, per user: (user, positions in ``items``, their unit vectors).

    Raises:
        ValueError: ``items`` and ``vectors`` differ in length, or a vector is invalid (``as_matrix``).
    """
    if len(items) != len(vectors):
        raise ValueError("items and vectors differ in length")
    if not items:
        return []
    matrix = as_matrix(vectors, dim)
    return [(user_id, rows, matrix[rows]) for user_id, rows in rows_by_user(items).items()]


def memory_not_found(item_id: str) -> NotFoundError:
    # NOTE: one message for "missing" and "someone else's", so ids of others leak nothing.
    return NotFoundError(f"memory '{item_id}' not found", field="item_id")


class _UserRows:
    """One user's items and their unit vectors, row i of ``vectors`` belonging to ``items[i]``."""

    def __init__(self, dim: int) -> None:
        self.items: list[MemoryItem] = []
        self.vectors: Matrix = np.empty((0, dim), dtype=np.float32)
        self.row_of: dict[str, int] = {}

    def upsert(self, items: list[MemoryItem], vectors: Matrix) -> None:
        fresh_items: list[MemoryItem] = []
        fresh_rows: list[int] = []
        for i, item in enumerate(items):
            row = self.row_of.get(item.id)
            if row is not None:
                self.items[row], self.vectors[row] = item, vectors[i]
            else:
                self.row_of[item.id] = len(self.items) + len(fresh_items)
                fresh_items.append(item)
                fresh_rows.append(i)
        self.items.extend(fresh_items)
        self.vectors = np.concatenate([self.vectors, vectors[fresh_rows]])

    def keep(self, mask: npt.NDArray[np.bool_]) -> int:
        """Keep the rows where ``mask`` is true; returns how many were dropped."""
        self.items = [it for it, kept in zip(self.items, mask, strict=True) if kept]
        self.vectors = self.vectors[mask]
        self.row_of = {it.id: i for i, it in enumerate(self.items)}
        return int(mask.size - mask.sum())


class InMemoryVectorMemory:
    """``VectorMemory`` in numpy arrays, one per user; exact search; safe for one event loop.

    Adding an item whose id the user already has replaces it (as the LanceDB store does).

    Args:
        dim: The dimension of every vector.
    """

    def __init__(self, dim: int = DIM) -> None:
        self._dim = dim
        self._users: dict[str, _UserRows] = {}

    async def setup(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def add(self, items: list[MemoryItem], vectors: list[list[float]], *, new: bool = False) -> None:
        # (``new`` changes nothing here: replacing by id costs no more than appending.)
        for user_id, rows, unit in batches_by_user(items, vectors, self._dim):
            mine = self._users.setdefault(user_id, _UserRows(self._dim))
            mine.upsert([items[i].model_copy() for i in rows], unit)

    async def search(self, user_id: str, vector: list[float], k: int) -> list[MemoryHit]:
        check_k(k)
        query = as_matrix([vector], self._dim)[0]
        mine = self._users.get(user_id)
        if mine is None or not mine.items:
            return []
        scores = mine.vectors @ query
        return [
            MemoryHit(item=mine.items[i].model_copy(), score=float(np.clip(scores[i], -1.0, 1.0)))
            for i in top_k(scores, k)
        ]

    async def delete(self, user_id: str, item_id: str) -> None:
        mine = self._users.get(user_id)
        if mine is None or item_id not in mine.row_of:
            raise memory_not_found(item_id)
        mask = np.ones(len(mine.items), dtype=np.bool_)
        mask[mine.row_of[item_id]] = False
        mine.keep(mask)

    async def delete_session(self, user_id: str, session_id: str) -> int:
        mine = self._users.get(user_id)
        if mine is None:
            return 0
        return mine.keep(np.array([it.session_id != session_id for it in mine.items], dtype=np.bool_))

    async def count(self, user_id: str) -> int:
        mine = self._users.get(user_id)
        return len(mine.items) if mine is not None else 0
