"""Search: nearest chunks to a question, optionally fused with full-text (BM25) ranks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from .collections import check_names
from .embedders import Embedder
from .errors import EmptyStore
from .store import Store, StoredChunk
from .vector_index import OVERFETCH

__all__ = ["Hit", "SearchResult", "Searcher", "rrf"]

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


@dataclass
class SearchResult:
    hits: list[Hit]
    adapter: str | None  # the deep-memory version that transformed the query, if any
    timings: dict = field(default_factory=dict)
    vector: np.ndarray | None = None  # the query vector searched with (after the adapter)


def rrf(rankings: list[list[int]], k: int = RRF_K, weights: list[float] | None = None) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of several rankings of rowids."""
    weights = weights or [1.0] * len(rankings)
    scores: dict[int, float] = {}
    for ranking, w in zip(rankings, weights):
        for position, rowid in enumerate(ranking):
            scores[rowid] = scores.get(rowid, 0.0) + w / (k + position + 1)
    return sorted(scores.items(), key=lambda kv: -kv[1])


class Searcher:
    """Embeds a question, applies the active deep-memory adapter, and finds chunks, one per
    section (the best chunk of a section stands for it; the other places go to other sections).

    ``adapters`` (an ActiveAdapter) supplies the current adapter on every call, so a newly
    promoted one is used from the next question on; the corpus vectors never change.
    ``index`` is a MemoryIndex in long-running processes, else the store searches (sqlite-vec, pgvector).
    ``collections`` limits a search to chunks of those collections (None: every collection); every
    path (vector, hybrid, the feedback memory, the full-text alternatives) applies it.
    """

    def __init__(self, store: Store, embedder: Embedder, adapters=None, index=None, memory=None):
        store.check_embedder(embedder.name, embedder.dim)
        self.store = store
        self.embedder = embedder
        self.adapters = adapters
        self.index = index
        self.memory = memory  # a FeedbackMemory: labeled questions act at once (needs the in-memory index)

    def collections(self, names: Iterable[str] | None) -> frozenset[str] | None:
        """The collections a search is limited to (None: all of them); UnknownCollection names any the
        store does not have."""
        if names is None:
            return None
        known = self.store.collections()
        wanted = check_names(names, known)
        return None if wanted == frozenset(known) else wanted  # all of them: no filter

    def search(self, question: str, k: int = 10, *, collections: Iterable[str] | None = None, mode: str = "vector",
               deep_memory: bool = True, vector: np.ndarray | None = None) -> SearchResult:
        if self.store.embedder_name is None:
            raise EmptyStore("the store is empty: run `deepmem ingest` first")
        wanted = self.collections(collections)
        t0 = time.perf_counter()
        if vector is None:
            vector = self.embedder.embed_query(question)
        plain = vector
        t1 = time.perf_counter()
        name, vector = self._adapted(vector, deep_memory)
        t2 = time.perf_counter()
        search = self.index.search if self.index is not None else self.store.vector_search
        nearest = lambda v, n: search(v, n, collections=wanted)  # noqa: E731
        depth = k * OVERFETCH  # candidates, collapsed below to one chunk per section
        use_memory = (deep_memory and mode == "vector" and self.memory is not None and len(self.memory)
                      and self.index is not None)
        if use_memory:  # questions near labeled ones: their relevant chunks up, irrelevant ones down
            index, adapted = self.index, vector
            names = self.memory.names(question) if self.memory.names is not None else frozenset()
            ranked = self.memory.rerank(plain, index.search(vector, max(depth, 50), collapse=False,
                                                            collections=wanted),
                                        depth if wanted is None else 1 << 30,  # cut after the filter
                                        lambda ids: index.scores(adapted, ids), names)
            if wanted is not None:  # labeled chunks of other collections do not join
                ranked = [(r, s) for r, s in ranked if index.collection_of(r) in wanted][:depth]
        elif mode == "vector":
            ranked = nearest(vector, depth)
        elif mode == "hybrid":
            depth = max(50, depth)
            dense = [r for r, _ in nearest(vector, depth)]
            sparse = [r for r, _ in self.store.text_search(question, depth, collections=wanted)]
            ranked = rrf([dense, sparse])[:depth]
        else:
            raise ValueError(f"unknown search mode {mode!r} (vector or hybrid)")
        t3 = time.perf_counter()
        chunks = self.store.chunks_by_rowid([r for r, _ in ranked])
        timings = {"embed_ms": (t1 - t0) * 1e3, "adapter_ms": (t2 - t1) * 1e3, "search_ms": (t3 - t2) * 1e3,
                   "fetch_ms": (time.perf_counter() - t3) * 1e3}
        hits, sections = [], set()
        for rowid, score in ranked:  # one chunk per section: the best one
            chunk = chunks.get(rowid)
            if chunk is None or chunk.url in sections or (wanted is not None and chunk.collection not in wanted):
                continue
            sections.add(chunk.url)
            hits.append(Hit(rank=len(hits) + 1, score=score, chunk=chunk))
            if len(hits) == k:
                break
        return SearchResult(hits=hits, adapter=name, timings=timings, vector=vector)

    def _adapted(self, vector: np.ndarray, deep_memory: bool) -> tuple[str | None, np.ndarray]:
        name, adapter = self.adapters.current() if (deep_memory and self.adapters is not None) else (None, None)
        return name, (adapter(vector) if adapter is not None else vector)

    def text_alternatives(self, question: str, vector: np.ndarray, exclude: set[int], n: int, *,
                          first_rank: int, collections: Iterable[str] | None = None) -> list[Hit]:
        """Up to ``n`` sections that full-text search ranks first and the vector search did not return
        (``exclude``: the chunks it returned; their sections are left out too), one chunk each,
        scored by similarity to ``vector`` (the one that search used: ``SearchResult.vector``) and
        ranked from ``first_rank`` on.
        Offered beside the nearest sections when an answer missed, they let a user point at an
        answer the vectors (and so the adapter) rank too low to ever show. ``collections`` as in ``search``."""
        if n <= 0:
            return []
        wanted = self.collections(collections)
        shown = {c.url for c in self.store.chunks_by_rowid(list(exclude)).values()}
        candidates = [r for r, _ in self.store.text_search(question, (n + len(exclude)) * OVERFETCH,
                                                           collections=wanted)
                      if r not in exclude]
        chunks = self.store.chunks_by_rowid(candidates)
        found = []
        for r in candidates:  # one chunk per section, and none of a section already shown
            if r in chunks and chunks[r].url not in shown and (wanted is None or chunks[r].collection in wanted):
                shown.add(chunks[r].url)
                found.append(r)
                if len(found) == n:
                    break
        if not found:
            return []
        scores = self.index.scores(vector, found) if self.index is not None else \
            self.store.similarities(vector, found)
        return [Hit(rank=first_rank + i, score=s, chunk=chunks[r]) for i, (r, s) in enumerate(zip(found, scores))]
