"""Retrieval metrics, as the Deep Memory reference defines them.

Each query has relevance *targets*; a target is a set of chunks (one chunk for a chunk id,
every chunk of a page for a page URL, the chunks of a section for ``url#anchor``), found
when any of its chunks is retrieved. With one chunk per target this is exactly the
reference: recall@k = share of relevant ids in the top k, averaged over queries;
hit_rate@k = share of queries with a relevant id in the top k; MRR@k = mean of 1/rank of the
first relevant id within the top k (0 if none).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["KS", "metrics", "per_query"]

KS = (1, 3, 5, 10, 50, 100)


def per_query(ranked: Sequence[int], targets: Sequence[frozenset[int]], ks=KS) -> dict:
    """Metrics of one ranking (rowids, best first)."""
    position: dict[int, int] = {}
    for i, rowid in enumerate(ranked):
        position.setdefault(int(rowid), i + 1)
    first_rank = [min((position[r] for r in t if r in position), default=None) for t in targets]
    out = {}
    for k in ks:
        found = sum(1 for r in first_rank if r is not None and r <= k)
        out[f"recall@{k}"] = found / len(targets) if targets else 0.0
    best = min((r for r in first_rank if r is not None), default=None)
    out["hit_rate@10"] = 1.0 if best is not None and best <= 10 else 0.0
    out["mrr@10"] = 1.0 / best if best is not None and best <= 10 else 0.0
    out["first_rank"] = best
    return out


def metrics(rankings: Sequence[Sequence[int]], targets: Sequence[Sequence[frozenset[int]]], ks=KS) -> dict:
    """Averages over queries; queries without targets are left out (and counted)."""
    rows = [per_query(r, t, ks) for r, t in zip(rankings, targets) if t]
    out = {"queries": len(rows)}
    if not rows:
        return out
    for key in rows[0]:
        if key == "first_rank":
            continue
        out[key] = float(np.mean([row[key] for row in rows]))
    return out
