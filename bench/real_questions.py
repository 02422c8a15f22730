"""Deep memory judged on real questions across corpora: plain search, synthetic-only deep memory,
and history + synthetic deep memory, 2-fold.

    python bench/real_questions.py --data DIR --homes DIR [--corpora sqlite,perl,...] [--rephrase N]

For each corpus of bench/real_corpora.py (its folder and its FAQ's questions in DIR/NAME/, made
by `python bench/real_corpora.py --out DIR`; the store in --homes/NAME, ingested here when
missing):

- **plain**: vector search without an adapter (one chunk per section, as results are shown);
- **synthetic only**: `deepmem train` with no real questions but the docs' own (the offline generator):
  the adapter it trained, and what it serves (that adapter when its judge activated it, else plain);
- **history + synthetic**, 2-fold: half of the real questions play the workspace's Slack history,
  the other half is the test; then swap. Each history question becomes a Slack-like thread (the
  question, a colleague's reply linking to the sections the FAQ answer links to, the asker's ✅),
  goes through the same extraction as `deepmem history import` (shared.history.label_thread and
  record_label) into a fresh feedback store, and the nightly job (`deepmem retrain --now`)
  trains and judges; what it then serves (the promoted adapter, or plain search when its gate
  said no) is scored on the test half, as is the challenger it trained.
- with ``--rephrase N``, a simulation at larger scale: each history question also arrives as N
  rephrasings (bench/rephrase.py) from other askers, so the history holds (N+1) times as many
  threads. Test questions are never rephrased. These numbers come from simulation.

Scores: hit@1/3/5/10 and MRR@10 against the pages the FAQ answers link to ("page"), and against
the linked sections where the FAQ names them ("section"); over both folds each real question is
tested once. Noise: the standard error of the per-question difference from plain search
(paired), and how many points one question is. Saves bench/results/real_questions.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import machine, save  # noqa: E402
from bench.real_corpora import CORPORA  # noqa: E402
from bench.rephrase import rephrase  # noqa: E402
from shared.deep_memory.job import TrainOptions, run_training  # noqa: E402
from shared.deep_memory.nightly import NightlyConfig, run_nightly  # noqa: E402
from shared.deep_memory.versions import AdapterRegistry  # noqa: E402
from shared.embedders import make_embedder  # noqa: E402
from shared.feedback.store import FeedbackStore  # noqa: E402
from shared.history import Message, docs_entry, label_thread, record_label  # noqa: E402
from shared.home import Home  # noqa: E402
from shared.ingest import ingest  # noqa: E402
from shared.queries import Resolver, load_queries  # noqa: E402
from shared.questions import synthetic_questions  # noqa: E402
from shared.questions.vectors import embed_questions  # noqa: E402
from shared.settings import load_settings  # noqa: E402
from shared.sources import DEMO_BASE_URL, demo_archive  # noqa: E402
from shared.store import Store  # noqa: E402
from shared.vector_index import MemoryIndex  # noqa: E402

KS = (1, 3, 5, 10)


def fold_of(question_id: str) -> int:
    return int(hashlib.sha256(f"fold-0:{question_id}".encode()).hexdigest()[:8], 16) % 2


def ensure_store(name: str, data: Path, homes: Path) -> Home:
    home = Home.open(homes / name)
    settings = load_settings(home=str(home.root))
    with Store.open(home.store_path) as store:
        embedder = make_embedder(settings)
        corpus = CORPORA[name]
        done = home.root / "bench-ingested"  # a benchmark's corpus does not change: ingested once, to the end
        if not done.exists():
            if corpus.package is None:
                ingest(store, embedder, settings, str(demo_archive()), base_url=DEMO_BASE_URL, progress=True)
            else:
                ingest(store, embedder, settings, str(data / name / "corpus"), base_url=corpus.base_url,
                       progress=True)
            done.touch()
        # the FAQ is the test: its page is not part of the corpus (the other corpora are built without it),
        # so neither search nor the docs' own questions can see the answers
        faq = store.pages_at_path("faq.html")
        if corpus.package is None and faq:
            store.delete_pages(faq)
        # the synthetic questions and their vectors, once: every scratch copy below inherits them
        questions, _ = synthetic_questions(store, settings, "offline", progress=False)
        embed_questions(store, embedder, [q.text for q in questions])
    return home


def scratch(home: Home, label: str) -> Home:
    """A private copy of the store (its cached questions and question vectors come along)."""
    work = Home.open(tempfile.mkdtemp(prefix=f"deepmem-real-{label}-"))
    with Store.open(home.store_path, create=False) as store:
        store.checkpoint()
    shutil.copy(home.store_path, work.store_path)
    return work


def firsts(index: MemoryIndex, vectors: np.ndarray, targets: list[list[frozenset[int]]], adapter=None) -> np.ndarray:
    """Per question, the rank of the first relevant result (one chunk per section), or 10**6."""
    q = adapter(vectors) if adapter is not None else vectors
    ids, _ = index.search_many(q, max(KS))
    out = []
    for row, t in zip(ids, targets):
        out.append(next((i + 1 for i, r in enumerate(row) if r >= 0 and any(int(r) in x for x in t)), 10 ** 6))
    return np.asarray(out)


def summary(first: np.ndarray, plain: np.ndarray) -> dict:
    n = len(first)
    out = {f"hit@{k}": round(float(np.mean(first <= k)), 4) for k in KS}
    out["mrr@10"] = round(float(np.mean(np.where(first <= 10, 1.0 / first, 0.0))), 4)
    for k in (5, 10):
        d = (first <= k).astype(float) - (plain <= k).astype(float)
        out[f"gain_hit@{k}"] = round(float(d.mean()), 4)
        out[f"noise_hit@{k}"] = round(float(d.std(ddof=1) / np.sqrt(n)), 4) if n > 1 else None
    d = np.where(first <= 10, 1.0 / first, 0.0) - np.where(plain <= 10, 1.0 / plain, 0.0)
    out["gain_mrr@10"] = round(float(d.mean()), 4)
    out["noise_mrr@10"] = round(float(d.std(ddof=1) / np.sqrt(n)), 4) if n > 1 else None
    out["questions"] = n
    return out


def threads(questions, base_url: str, rephrasings: int, seed: int) -> list[list[Message]]:
    """Each history question as a Slack thread answered with the FAQ's links and marked resolved."""
    rng = random.Random(seed)
    out = []
    t = 1_700_000_000
    for q in questions:
        links = tuple(base_url.rstrip("/") + "/" + s for s in q.meta.get("relevant_sections", [])) or \
            tuple(base_url.rstrip("/") + "/" + entry for entry, _ in q.relevant)
        texts = [q.text] + [rephrase(q.text, rng) for _ in range(rephrasings)]
        for n, text in enumerate(dict.fromkeys(texts)):
            t += 100
            asker = f"U{hashlib.sha256(f'{q.id}:{n}'.encode()).hexdigest()[:8].upper()}"
            out.append([Message(ts=f"{t}.000100", user=asker, text=text),
                        Message(ts=f"{t + 60}.000100", user="UHELPER01", text="see the docs", links=links,
                                reactions={"white_check_mark": (asker,)})])
    return out


def import_history(home: Home, store: Store, conversation: list[list[Message]]) -> int:
    resolver = Resolver(store)
    feedback = FeedbackStore(home)
    n = 0
    for thread in conversation:
        label = label_thread(thread, lambda url: docs_entry(resolver, url) is not None)
        if label is not None:
            record_label(feedback, label, lambda url: docs_entry(resolver, url), channel="CBENCH", team="TBENCH",
                         origin="history")
            n += 1
    feedback.drain()
    return n


def run_corpus(name: str, data: Path, homes: Path, rephrasings: list[int], log) -> dict:
    corpus = CORPORA[name]
    home = ensure_store(name, data, homes)
    settings = load_settings(home=str(home.root))
    embedder = make_embedder(settings)
    started = time.perf_counter()
    questions = [q for q in load_queries(data / name / "questions.jsonl")]
    store = Store.open(home.store_path, create=False)  # open for the whole run: the index reads it
    resolver = Resolver(store)
    page_t = [r.targets for r in resolver.resolve(questions)]
    section_q = [type(q)(q.text, [(s, 1.0) for s in q.meta.get("relevant_sections", [])] or q.relevant, id=q.id)
                 for q in questions]
    section_t = [r.targets or p for r, p in zip(resolver.resolve(section_q), page_t)]
    keep = [i for i, t in enumerate(page_t) if t]
    questions = [questions[i] for i in keep]
    page_t, section_t = [page_t[i] for i in keep], [section_t[i] for i in keep]
    vectors = embed_questions(store, embedder, [q.text for q in questions])
    index = MemoryIndex(store)
    stats = store.stats()
    fold = np.array([fold_of(q.id) for q in questions])
    base_url = corpus.base_url if corpus.package else DEMO_BASE_URL
    log(f"{name}: {stats['chunks']} chunks, {len(questions)} real questions ({int((fold == 0).sum())} / "
        f"{int((fold == 1).sum())} per fold)")

    results: dict[str, dict] = {}

    def score(label: str, ranks: dict[str, np.ndarray]) -> None:
        results[label] = {level: summary(ranks[level], plain_ranks[level]) for level in ranks}
        log(f"  {label:<34} page hit@5 {results[label]['page']['hit@5']:.3f} "
            f"({results[label]['page']['gain_hit@5']:+.3f} ±{results[label]['page']['noise_hit@5'] or 0:.3f}), "
            f"MRR@10 {results[label]['page']['mrr@10']:.3f}; section hit@5 {results[label]['section']['hit@5']:.3f}")

    plain_ranks = {"page": firsts(index, vectors, page_t), "section": firsts(index, vectors, section_t)}
    score("plain search", plain_ranks)

    # synthetic only: what `deepmem train` makes without any real question
    work = scratch(home, f"{name}-syn")
    with Store.open(work.store_path, create=False) as store:
        report = run_training(store, embedder, work, settings,
                              TrainOptions(generator="offline", activate="if-better", progress=False),
                              log=lambda *a: None)
    registry = AdapterRegistry(work.adapters_dir)
    syn_adapter = registry.load(report.version)[0] if report.version else None
    served = registry.load_active()
    served = served[1] if served else None
    score("synthetic only: trained", {"page": firsts(index, vectors, page_t, syn_adapter),
                                      "section": firsts(index, vectors, section_t, syn_adapter)})
    score("synthetic only: served", {"page": firsts(index, vectors, page_t, served),
                                     "section": firsts(index, vectors, section_t, served)})
    log(f"    `deepmem train`: {'activated' if report.activated else 'not activated'} ({report.decision})")
    synthetic_split = report.comparisons[0].to_dict() | {"decision": report.decision, "activated": report.activated,
                                                         "real_questions_in_store": report.counts.get("real_questions")}
    shutil.rmtree(work.root, ignore_errors=True)

    runs = []
    for n_reph in rephrasings:
        served = {"page": np.zeros(len(questions), int), "section": np.zeros(len(questions), int)}
        trained = {"page": np.zeros(len(questions), int), "section": np.zeros(len(questions), int)}
        for test_fold in (0, 1):
            hist = [q for q, f in zip(questions, fold) if f != test_fold]
            test = np.flatnonzero(fold == test_fold)
            work = scratch(home, f"{name}-f{test_fold}")
            with Store.open(work.store_path, create=False) as store:
                imported = import_history(work, store, threads(hist, base_url, n_reph, seed=test_fold))
            record = run_nightly(work, load_settings(home=str(work.root)),
                                 NightlyConfig(generator="offline", threads=None, trigger="bench",
                                               time_budget_s=6 * 3600),
                                 embedder=embedder, log=lambda *a: None)
            registry = AdapterRegistry(work.adapters_dir)
            active = registry.load_active()
            challenger = registry.load(record["version"])[0] if record.get("version") else None
            for level, targets in (("page", page_t), ("section", section_t)):
                t = [targets[i] for i in test]
                served[level][test] = firsts(index, vectors[test], t, active[1] if active else None)
                trained[level][test] = firsts(index, vectors[test], t, challenger)
            runs.append({"rephrasings": n_reph, "test_fold": test_fold, "history_threads": imported,
                         "status": record["status"], "decision": record.get("decision"),
                         "counts": record.get("counts"), "real_gate": (record.get("metrics") or {}).get("real")})
            log(f"    fold {test_fold}, {imported} history threads: {record['status']} ({record.get('decision')})")
            shutil.rmtree(work.root, ignore_errors=True)
        tag = "history + synthetic" + (f", {n_reph} rephrasings each (simulated)" if n_reph else "")
        score(f"{tag}: served", served)
        score(f"{tag}: challenger", trained)
    store.close()
    return {"corpus": name, "chunks": stats["chunks"], "pages": stats["pages"], "questions": len(questions),
            "one_question_points": round(100 / len(questions), 1), "results": results, "runs": runs,
            "synthetic_split": synthetic_split, "seconds": round(time.perf_counter() - started, 1)}


def table(corpora: list[dict], level: str = "page") -> str:
    """The README's table: per corpus and variant, hit@1/3/5/10 and MRR@10, gains over plain with noise."""
    rows = ["| corpus (questions; 1 q =) | | hit@1 | hit@3 | hit@5 | hit@10 | MRR@10 | hit@5 vs plain "
            "| MRR@10 vs plain |",
            "|---|---|---|---|---|---|---|---|---|"]
    for c in corpora:
        for label, r in c["results"].items():
            m = r[level]
            gain = "" if label == "plain search" else \
                f"{100 * m['gain_hit@5']:+.1f} ± {100 * m['noise_hit@5']:.1f}"
            mrr = "" if label == "plain search" else f"{m['gain_mrr@10']:+.3f} ± {m['noise_mrr@10']:.3f}"
            first = label == "plain search"
            name = f"{c['corpus']} ({c['questions']}; {c['one_question_points']} pts)" if first else ""
            rows.append(f"| {name} | {label} | {m['hit@1']:.3f} | {m['hit@3']:.3f} | {m['hit@5']:.3f} | "
                        f"{m['hit@10']:.3f} | {m['mrr@10']:.3f} | {gain} | {mrr} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="folders and questions made by bench/real_corpora.py")
    parser.add_argument("--homes", help="one data directory per corpus (ingested when missing)")
    parser.add_argument("--corpora", default="sqlite,python,django,sqlalchemy,perl")
    parser.add_argument("--rephrase", type=int, default=0, help="also simulate a history of N rephrasings each")
    parser.add_argument("--out", default="real_questions", help="name of the results file in bench/results/")
    parser.add_argument("--table", nargs="*", metavar="RESULTS",
                        help="print the README table from saved results files instead of measuring")
    parser.add_argument("--level", default="page", choices=("page", "section"))
    args = parser.parse_args()
    if args.table is not None:
        corpora = [c for path in args.table for c in json.loads(Path(path).read_text())["corpora"]]
        print(table(corpora, args.level))
        return
    if not (args.data and args.homes):
        parser.error("--data and --homes are needed to measure")
    rephrasings = [0] + ([args.rephrase] if args.rephrase else [])
    corpora = []
    for name in args.corpora.split(","):
        corpora.append(run_corpus(name, Path(args.data), Path(args.homes), rephrasings, log=print))
        save(args.out, {"machine": machine(), "corpora": corpora})


if __name__ == "__main__":
    main()
