"""Do the docs cover this question? A per-answer decision from four retrieval signals.

A confident wrong answer costs more than "the docs do not seem to cover this; ask an expert", so
every answer carries a probability that the store covers its question (``Answer.coverage``) and
the decision (``Answer.covered``). The probability is a logistic regression on four signals of
plain search (no adapter, no feedback memory: the signals must not move when an adapter is
promoted), each one explainable on its own:

- ``top``: cosine similarity of the nearest section;
- ``margin``: how far the nearest section stands above the tenth (an off-topic question is about
  equally far from everything);
- ``agreement``: the share of the vector search's ten sections that full-text search also ranks in
  its first ten (two unrelated rankers agree on a covered topic, and on nothing in particular
  otherwise);
- ``term_share``: the share of the question's words found in the first full-text results (the
  docs of a database have no "sourdough").

The default weights were fitted by ``bench/coverage.py --fit`` on five real-question sets (each
project's FAQ questions asked of its own docs: covered; asked of the four other projects' docs:
not covered). Each store is calibrated at training time (``calibrate``, called by the nightly job):
the weights stay, and the threshold moves so that a chosen share of the store's own held-out
questions counts as covered, within bounds; it is kept in the store's meta (``coverage``) and read
by every answer (a stale or damaged entry falls back to the default).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .search_text import terms

__all__ = ["Signals", "CoverageModel", "signals", "signals_many", "fit", "calibrate", "calibrate_store", "DEFAULT",
           "META_KEY", "FEATURES"]

FEATURES = ("top", "margin", "agreement", "term_share")
META_KEY = "coverage"
DEPTH = 10  # sections compared (the answer path retrieves ten)
TEXT_DEPTH = 20  # full-text chunks read for the agreement and the words
TARGET_RECALL = 0.9  # a calibrated store calls this share of its own held-out questions covered
MAX_SHIFT = 2.0  # a calibration moves the decision by at most this much log-odds from the default
MIN_CALIBRATION = 20  # fewer own questions do not calibrate
VERSION = 1


@dataclass(frozen=True)
class Signals:
    top: float
    margin: float
    agreement: float
    term_share: float

    def vector(self) -> np.ndarray:
        return np.array([self.top, self.margin, self.agreement, self.term_share], dtype=np.float64)

    def to_dict(self) -> dict:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


def _sections(store, rowids: list[int]) -> list[str]:
    chunks = store.chunks_by_rowid(rowids)
    out: list[str] = []
    for r in rowids:
        c = chunks.get(r)
        if c is not None and c.url not in out:
            out.append(c.url)
    return out


def signals(store, question: str, scores: list[float], urls: list[str], collections=None) -> Signals:
    """The signals of one question from its plain vector search (``scores`` and section ``urls`` of
    the nearest sections, best first, one per section) and a full-text search of the store (of
    ``collections`` only, when given: the ones the vector search was limited to)."""
    if not scores:
        return Signals(0.0, 0.0, 0.0, 0.0)
    scores = [float(s) for s in scores[:DEPTH]]
    top = scores[0]
    margin = top - scores[-1] if len(scores) == DEPTH else top  # fewer sections than that: a tiny store
    text_hits = [r for r, _ in (store.text_search(question, TEXT_DEPTH) if collections is None else
                                store.text_search(question, TEXT_DEPTH, collections=collections))]
    chunks = store.chunks_by_rowid(text_hits)
    text_sections: list[str] = []
    words: set[str] = set()
    for r in text_hits:
        c = chunks.get(r)
        if c is None:
            continue
        if c.url not in text_sections:
            text_sections.append(c.url)
        words.update(terms(" ".join([c.title, *c.headings, c.text])))
    asked = terms(question)
    vector_sections = urls[:DEPTH]
    agreement = len(set(vector_sections) & set(text_sections[:DEPTH])) / max(1, min(DEPTH, len(vector_sections)))
    term_share = sum(t in words for t in asked) / len(asked) if asked else 0.0
    return Signals(top=top, margin=margin, agreement=agreement, term_share=term_share)


def signals_many(store, index, questions: list[str], vectors: np.ndarray) -> list[Signals]:
    """Signals of many questions at once (calibration, benchmarks): plain search on ``index``
    (a MemoryIndex of ``store``), the same as each answer computes."""
    if not len(questions):
        return []
    ids, values = index.search_many(np.asarray(vectors, dtype=np.float32), DEPTH)
    out = []
    for q, row, vals in zip(questions, ids, values):
        keep = [(int(r), float(v)) for r, v in zip(row, vals) if r >= 0]
        chunks = store.chunks_by_rowid([r for r, _ in keep])
        urls = [chunks[r].url for r, _ in keep if r in chunks]
        out.append(signals(store, q, [v for r, v in keep if r in chunks], urls))
    return out


@dataclass
class CoverageModel:
    """P(covered) = sigmoid(weights · (signals - mean) / scale + bias); covered when ≥ ``threshold``."""
    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    threshold: float = 0.5
    calibration: dict = field(default_factory=dict)  # how and on what it was calibrated (empty: the default)

    def probability(self, s: Signals) -> float:
        z = (s.vector() - np.asarray(self.mean)) / np.asarray(self.scale)
        logit = float(np.dot(self.weights, z) + self.bias)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))

    def probabilities(self, many: list[Signals]) -> np.ndarray:
        return np.array([self.probability(s) for s in many])

    def decide(self, s: Signals) -> tuple[bool, float]:
        p = self.probability(s)
        return p >= self.threshold, p

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, "features": list(FEATURES), "weights": list(self.weights),
                           "bias": self.bias, "mean": list(self.mean), "scale": list(self.scale),
                           "threshold": self.threshold, "calibration": self.calibration})

    @classmethod
    def from_json(cls, text: str) -> "CoverageModel":
        """A stored model; ValueError (with the reason) for anything that is not one."""
        try:
            obj = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(obj, dict) or obj.get("version") != VERSION or obj.get("features") != list(FEATURES):
            raise ValueError("another version or other features")
        try:
            arrays = [tuple(float(x) for x in obj[k]) for k in ("weights", "mean", "scale")]
            bias, threshold = float(obj["bias"]), float(obj["threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a field is missing or not a number ({exc})") from None
        if any(len(a) != len(FEATURES) for a in arrays) or not all(math.isfinite(x) for a in arrays for x in a) \
                or any(x <= 0 for x in arrays[2]) or not 0.0 < threshold < 1.0 or not math.isfinite(bias):
            raise ValueError("weights, scale or threshold out of range")
        calibration = obj.get("calibration") if isinstance(obj.get("calibration"), dict) else {}
        return cls(weights=arrays[0], bias=bias, mean=arrays[1], scale=arrays[2], threshold=threshold,
                   calibration=calibration)

    @classmethod
    def load(cls, store) -> "CoverageModel":
        """The store's calibrated model, or the default when it has none (or a damaged one)."""
        text = store.meta(META_KEY)
        if text:
            try:
                return cls.from_json(text)
            except ValueError:
                pass
        return DEFAULT

    def save(self, store) -> None:
        store.set_meta(META_KEY, self.to_json())


def fit(positives: list[Signals], negatives: list[Signals], l2: float = 1.0, iterations: int = 50
        ) -> CoverageModel:
    """Logistic regression (Newton's method, an L2 penalty on the weights) on standardised signals,
    classes weighted equally whatever their sizes."""
    X = np.array([s.vector() for s in [*positives, *negatives]])
    y = np.array([1.0] * len(positives) + [0.0] * len(negatives))
    if not len(positives) or not len(negatives):
        raise ValueError("fitting needs covered and not-covered questions")
    mean, scale = X.mean(axis=0), X.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    Z = np.hstack([(X - mean) / scale, np.ones((len(X), 1))])
    sample = np.where(y == 1, 0.5 / len(positives), 0.5 / len(negatives)) * len(X)
    w = np.zeros(Z.shape[1])
    penalty = np.diag([l2] * (Z.shape[1] - 1) + [0.0])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(Z @ w, -50, 50)))
        grad = Z.T @ (sample * (p - y)) + penalty @ w
        hess = (Z * (sample * p * (1 - p))[:, None]).T @ Z + penalty
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return CoverageModel(weights=tuple(float(x) for x in w[:-1]), bias=float(w[-1]),
                         mean=tuple(float(x) for x in mean), scale=tuple(float(x) for x in scale))


def calibrate(model: CoverageModel, own: list[Signals], *, target_recall: float = TARGET_RECALL,
              what: str = "", at: str | None = None) -> CoverageModel:
    """The model with its threshold moved so that ``target_recall`` of the store's own held-out
    questions (``own``: covered by construction) count as covered; the move is bounded
    (``MAX_SHIFT`` log-odds either way), so a few odd questions cannot switch the decision off or
    make it call everything covered. Too few questions: the model unchanged."""
    if len(own) < MIN_CALIBRATION:
        return model
    p = np.sort(model.probabilities(own))
    quantile = float(p[int(math.floor((1.0 - target_recall) * len(p)))])
    base = math.log(model.threshold / (1 - model.threshold))
    wanted = math.log(max(quantile, 1e-9) / max(1 - quantile, 1e-9))
    logit = max(base - MAX_SHIFT, min(base + MAX_SHIFT, wanted))
    threshold = 1.0 / (1.0 + math.exp(-logit))
    return CoverageModel(weights=model.weights, bias=model.bias, mean=model.mean, scale=model.scale,
                         threshold=threshold,
                         calibration={"questions": len(own), "what": what, "target_recall": target_recall,
                                      "recall_on_them": round(float(np.mean(p >= threshold)), 4),
                                      "bounded": logit != wanted, "at": at})


def calibrate_store(store, index, real: list[str], real_vectors: np.ndarray, synthetic: list[str],
                    synthetic_vectors: np.ndarray, *, seed: int = 0, at: str | None = None,
                    limit: int = 300) -> CoverageModel:
    """Calibrate the default model on the store's own held-out questions and keep it in the store:
    real ones (people's, and the docs' own) when there are enough, else synthetic ones (at most
    ``limit``, a seeded sample). Synthetic questions are easier than people's (written from the
    passage they ask about), so with them the threshold errs toward calling questions covered."""
    if len(real) >= MIN_CALIBRATION:
        texts, vectors, what = real, real_vectors, "held-out real questions"
    else:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(synthetic), size=min(limit, len(synthetic)), replace=False)) \
            if len(synthetic) else np.zeros(0, dtype=int)
        texts, vectors, what = [synthetic[i] for i in pick], np.asarray(synthetic_vectors)[pick], \
            "held-out synthetic questions"
    model = calibrate(DEFAULT, signals_many(store, index, texts, vectors), what=what, at=at)
    model.save(store)
    return model


# fitted by `python bench/coverage.py --fit` on the five real-question sets (bench/results/coverage.json,
# "fitted"); the threshold calls 90% of their covered questions covered
DEFAULT = CoverageModel(weights=(1.8345, -0.1995, 0.0667, 0.614), bias=-0.8417, mean=(0.4492, 0.0851, 0.1726, 0.8263),
                        scale=(0.127, 0.0495, 0.1755, 0.2003), threshold=0.3649)
