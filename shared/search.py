"""Search: nearest chunks to a question, optionally fused with full-text (BM25) ranks."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from .embedders import Embedder
from .errors import EmptyStore
from .store import Store, StoredChunk

__all__ = ["Hit", "Searcher", "rrf"]

RRF_K = 60  # the usual reciprocal-rank-fusion constant


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    chunk: StoredChunk

    def to_dict(self) -> dict:
        c = self.chunk
        return {"rank": self.rank, "score": round(float(self.score), 6), "id": c.id, "url": c.url, "title": c.title,
                "headings": list(c.headings), "anchors": list(c.anchors), "text": c.text}


def rrf(rankings: list[list[int]], k: int = RRF_K, weights: list[float] | None = None) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of several rankings of rowids."""
    weights = weights or [1.0] * len(rankings)
    scores: dict[int, float] = {}
    for ranking, w in zip(rankings, weights):
        for position, rowid in enumerate(ranking):
            scores[rowid] = scores.get(rowid, 0.0) + w / (k + position + 1)
    return sorted(scores.items(), key=lambda kv: -kv[1])


class Searcher:
    """Embeds a question, transforms it (deep memory, when given), and finds chunks.

    ``transform`` maps a query vector to the vector used for search; the corpus vectors are
    never changed. ``mode`` is "vector" or "hybrid" (vector + BM25 fused by RRF).
    """

    def __init__(self, store: Store, embedder: Embedder, transform: Callable[[np.ndarray], np.ndarray] | None = None,
                 index=None):
        self.store = store
        self.embedder = embedder
        self.transform = transform
        self.index = index  # a MemoryIndex in long-running processes; sqlite-vec otherwise
        store.check_embedder(embedder.name, embedder.dim)
        self.timings: dict[str, float] = {}

    def query_vector(self, question: str, deep_memory: bool = True) -> np.ndarray:
        vector = self.embedder.embed_query(question)
        if deep_memory and self.transform is not None:
            vector = self.transform(vector)
        return vector

    def search(self, question: str, k: int = 10, *, mode: str = "vector", deep_memory: bool = True,
               vector: np.ndarray | None = None) -> list[Hit]:
        if self.store.embedder_name is None:
            raise EmptyStore("the store is empty: run `deepmem ingest` first")
        t0 = time.perf_counter()
        if vector is None:
            vector = self.query_vector(question, deep_memory)
        t1 = time.perf_counter()
        nearest = self.index.search if self.index is not None else self.store.vector_search
        if mode == "vector":
            ranked = nearest(vector, k)
        elif mode == "hybrid":
            depth = max(50, k * 5)
            dense = [r for r, _ in nearest(vector, depth)]
            sparse = [r for r, _ in self.store.text_search(question, depth)]
            ranked = rrf([dense, sparse])[:k]
        else:
            raise ValueError(f"unknown search mode {mode!r} (vector or hybrid)")
        t2 = time.perf_counter()
        chunks = self.store.chunks_by_rowid([r for r, _ in ranked])
        self.timings = {"embed_ms": (t1 - t0) * 1e3, "search_ms": (t2 - t1) * 1e3,
                        "fetch_ms": (time.perf_counter() - t2) * 1e3}
        return [Hit(rank=i + 1, score=score, chunk=chunks[rowid])
                for i, (rowid, score) in enumerate(ranked) if rowid in chunks]
