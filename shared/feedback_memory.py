"""Feedback memory: labeled questions change retrieval at once, before any retraining.

When a new question is close to a question someone labeled (cosine >= ``threshold``), the
chunks labeled relevant for it move up and those labeled not relevant move down:

    score'(c) = score(c) + boost   * sum_i w_i [c relevant to i]
                         - penalty * sum_i w_i [c not relevant to i],
    w_i = (sim(q, q_i) - threshold) / (1 - threshold)  for the labeled questions i near q.

Labeled chunks of near questions join the candidates even when plain search did not return
them. ``threshold``, ``boost`` and ``penalty`` are tuned on held-out data by ``tune``: the
nightly job pairs questions that share an answer (one plays the labeled question, the other
the new one) and keeps the setting that finds the answer most often while unrelated
questions keep their hit@10 within noise. The nightly adapter folds the same labels in.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["MemoryParams", "FeedbackMemory", "tune", "rerank_ids"]


@dataclass(frozen=True)
class MemoryParams:
    threshold: float = 0.8
    boost: float = 0.3
    penalty: float = 0.3

    def save(self, path: Path, extra: dict | None = None) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(asdict(self) | (extra or {}), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "MemoryParams":
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return cls()

    @classmethod
    def from_dict(cls, data) -> "MemoryParams":
        """The settings in ``data`` (memory.json, or a run record's metrics["memory"]); defaults when unusable."""
        try:
            return cls(float(data["threshold"]), float(data["boost"]), float(data["penalty"]))
        except (ValueError, KeyError, TypeError):
            return cls()


@dataclass
class _Entries:
    vectors: np.ndarray  # (m, d) unit question embeddings
    positives: list[dict[int, float]]  # chunk id (rowid, or column in tuning) -> weight
    negatives: list[dict[int, float]]
    names: list[frozenset[str]]  # the specific terms each question names


def same_subject(a: frozenset[str], b: frozenset[str]) -> bool:
    """Two questions that name specific things must name mostly the same ones: "what does
    SQLITE_OMIT_VIEW do" is not "what does SQLITE_OMIT_TRIGGER do", however close the embeddings."""
    if not a or not b:
        return True
    return len(a & b) / len(a | b) >= 0.5


class FeedbackMemory:
    """Labeled questions held in memory; ``rerank`` applies them to one question's candidates."""

    def __init__(self, params: MemoryParams | None = None, names: Callable[[str], frozenset[str]] | None = None):
        self.params = params or MemoryParams()
        self.names = names  # question text -> the specific terms it names (see Names)
        self._entries: _Entries | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return 0 if self._entries is None else len(self._entries.positives)

    def set(self, vectors: np.ndarray, positives: list[dict[int, float]], negatives: list[dict[int, float]],
            names: list[frozenset[str]] | None = None) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        names = names if names is not None else [frozenset()] * len(positives)
        entries = _Entries(vectors.reshape(len(positives), vectors.shape[-1] if vectors.ndim > 1 else -1),
                           positives, negatives, names)
        with self._lock:
            self._entries = entries  # one assignment: a search sees the old memory or the new one

    def adjustments(self, query: np.ndarray, names: frozenset[str] = frozenset()) -> dict[int, float]:
        """id -> score change for one query vector (and the specific terms its question names)."""
        entries, p = self._entries, self.params
        if entries is None or not len(entries.positives):
            return {}
        sims = entries.vectors @ np.asarray(query, dtype=np.float32)
        near = np.nonzero(sims >= p.threshold)[0]
        out: dict[int, float] = {}
        for i in near:
            if not same_subject(names, entries.names[i]):
                continue
            w = float((sims[i] - p.threshold) / max(1e-6, 1.0 - p.threshold))
            for col, weight in entries.positives[i].items():
                out[col] = out.get(col, 0.0) + p.boost * w * weight
            for col, weight in entries.negatives[i].items():
                out[col] = out.get(col, 0.0) - p.penalty * w * weight
        return out

    def rerank(self, query: np.ndarray, candidates: list[tuple[int, float]], k: int,
               score: Callable[[list[int]], list[float]], names: frozenset[str] = frozenset()) -> list[tuple[int, float]]:
        """``candidates`` [(id, score)] plus the labeled ids of near questions (scored by ``score``),
        re-scored and cut to k. Ids are chunk rowids in search, matrix columns in tuning."""
        adjust = self.adjustments(query, names)
        if not adjust:
            return list(candidates)[:k]
        merged = dict(candidates)
        missing = [c for c in adjust if c not in merged]
        if missing:
            merged.update(zip(missing, score(missing)))
        ranked = sorted(((c, s + adjust.get(c, 0.0)) for c, s in merged.items()), key=lambda cs: -cs[1])
        return ranked[:k]


def rerank_ids(memory: FeedbackMemory, queries: np.ndarray, matrix: np.ndarray, k: int = 10,
               depth: int = 100, names: list[frozenset[str]] | None = None) -> list[list[int]]:
    """Column rankings for many queries with the memory applied (for tuning and evaluation)."""
    from .vector_index import top_k

    idx, vals = top_k(queries @ matrix.T, depth)
    names = names if names is not None else [frozenset()] * len(queries)
    out = []
    for q, cols, scores, n in zip(queries, idx, vals, names):
        score = lambda ids, q=q: list(map(float, matrix[ids] @ q))  # noqa: E731
        ranked = memory.rerank(q, list(zip(map(int, cols), map(float, scores))), k, score, n)
        out.append([c for c, _ in ranked])
    return out


def tune(labeled: np.ndarray, labeled_pos: list[dict[int, float]], probes: np.ndarray, probe_targets: list[set[int]],
         unrelated: np.ndarray, unrelated_targets: list[set[int]], matrix: np.ndarray,
         labeled_names=None, probe_names=None, unrelated_names=None,
         grid=((0.6, 0.7, 0.8, 0.9), (0.2, 0.5, 1.0)), noise: float = 0.005) -> tuple[MemoryParams, dict]:
    """Pick (threshold, boost) on held-out pairs: ``probes`` are new phrasings whose answers were labeled
    (via ``labeled``); ``unrelated`` questions must keep their hit@10 within ``noise``."""
    def hit(rankings, targets, n):
        return float(np.mean([bool(set(r[:n]) & t) for r, t in zip(rankings, targets)])) if targets else 0.0

    negatives = [{} for _ in labeled_pos]
    base_memory = FeedbackMemory(MemoryParams(threshold=2.0))  # an empty effect: nothing is that close
    base_unrelated = hit(rerank_ids(base_memory, unrelated, matrix, names=unrelated_names), unrelated_targets, 10)
    base_probe3 = hit(rerank_ids(base_memory, probes, matrix, names=probe_names), probe_targets, 3)
    best, report = None, []
    for threshold in grid[0]:
        for boost in grid[1]:
            memory = FeedbackMemory(MemoryParams(threshold, boost, boost))
            memory.set(labeled, labeled_pos, negatives, labeled_names)
            probe3 = hit(rerank_ids(memory, probes, matrix, names=probe_names), probe_targets, 3)
            unrelated10 = hit(rerank_ids(memory, unrelated, matrix, names=unrelated_names), unrelated_targets, 10)
            ok = unrelated10 >= base_unrelated - noise
            report.append({"threshold": threshold, "boost": boost, "paraphrase_top3": round(probe3, 4),
                           "unrelated_hit10": round(unrelated10, 4), "allowed": ok})
            if ok and (best is None or probe3 > best[0] + 1e-9):
                best = (probe3, MemoryParams(threshold, boost, boost))
    params = best[1] if best else MemoryParams()
    return params, {"base_paraphrase_top3": round(base_probe3, 4), "base_unrelated_hit10": round(base_unrelated, 4),
                    "grid": report, "chosen": asdict(params)}


class Names:
    """The specific terms a question names: words that at most 0.5% of chunks use."""

    def __init__(self, store, share: float = 0.005):
        from .search_text import terms

        self._terms = terms
        df: dict[str, int] = {}
        with store.lock:
            rows = [(f"{c.title} {' '.join(c.headings)} {c.text}",) for c in store.iter_chunks(order="rowid")]
        for (text,) in rows:
            for term in set(terms(text)):
                df[term] = df.get(term, 0) + 1
        self.df, self.limit = df, max(2, int(share * len(rows)))

    def __call__(self, text: str) -> frozenset[str]:
        return frozenset(t for t in self._terms(text) if self.df.get(t, 0) <= self.limit)


class MemoryLoader:
    """Keeps a FeedbackMemory in step with the feedback database (labels) and memory.json (settings).

    ``refresh`` is cheap when nothing changed; the bot calls it every few seconds, so a 👎 and a
    click on the right source count from the next question on.

    With ``params_from_runs`` (Postgres mode: the nightly job may run on another machine, whose
    memory.json this one never sees) the settings are those the latest finished retraining run
    tuned and recorded in the shared feedback log (its metrics["memory"]).
    """

    def __init__(self, memory: FeedbackMemory, feedback, store, embedder, params_path: Path, policy=None, *,
                 params_from_runs: bool = False):
        from .deep_memory.feedback_data import FeedbackPolicy

        self.memory, self.feedback, self.store, self.embedder = memory, feedback, store, embedder
        self.params_path = params_path
        self.params_from_runs = params_from_runs
        self.policy = policy or FeedbackPolicy()
        self._key = None
        self._vectors: dict[str, np.ndarray] = {}
        self._resolver = None  # (store version, Resolver): pages and sections to chunks
        self.names = Names(store)
        memory.names = self.names

    def refresh(self) -> bool:
        from .deep_memory.feedback_data import labeled_questions

        # a cheap summary first: the labels themselves are read only when something changed
        summary = self.feedback.rows("SELECT count(*) AS n, max(occurred_at) AS last FROM labels")[0]
        params_key, params = self._params()
        key = (summary["n"], str(summary["last"] or ""), params_key, self.store.vectors_version())
        if key == self._key:
            return False
        labels = self.feedback.labels()
        row_of = self.store.chunk_rowids()
        entries = [(q.text, dict(q.positives), dict(q.negatives))
                   for q in labeled_questions(labels, row_of, self.policy)]
        entries += self._placed(labels, key[3])
        missing = list(dict.fromkeys(text for text, _, _ in entries if text not in self._vectors))
        if missing:
            for text, vector in zip(missing, self.embedder.embed(missing)):
                self._vectors[text] = vector
        self.memory.params = params()
        if entries:
            self.memory.set(np.stack([self._vectors[text] for text, _, _ in entries]),
                            [pos for _, pos, _ in entries], [neg for _, _, neg in entries],
                            [self.names(text) for text, _, _ in entries])
        else:
            self.memory.set(np.zeros((0, self.embedder.dim), np.float32), [], [])
        self._key = key
        return True

    def _params(self) -> tuple[object, Callable[[], MemoryParams]]:
        """What identifies the current settings (cheap to ask), and how to read them."""
        if not self.params_from_runs:
            try:
                mtime = self.params_path.stat().st_mtime_ns
            except FileNotFoundError:
                mtime = 0
            return mtime, lambda: MemoryParams.load(self.params_path)
        rows = self.feedback.rows("SELECT id, metrics FROM runs WHERE status IN ('promoted', 'kept') "
                                  "ORDER BY finished_at DESC NULLS LAST, id DESC LIMIT 1")
        if not rows:
            return None, MemoryParams
        try:
            tuned = json.loads(rows[0]["metrics"] or "{}").get("memory")
        except (ValueError, AttributeError):
            tuned = None
        return rows[0]["id"], lambda: MemoryParams.from_dict(tuned)

    def _placed(self, labels: list[dict], version: int) -> list[tuple[str, dict[int, float], dict[int, float]]]:
        """Questions labeled with a place (a page or section: history threads, resolved threads,
        imports): every chunk of the place answers, as in training."""
        from .deep_memory.real_questions import real_questions
        from .queries import Resolver

        placed = [row for row in labels if row.get("target")]
        if not placed:
            return []
        if self._resolver is None or self._resolver[0] != version:
            self._resolver = (version, Resolver(self.store))
        return [(q.text, {r: 1.0 for t in q.targets for r in t}, {r: 1.0 for r in q.avoid})
                for q in real_questions(placed, self._resolver[1])]
