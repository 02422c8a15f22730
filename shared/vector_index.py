"""Exact nearest-neighbour search over an in-memory copy of the store's vectors.

sqlite-vec scans its vec0 table chunk by chunk from SQLite pages; a long-running process
(the bot, the trainer, evaluation) keeps one float32 matrix instead and scans it with one
matrix-vector product, which runs at memory bandwidth. The copy reloads when the store's
``vectors_version`` moves, so an ingest in another process is picked up by the next query.
"""

from __future__ import annotations

import threading

import numpy as np

from .store import Store

__all__ = ["MemoryIndex", "top_k"]


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest entries of each row of ``scores`` (rows sorted best first)."""
    scores = np.atleast_2d(scores)
    k = min(k, scores.shape[1])
    if k == 0:
        return np.zeros((scores.shape[0], 0), dtype=np.int64), np.zeros((scores.shape[0], 0), dtype=scores.dtype)
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    values = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(values, order, axis=1)


class MemoryIndex:
    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self.version = -1
        # one snapshot, replaced whole: a search never mixes an old matrix with new row ids
        self._snap: tuple[np.ndarray, np.ndarray, dict[int, int]] = (
            np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32), {})
        self.refresh()

    @property
    def rowids(self) -> np.ndarray:
        return self._snap[0]

    @property
    def matrix(self) -> np.ndarray:
        return self._snap[1]

    @property
    def column_of(self) -> dict[int, int]:
        return self._snap[2]

    def refresh(self) -> bool:
        """Reload when the store changed; True if it did."""
        version = self.store.vectors_version()
        if version == self.version:
            return False
        with self._lock:
            if version == self.version:
                return False
            rowids, matrix = self.store.all_vectors()
            self._snap = (rowids, np.ascontiguousarray(matrix), {int(r): i for i, r in enumerate(rowids)})
            self.version = version
        return True

    def __len__(self) -> int:
        return len(self._snap[0])

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        self.refresh()
        rowids, matrix, _ = self._snap
        if len(rowids) == 0:
            return []
        scores = matrix @ np.asarray(query, dtype=np.float32)
        idx, values = top_k(scores[None, :], k)
        return [(int(rowids[i]), float(v)) for i, v in zip(idx[0], values[0])]

    def scores(self, query: np.ndarray, rowids: list[int]) -> list[float]:
        """Similarity of ``query`` to given chunks (-1.0 for chunks no longer stored)."""
        _, matrix, column_of = self._snap
        q = np.asarray(query, dtype=np.float32)
        return [float(matrix[column_of[r]] @ q) if r in column_of else -1.0 for r in rowids]

    def search_many(self, queries: np.ndarray, k: int, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(rowids, scores), each (len(queries), k): many queries in blocks, for evaluation and mining."""
        self.refresh()
        rowids, matrix, _ = self._snap
        out_ids, out_scores = [], []
        for i in range(0, len(queries), batch):
            scores = np.asarray(queries[i:i + batch], dtype=np.float32) @ matrix.T
            idx, values = top_k(scores, k)
            out_ids.append(rowids[idx])
            out_scores.append(values)
        if not out_ids:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        return np.vstack(out_ids), np.vstack(out_scores)
