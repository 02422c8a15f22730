"""Grouping questions by topic: the documentation gaps a docs team acts on.

Questions are embedded with the local embedder and grouped by average-linkage agglomerative
clustering on cosine distance (scipy), cut at ``THRESHOLD``: two groups merge while their
questions are, on average, closer than that. A topic is named by its most central question (the
one most similar to the others) and the words most of its questions share. The work is bounded:
at most ``MAX_CLUSTERED`` questions (the caller passes the newest), so at most ~500k distances.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..search_text import terms

__all__ = ["Topic", "group_topics", "VectorMemo", "THRESHOLD", "MAX_CLUSTERED"]

THRESHOLD = 0.55  # cosine distance (1 - cosine) at which groups stop merging
MAX_CLUSTERED = 1000


@dataclass
class Topic:
    label: str  # the most central question
    terms: list[str]  # words most of its questions share
    members: list[int] = field(default_factory=list)  # indexes into the questions grouped


class VectorMemo:
    """``embed`` that remembers the vectors of the last ``size`` texts: a page rebuilt every minute embeds
    only the questions asked since."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray], size: int = 4 * MAX_CLUSTERED):
        self.embed, self.size = embed, size
        self.vectors: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, np.asarray(self.embed(missing), dtype=np.float32)))
        out = np.stack([self.vectors[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)
        for text in list(self.vectors)[: max(0, len(self.vectors) - self.size)]:  # the oldest go first
            del self.vectors[text]
        return out


def _top_terms(texts: list[str], limit: int = 4) -> list[str]:
    counts = Counter(t for text in texts for t in set(terms(text)))
    need = max(1, (len(texts) + 1) // 2)  # shared by at least half the questions
    return [t for t, n in counts.most_common() if n >= need][:limit]


def group_topics(texts: list[str], embed: Callable[[list[str]], np.ndarray], *,
                 threshold: float = THRESHOLD) -> list[Topic]:
    """Topics of ``texts`` (at most MAX_CLUSTERED), largest first; ties: the one asked first in ``texts``."""
    texts = texts[:MAX_CLUSTERED]
    if not texts:
        return []
    unique = list(dict.fromkeys(t.strip() for t in texts))
    index_of = {t: i for i, t in enumerate(unique)}
    vectors = np.asarray(embed(unique), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    if len(unique) == 1:
        labels = np.array([1])
    else:
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.spatial.distance import pdist

        distances = np.clip(pdist(vectors, "cosine"), 0.0, 2.0)
        labels = fcluster(linkage(distances, "average"), t=threshold, criterion="distance")
    by_label: dict[int, list[int]] = {}
    for i, text in enumerate(texts):
        by_label.setdefault(int(labels[index_of[text.strip()]]), []).append(i)
    topics = []
    for members in by_label.values():
        member_texts = [texts[i].strip() for i in members]
        rows = [index_of[t] for t in dict.fromkeys(member_texts)]
        sims = vectors[rows] @ vectors[rows].T
        central = unique[rows[int(np.argmax(sims.mean(axis=1)))]]
        topics.append(Topic(label=central, terms=_top_terms(member_texts), members=members))
    topics.sort(key=lambda t: (-len(t.members), t.members[0]))
    return topics
