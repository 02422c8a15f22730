"""Exact nearest-neighbour search over an in-memory copy of the store's vectors.

sqlite-vec scans its vec0 table chunk by chunk from SQLite pages; a long-running process
(the bot, the trainer, evaluation) keeps one float32 matrix instead and scans it with one
matrix-vector product, which runs at memory bandwidth. The copy reloads when the store's
``vectors_version`` moves, so an ingest in another process is picked up by the next query.

Results are collapsed to one chunk per section (``collapse``, the default): a section chunked
in three shows once, at its best chunk, and the other places go to other sections. That is
what a reader wants from a result list, and what is scored.

A search can be limited to some collections: the snapshot holds each column's collection
number, and a filtered search masks the other columns' scores out of the same product
(one comparison per column, cached per set of collections), so it costs about what an
unfiltered one does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from .store import Store

__all__ = ["MemoryIndex", "top_k", "first_per_section", "OVERFETCH"]

OVERFETCH = 4  # candidates fetched per result wanted, before collapsing to one chunk per section


def first_per_section(ids: np.ndarray, scores: np.ndarray, section: np.ndarray, k: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first (best) column of each section in every row, up to ``k``; short rows are
    padded with -1 and -inf. ``ids``: columns, best first; ``section``: column -> section number."""
    out_ids = np.full((len(ids), k), -1, dtype=np.int64)
    out_scores = np.full((len(ids), k), -np.inf, dtype=np.float32)
    for i, (row, values) in enumerate(zip(ids, scores)):
        _, first = np.unique(section[row], return_index=True)
        keep = np.sort(first)[:k]
        out_ids[i, :len(keep)] = row[keep]
        out_scores[i, :len(keep)] = values[keep]
    return out_ids, out_scores


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


@dataclass(frozen=True)
class _Snapshot:
    rowids: np.ndarray  # (n,) column -> chunk rowid
    matrix: np.ndarray  # (n, d) unit vectors
    column_of: dict[int, int]  # rowid -> column
    sections: np.ndarray  # (n,) column -> section number
    collection_ids: np.ndarray  # (n,) column -> collection number (-1: chunk not found)
    collection_names: dict[str, int]  # collection -> number
    masks: dict = field(default_factory=dict)  # frozenset of collections -> (n,) float32, built on first use

    def mask(self, collections: frozenset[str]) -> np.ndarray:
        """(n,) 0.0 for the columns of ``collections``, -inf for the others: added to the scores."""
        found = self.masks.get(collections)
        if found is None:
            numbers = [self.collection_names[c] for c in collections if c in self.collection_names]
            inside = np.isin(self.collection_ids, np.asarray(numbers, dtype=np.int32))
            found = np.where(inside, np.float32(0.0), np.float32(-np.inf)).astype(np.float32)
            if len(self.masks) < 64:  # a few channel configurations, not every combination ever asked
                self.masks[collections] = found
        return found


def _empty() -> _Snapshot:
    return _Snapshot(np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32), {}, np.zeros(0, dtype=np.int64),
                     np.zeros(0, dtype=np.int32), {})


class MemoryIndex:
    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self.version = -1
        # one snapshot, replaced whole: a search never mixes an old matrix with new row ids
        self._snap = _empty()
        self.refresh()

    @property
    def rowids(self) -> np.ndarray:
        return self._snap.rowids

    @property
    def matrix(self) -> np.ndarray:
        return self._snap.matrix

    @property
    def column_of(self) -> dict[int, int]:
        return self._snap.column_of

    @property
    def sections(self) -> np.ndarray:
        """Column -> section number: chunks with the same URL (page#anchor) share one."""
        return self._snap.sections

    def collection_of(self, rowid: int) -> str | None:
        """The collection of a chunk in the snapshot (None when it is not there)."""
        snap = self._snap
        column = snap.column_of.get(int(rowid))
        if column is None or snap.collection_ids[column] < 0:
            return None
        number = int(snap.collection_ids[column])
        return next(name for name, n in snap.collection_names.items() if n == number)

    def refresh(self) -> bool:
        """Reload when the store changed; True if it did."""
        version = self.store.vectors_version()
        if version == self.version:
            return False
        with self._lock:
            if version == self.version:
                return False
            rowids, matrix = self.store.all_vectors()
            column_of = {int(r): i for i, r in enumerate(rowids)}
            numbers: dict[str, int] = {}
            names: dict[str, int] = {}
            sections = np.zeros(len(rowids), dtype=np.int64)
            collection_ids = np.full(len(rowids), -1, dtype=np.int32)
            for rowid, url, collection in self.store.chunk_places():
                column = column_of.get(rowid)
                if column is not None:
                    sections[column] = numbers.setdefault(url, len(numbers))
                    collection_ids[column] = names.setdefault(collection, len(names))
            self._snap = _Snapshot(rowids, np.ascontiguousarray(matrix), column_of, sections, collection_ids, names)
            self.version = version
        return True

    def __len__(self) -> int:
        return len(self._snap.rowids)

    def search(self, query: np.ndarray, k: int, collapse: bool = True, collections: Iterable[str] | None = None
               ) -> list[tuple[int, float]]:
        """[(rowid, similarity)], best first; ``collections``: only chunks of these (None: all)."""
        ids, values = self.search_many(np.asarray(query, dtype=np.float32)[None, :], k, collapse=collapse,
                                       collections=collections)
        return [(int(i), float(v)) for i, v in zip(ids[0], values[0]) if i >= 0]

    def collapse(self, ranked: list[tuple[int, float]], k: int) -> list[tuple[int, float]]:
        """A ranking of (rowid, score) kept to the first chunk of each section, up to ``k``."""
        column_of, sections = self._snap.column_of, self._snap.sections
        seen, out = set(), []
        for rowid, score in ranked:
            key = int(sections[column_of[rowid]]) if rowid in column_of else ("rowid", rowid)
            if key not in seen:
                seen.add(key)
                out.append((rowid, score))
                if len(out) == k:
                    break
        return out

    def scores(self, query: np.ndarray, rowids: list[int]) -> list[float]:
        """Similarity of ``query`` to given chunks (-1.0 for chunks no longer stored)."""
        matrix, column_of = self._snap.matrix, self._snap.column_of
        q = np.asarray(query, dtype=np.float32)
        return [float(matrix[column_of[r]] @ q) if r in column_of else -1.0 for r in rowids]

    def search_many(self, queries: np.ndarray, k: int, batch: int = 1024, collapse: bool = True,
                    collections: Iterable[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rowids, scores), each (len(queries), k): many queries in blocks, for evaluation and mining.
        With ``collapse``, one chunk per section; rows with fewer sections end in rowid -1.
        ``collections``: only chunks of these collections (None: every one)."""
        self.refresh()
        snap = self._snap
        rowids, matrix, sections = snap.rowids, snap.matrix, snap.sections
        mask = None if collections is None else snap.mask(frozenset(collections))
        out_ids, out_scores = [], []
        for i in range(0, len(queries), batch):
            scores = np.asarray(queries[i:i + batch], dtype=np.float32) @ matrix.T
            if mask is not None:
                scores += mask
            idx, values = top_k(scores, k * OVERFETCH if collapse else k)
            if collapse:
                idx, values = first_per_section(idx, values, sections, k)
            if mask is not None:  # fewer chunks in the collections than asked for: the rest are not results
                idx = np.where(np.isfinite(values), idx, -1)
            ids = np.where(idx >= 0, rowids[np.maximum(idx, 0)], -1) if len(rowids) else idx
            out_ids.append(ids)
            out_scores.append(values)
        if not out_ids:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        return np.vstack(out_ids), np.vstack(out_scores)
