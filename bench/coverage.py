"""Does the bot know when the docs do not cover a question? Precision and recall of ``Answer.covered``.

    python bench/coverage.py --data DIR --homes DIR [--fit]

Five real-question sets (bench/real_corpora.py: each project's FAQ, its answer pages in the
corpus, the FAQ pages kept out) and their ingested stores (bench/real_questions.py's
``ensure_store``). A FAQ question asked of its own project's docs is **covered**; the same question
asked of another project's docs is **not covered** (cross-corpus negatives; noisy labels: a
Python question may well be answered by the Django docs, so the not-covered precision measured
here is a lower bound). Also asked of every store: 40 clearly off-topic questions (cooking,
travel, sport, ...).

Held out, two ways:
- **leave one corpus out**: the weights are fitted on the other four stores with the other four
  question sets (the test corpus's questions and store are never seen), tested on the fifth:
  its own questions (covered) and the four other sets plus the off-topic questions asked of it;
- **per-store calibration** (what the nightly job does): that model's threshold moved to cover
  90% of the test store's own synthetic questions (offline generator, 300 sampled), then tested
  the same way; and calibrated on half of the store's FAQ questions, tested on the other half.

Precision/recall are given for both decisions (covered, and not covered: what makes the bot
offer an expert), with n and the binomial standard error. ``--fit`` also fits the weights on all
five corpora and prints them: shared/coverage.py's DEFAULT. Saves bench/results/coverage.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import machine, save  # noqa: E402
from bench.real_questions import ensure_store  # noqa: E402
from shared.coverage import FEATURES, CoverageModel, Signals, calibrate, fit, signals_many  # noqa: E402
from shared.embedders import make_embedder  # noqa: E402
from shared.queries import load_queries  # noqa: E402
from shared.questions import synthetic_questions  # noqa: E402
from shared.questions.vectors import embed_questions  # noqa: E402
from shared.settings import load_settings  # noqa: E402
from shared.store import Store  # noqa: E402
from shared.vector_index import MemoryIndex  # noqa: E402

OFF_TOPIC = [
    "How long should I knead bread dough?", "What temperature do I roast a chicken at?",
    "How do I make sourdough starter?", "Can I freeze cooked rice?", "How much salt goes into pasta water?",
    "What is the best way to store fresh basil?", "How do I caramelize onions without burning them?",
    "Which wine goes with grilled salmon?", "How do I get a visa for Japan?",
    "What is the cheapest month to fly to Lisbon?", "Do I need travel insurance for a ski trip?",
    "How early should I arrive at the airport for an international flight?",
    "What are the rules of the offside in football?", "How many players are on a rugby union team?",
    "How do I improve my marathon time?", "When is the next solar eclipse visible in Europe?",
    "How do I repot an orchid?", "Why are the leaves of my tomato plants turning yellow?",
    "How often should I water a cactus?", "What is the capital of Australia?", "Who painted the Mona Lisa?",
    "How do I tune a guitar to drop D?", "What is a minor seventh chord?", "How do I train my puppy to sit?",
    "What should I feed a pet rabbit?", "How do I remove a red wine stain from a carpet?",
    "How do I fix a leaking kitchen tap?", "What is the difference between a Roth IRA and a traditional IRA?",
    "How do I lower my electricity bill in winter?", "How many hours of sleep does a teenager need?",
    "What are the symptoms of dehydration?", "How do I change a flat tyre?",
    "Which knitting needles for a beginner scarf?", "How do I write a cover letter for a nursing job?",
    "What is the plot of Pride and Prejudice?", "How far is the Moon from the Earth?",
    "How do I say thank you in Korean?", "What is a good stretching routine after cycling?",
    "How do I descale a kettle?", "When do cherry trees blossom in Kyoto?",
]
SYNTHETIC = 300  # own synthetic questions sampled per store for its calibration


def gather(data: Path, homes: Path, names: list[str], log) -> dict:
    """Signals of every question set (and the off-topic questions) asked of every store."""
    embedder = make_embedder(load_settings(home=str(homes / names[0])))
    sets = {n: [q.text for q in load_queries(data / n / "questions.jsonl")] for n in names}
    sets["off-topic"] = OFF_TOPIC
    vectors = {n: embedder.embed(texts) for n, texts in sets.items()}
    out: dict = {"signals": {}, "synthetic": {}, "sizes": {n: len(t) for n, t in sets.items()}}
    for store_name in names:
        started = time.perf_counter()
        home = ensure_store(store_name, data, homes)
        settings = load_settings(home=str(home.root))
        with Store.open(home.store_path, create=False) as store:
            index = MemoryIndex(store)
            t = time.perf_counter()
            out["signals"][store_name] = {n: [s.to_dict() for s in signals_many(store, index, sets[n], vectors[n])]
                                          for n in sets}
            out.setdefault("signals_ms_per_question", {})[store_name] = round(
                (time.perf_counter() - t) * 1e3 / sum(len(v) for v in sets.values()), 2)
            questions, _ = synthetic_questions(store, settings, "offline", progress=False)
            texts = [q.text for q in random.Random(0).sample(questions, min(SYNTHETIC, len(questions)))]
            out["synthetic"][store_name] = [s.to_dict() for s in signals_many(
                store, index, texts, embed_questions(store, embedder, texts))]
            out.setdefault("chunks", {})[store_name] = len(index)
        log(f"{store_name}: {len(index)} chunks, signals in {time.perf_counter() - started:.1f} s")
    return out


def as_signals(rows: list[dict]) -> list[Signals]:
    return [Signals(**r) for r in rows]


def rates(covered_truth: np.ndarray, covered_said: np.ndarray) -> dict:
    """Precision and recall of both decisions, with n and the binomial standard error."""
    out = {}
    for label, truth, said in (("covered", covered_truth, covered_said),
                               ("not_covered", ~covered_truth, ~covered_said)):
        tp = int((truth & said).sum())
        n_said, n_true = int(said.sum()), int(truth.sum())
        p = tp / n_said if n_said else None
        r = tp / n_true if n_true else None
        out[label] = {"precision": round(p, 4) if p is not None else None,
                      "precision_se": round(float(np.sqrt(p * (1 - p) / n_said)), 4) if n_said else None,
                      "n_said": n_said,
                      "recall": round(r, 4) if r is not None else None,
                      "recall_se": round(float(np.sqrt(r * (1 - r) / n_true)), 4) if n_true else None,
                      "n_true": n_true}
    out["accuracy"] = round(float((covered_truth == covered_said).mean()), 4)
    return out


def test_on(model, gathered: dict, store: str, names: list[str], own_idx=None) -> dict:
    """The model's decisions on one store: its own questions (covered), the other sets and the
    off-topic questions (not covered); per set as well."""
    sig = gathered["signals"][store]
    own = as_signals(sig[store])
    if own_idx is not None:
        own = [own[i] for i in own_idx]
    others = {n: as_signals(sig[n]) for n in [*names, "off-topic"] if n != store}
    said_own = np.array([model.decide(s)[0] for s in own])
    said = {n: np.array([model.decide(s)[0] for s in v]) for n, v in others.items()}
    truth = np.array([True] * len(own) + [False] * sum(len(v) for v in others.values()))
    decisions = np.concatenate([said_own, *said.values()])
    out = rates(truth, decisions)
    out["own_covered_share"] = round(float(said_own.mean()), 4)
    out["not_covered_share_by_set"] = {n: {"share": round(float((~v).mean()), 4), "n": len(v)}
                                       for n, v in said.items()}
    return out


def pooled(results: dict, key: str) -> dict:
    """Decisions pooled over the five held-out corpora."""
    agg = {"covered": [0, 0, 0], "not_covered": [0, 0, 0]}  # tp, said, true
    for r in results.values():
        for label in agg:
            m = r[key][label]
            tp = round((m["precision"] or 0) * m["n_said"])
            agg[label] = [agg[label][0] + tp, agg[label][1] + m["n_said"], agg[label][2] + m["n_true"]]
    out = {}
    for label, (tp, said, true) in agg.items():
        p, r = tp / said if said else None, tp / true if true else None
        out[label] = {"precision": round(p, 4) if p is not None else None, "n_said": said,
                      "precision_se": round(float(np.sqrt(p * (1 - p) / said)), 4) if said else None,
                      "recall": round(r, 4) if r is not None else None, "n_true": true,
                      "recall_se": round(float(np.sqrt(r * (1 - r) / true)), 4) if true else None}
    return out


def training_pairs(gathered: dict, stores: list[str], question_sets: list[str]) -> tuple[list, list]:
    pos, neg = [], []
    for store in stores:
        for n in question_sets:
            (pos if n == store else neg).extend(as_signals(gathered["signals"][store][n]))
    return pos, neg


def default_model(positives: list[Signals], negatives: list[Signals]) -> CoverageModel:
    """Fitted weights, and the threshold that calls 90% of the training's covered questions covered
    (what a store gets before its own calibration)."""
    model = fit(positives, negatives)
    model.threshold = calibrate(model, positives).threshold
    return model


def evaluate(gathered: dict, names: list[str]) -> dict:
    results = {}
    for test in names:
        rest = [n for n in names if n != test]
        model = default_model(*training_pairs(gathered, rest, rest))
        synthetic = as_signals(gathered["synthetic"][test])
        calibrated = calibrate(model, synthetic, what="own synthetic questions")
        own = as_signals(gathered["signals"][test][test])
        halves = {}
        order = random.Random(1).sample(range(len(own)), len(own))
        folds = [sorted(order[::2]), sorted(order[1::2])]
        for i, (cal, tst) in enumerate((folds, folds[::-1])):
            m = calibrate(model, [own[j] for j in cal], what="half of its FAQ questions")
            halves[f"fold{i}"] = {"threshold": round(m.threshold, 4), "calibration": m.calibration,
                                  "result": test_on(m, gathered, test, names, own_idx=tst)}
        results[test] = {
            "default": test_on(model, gathered, test, names),
            "synthetic_calibrated": test_on(calibrated, gathered, test, names) | {
                "threshold": round(calibrated.threshold, 4), "calibration": calibrated.calibration},
            "faq_half_calibrated": halves,
            "weights": dict(zip(FEATURES, (round(w, 3) for w in model.weights))),
            "default_threshold": round(model.threshold, 4),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--homes", required=True)
    parser.add_argument("--corpora", default="sqlite,python,django,sqlalchemy,perl")
    parser.add_argument("--signals", default=None, help="reuse signals saved by an earlier run (JSON)")
    parser.add_argument("--fit", action="store_true", help="also fit on all corpora and print DEFAULT")
    args = parser.parse_args()
    names = args.corpora.split(",")
    started = time.perf_counter()
    if args.signals and Path(args.signals).is_file():
        gathered = json.loads(Path(args.signals).read_text())
    else:
        gathered = gather(Path(args.data), Path(args.homes), names, log=print)
        if args.signals:
            Path(args.signals).write_text(json.dumps(gathered))
    results = evaluate(gathered, names)
    out = {"machine": machine(), "sizes": gathered["sizes"], "chunks": gathered.get("chunks"),
           "signals_ms_per_question": gathered.get("signals_ms_per_question"),
           "features": list(FEATURES), "per_corpus": results,
           "pooled": {k: pooled(results, k) for k in ("default", "synthetic_calibrated")},
           "seconds": round(time.perf_counter() - started, 1)}
    if args.fit:
        model = default_model(*training_pairs(gathered, names, names))
        out["fitted"] = json.loads(model.to_json())
        r = lambda xs: tuple(round(x, 4) for x in xs)  # noqa: E731
        print(f"DEFAULT = CoverageModel(weights={r(model.weights)}, bias={model.bias:.4f}, mean={r(model.mean)},\n"
              f"                        scale={r(model.scale)}, threshold={model.threshold:.4f})")
    for name, r in results.items():
        for key in ("default", "synthetic_calibrated"):
            m = r[key]
            print(f"{name:<11} {key:<21} covered P {m['covered']['precision']} R {m['covered']['recall']} "
                  f"(n {m['covered']['n_true']}); not covered P {m['not_covered']['precision']} "
                  f"R {m['not_covered']['recall']} (n {m['not_covered']['n_true']})")
    print(json.dumps(out["pooled"], indent=1))
    save("coverage", out)


if __name__ == "__main__":
    main()
