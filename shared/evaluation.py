"""Running a question set through retrieval and scoring it, with and without deep memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .embedders import Embedder
from .metrics import KS, metrics
from .queries import ResolvedQuery
from .search import rrf
from .store import Store
from .vector_index import MemoryIndex

__all__ = ["rank_all", "text_rankings", "evaluate", "Comparison", "format_table"]


def text_rankings(store: Store, texts: list[str], depth: int = max(KS)) -> list[list[int]]:
    """Full-text (BM25) rowid rankings: the half of hybrid search that deep memory does not change."""
    return [[r for r, _ in store.text_search(text, depth)] for text in texts]


def rank_all(index: MemoryIndex, store: Store, query_vectors: np.ndarray, texts: list[str], *, depth: int = 100,
             mode: str = "vector", sparse: list[list[int]] | None = None) -> list[list[int]]:
    """Rowid rankings for many queries at once, one chunk per section (as results are shown).
    ``sparse``: the texts' full-text rankings, when already known (comparing with and without
    deep memory needs them once)."""
    ids, _ = index.search_many(query_vectors, depth)  # one chunk per section
    dense = [[int(r) for r in row if r >= 0] for row in ids]
    if mode == "vector":
        return dense
    if mode != "hybrid":
        raise ValueError(f"unknown mode {mode!r}")
    if sparse is None:
        sparse = text_rankings(store, texts, depth)
    return [[r for r, _ in index.collapse(rrf([ranking, text_ranking]), depth)]
            for ranking, text_ranking in zip(dense, sparse)]


def evaluate(index: MemoryIndex, store: Store, embedder: Embedder, queries: list[ResolvedQuery],
             transform: Callable[[np.ndarray], np.ndarray] | None = None, *, mode: str = "vector",
             query_vectors: np.ndarray | None = None, sparse: list[list[int]] | None = None) -> dict:
    usable = [q for q in queries if q.targets]
    if not usable:
        return {"queries": 0}
    vectors = query_vectors if query_vectors is not None else embedder.embed([q.text for q in usable])
    if transform is not None:
        vectors = transform(vectors)
    rankings = rank_all(index, store, vectors, [q.text for q in usable], depth=max(KS), mode=mode, sparse=sparse)
    return metrics(rankings, [q.targets for q in usable])


@dataclass
class Comparison:
    name: str
    base: dict
    deep: dict | None
    champion_metrics: dict | None = None

    def to_dict(self) -> dict:
        out = {"name": self.name, "base": self.base, "deep_memory": self.deep}
        if self.champion_metrics:
            out["active_adapter"] = self.champion_metrics
        if self.deep:
            out["gain"] = {k: self.deep[k] - self.base[k] for k in self.base
                           if isinstance(self.base[k], float) and k in self.deep}
        return out


def format_table(comparisons: list[Comparison]) -> str:
    """The reference's table: R@k in percent, hit_rate@10 and MRR@10, base vs deep memory, and the gain."""
    cols = [f"R@{k}" for k in KS] + ["hit_rate@10", "MRR@10"]
    keys = [f"recall@{k}" for k in KS] + ["hit_rate@10", "mrr@10"]
    head = f"{'':<34}" + "".join(f"{c:>12}" for c in cols)
    lines = []
    for comp in comparisons:
        n = comp.base.get("queries", 0)
        lines.append(f"{comp.name} ({n} questions)")
        lines.append(head)

        def row(label, values, signed=False):
            cells = []
            for key in keys:
                v = values.get(key)
                if v is None:
                    cells.append(f"{'-':>12}")
                elif key.startswith("recall"):
                    cells.append(f"{v * 100:>+12.1f}" if signed else f"{v * 100:>12.1f}")
                else:
                    cells.append(f"{v:>+12.3f}" if signed else f"{v:>12.3f}")
            return f"{label:<34}" + "".join(cells)

        lines.append(row("  without deep memory", comp.base))
        if comp.deep:
            lines.append(row("  with deep memory", comp.deep))
            gain = {k: comp.deep[k] - comp.base[k] for k in keys if k in comp.base and k in comp.deep}
            lines.append(row("  gain", gain, signed=True))
        lines.append("")
    return "\n".join(lines)
