"""The training job: questions -> split -> train -> evaluate -> keep or discard.

Used by `deepmem train` and by the nightly daemon alike. A new adapter is written as a new
version, and activated only when it beats the active one (or plain search, when none is
active) on the held-out test split; otherwise the report says why and nothing changes.
Until the very end nothing is written, so an interrupted job leaves everything as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..embedders import Embedder
from ..errors import DeepmemError, EmptyStore
from ..evaluation import Comparison, evaluate
from ..home import Home
from ..queries import Resolver, load_queries
from ..questions import resolve_generator, synthetic_questions
from ..settings import Settings
from ..store import Store
from ..vector_index import MemoryIndex
from .adapter import LinearAdapter
from .dataset import Dataset, Example, SplitSpec, split_salt
from .trainer import TrainConfig, train_adapter
from .versions import AdapterError, AdapterRegistry, same_split, unfit_for

__all__ = ["TrainOptions", "TrainReport", "run_training", "decide", "MIN_CHUNKS"]

MIN_CHUNKS = 50


@dataclass
class TrainOptions:
    generator: str = "auto"  # auto | offline | llm | none
    queries: list[Path] = field(default_factory=list)  # the user's questions: trained on (train split)
    eval_queries: list[Path] = field(default_factory=list)  # real questions: reported, never trained on
    activate: str = "if-better"  # if-better | always | never
    config: TrainConfig = field(default_factory=TrainConfig)
    progress: bool = True
    max_train: int | None = None  # train on a random subset of this many questions (learning curves)
    split_by: str = "chunk"  # chunk (the reference's protocol) | section (stricter)


@dataclass
class TrainReport:
    version: str | None
    activated: bool
    decision: str
    counts: dict
    comparisons: list[Comparison]
    champion: str | None
    seconds: float
    train: dict
    questions: dict

    def to_dict(self) -> dict:
        return {"version": self.version, "activated": self.activated, "decision": self.decision,
                "champion": self.champion, "counts": self.counts, "seconds": round(self.seconds, 2),
                "train": self.train, "questions": self.questions,
                "evaluations": [c.to_dict() for c in self.comparisons]}


def _score(m: dict) -> float:
    return (m["hit_rate@10"] + m["mrr@10"] + m["recall@10"]) / 3


def decide(challenger: dict, champion: dict, champion_name: str) -> tuple[bool, str]:
    """Promote when the challenger's mean of hit@10, MRR@10 and R@10 on the test split is higher
    and its hit@10 is not lower."""
    gain = _score(challenger) - _score(champion)
    if challenger["hit_rate@10"] < champion["hit_rate@10"] - 1e-9:
        return False, (f"kept {champion_name}: hit@10 on the test split would drop from "
                       f"{champion['hit_rate@10']:.3f} to {challenger['hit_rate@10']:.3f}")
    if gain <= 0:
        return False, (f"kept {champion_name}: the new adapter is not better on the test split "
                       f"(score {_score(challenger):.4f} vs {_score(champion):.4f})")
    return True, (f"better than {champion_name} on the test split: hit@10 {champion['hit_rate@10']:.3f} -> "
                  f"{challenger['hit_rate@10']:.3f}, MRR@10 {champion['mrr@10']:.3f} -> {challenger['mrr@10']:.3f}")


def _resolve_query_files(resolver: Resolver, paths: list[Path]) -> list[tuple[str, list[tuple[str, tuple[int, ...]]]]]:
    out = []
    for path in paths:
        resolved = resolver.resolve(load_queries(path))
        items = [(r.text, tuple(sorted(r.all_rowids))) for r in resolved if r.targets]
        if not items:
            raise DeepmemError(f"{path}: none of its relevant entries match a chunk of this store")
        out.append((f"queries:{Path(path).name}", items))
    return out


def run_training(store: Store, embedder: Embedder, home: Home, settings: Settings, options: TrainOptions,
                 log=print) -> TrainReport:
    started = time.perf_counter()
    stats = store.stats()
    if not stats["chunks"]:
        raise EmptyStore("the store is empty: run `deepmem ingest` first")
    if stats["chunks"] < MIN_CHUNKS:
        raise EmptyStore(f"the store holds {stats['chunks']} chunks; deep memory needs at least {MIN_CHUNKS} "
                         f"to learn anything that generalises")
    store.check_embedder(embedder.name, embedder.dim)

    # 1. questions
    generator = resolve_generator(options.generator, settings)
    questions, qinfo = synthetic_questions(store, settings, generator, progress=options.progress)
    resolver = Resolver(store)
    row_of = resolver.by_id
    groups: list[tuple[str, list[tuple[str, tuple[int, ...]]]]] = []
    by_style: dict[str, list] = {}
    for q in questions:
        rows = tuple(row_of[c] for c in q.positives if c in row_of)
        if rows:
            by_style.setdefault(f"synthetic:{q.style}", []).append((q.text, rows))
    groups.extend(sorted(by_style.items()))
    groups.extend(_resolve_query_files(resolver, options.queries))

    # 2. split by chunk, seeded
    spec = SplitSpec(salt=split_salt(options.config.seed), by=options.split_by)
    data = Dataset.build(store, groups, spec)
    if options.max_train is not None and len(data.train) > options.max_train:
        rng = np.random.default_rng(options.config.seed)
        data.train = [data.train[i] for i in sorted(rng.choice(len(data.train), options.max_train, replace=False))]
    counts = data.counts()
    log(f"questions: {counts['train']} train, {counts['val']} validation, {counts['test']} test "
        f"({qinfo.get('generator')})")

    # 3. vectors
    index = MemoryIndex(store)
    texts = {s: [e.text for e in getattr(data, s)] for s in ("train", "val", "test")}
    vectors = {s: embedder.embed(t) if t else np.zeros((0, embedder.dim), np.float32) for s, t in texts.items()}

    # 4. train (nothing is written before the end: Ctrl-C leaves everything as it was)
    def progress(epoch, loss, mrr):
        if options.progress:
            log(f"  epoch {epoch + 1}: loss {loss:.4f}, validation MRR@10 {mrr:.4f}")

    result = train_adapter(options.config, index.rowids, index.matrix, vectors["train"], data.train,
                           vectors["val"], data.val, progress=progress)

    # 5. evaluate: base, champion, challenger; synthetic test split and real questions
    registry = AdapterRegistry(home.adapters_dir)
    champion = None
    champion_note = ""
    try:
        active = registry.load_active()
    except AdapterError as exc:  # a damaged champion is replaced by a better challenger, not a crash
        active, champion_note = None, f" ({exc})"
    if active is not None:
        name, adapter, meta = active
        unfit = unfit_for(meta, adapter, embedder.name, embedder.dim)
        if unfit:
            champion_note = f" ({name} was {unfit})"
        elif not same_split(meta, spec):
            champion_note = f" ({name} was trained on another split and cannot be compared fairly)"
        else:
            champion = (name, adapter)
    comparisons = []
    test_queries = _as_resolved(data.test)
    comparisons.append(_compare("held-out synthetic test split", index, store, embedder, test_queries,
                                result.adapter, champion, vectors["test"]))
    for source in sorted({e.source for e in data.test if not e.source.startswith("synthetic:")}):
        rows = [i for i, e in enumerate(data.test) if e.source == source]
        comparisons.append(_compare(f"{source} (test split)", index, store, embedder,
                                    _as_resolved([data.test[i] for i in rows]), result.adapter, champion,
                                    vectors["test"][rows]))
    for path in options.eval_queries:
        resolved = resolver.resolve(load_queries(path))
        comparisons.append(_compare(f"real questions: {Path(path).name}", index, store, embedder, resolved,
                                    result.adapter, champion))

    # 6. decide and record
    test = comparisons[0]
    champion_name = champion[0] if champion else f"plain search (no adapter){champion_note}"
    champion_metrics = test.champion_metrics if champion else test.base
    better, reason = decide(test.deep, champion_metrics, champion_name)
    if result.best_epoch < 0:
        better, reason = False, "no epoch improved validation MRR@10 over plain search; nothing to save"
    meta = {
        "embedder": embedder.name, "dim": embedder.dim,
        "config": {"dim": embedder.dim, "kind": "linear"},
        "train_config": options.config.to_dict(),
        "split": spec.to_meta(),
        "generator": qinfo.get("generator"), "counts": counts,
        "training": {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                     "stopped_by": result.stopped_by, "seconds": round(result.seconds, 2),
                     "val_mrr_history": [round(v, 4) for v in result.val_history],
                     "base_val_mrr": round(result.base_val_mrr, 4),
                     "distance_from_identity": round(result.adapter.distance_from_identity(), 4)},
        "metrics": [c.to_dict() for c in comparisons],
        "decision": reason, "champion": champion[0] if champion else None,
    }
    version = None
    activated = False
    if result.best_epoch >= 0:
        saved = registry.save(result.adapter, meta)
        version = saved.name
        if options.activate == "always" or (options.activate == "if-better" and better):
            registry.activate(version)
            activated = True
    if options.activate == "never" and better:
        reason += " (not activated: --no-activate)"
    return TrainReport(version=version, activated=activated, decision=reason, counts=counts, comparisons=comparisons,
                       champion=champion[0] if champion else None, seconds=time.perf_counter() - started,
                       train=meta["training"], questions=qinfo)


def _as_resolved(examples: list[Example]):
    from ..queries import Query, ResolvedQuery

    return [ResolvedQuery(Query(e.text, [], id=None), [frozenset(e.positives)], []) for e in examples]


def _compare(name, index, store, embedder, queries, challenger: LinearAdapter, champion, vectors=None) -> Comparison:
    usable = [q for q in queries if q.targets]
    if vectors is None and usable:
        vectors = embedder.embed([q.text for q in usable])
    base = evaluate(index, store, embedder, usable, None, query_vectors=vectors)
    deep = evaluate(index, store, embedder, usable, challenger, query_vectors=vectors)
    comp = Comparison(name, base, deep)
    comp.champion_metrics = evaluate(index, store, embedder, usable, champion[1], query_vectors=vectors) \
        if champion else None
    return comp
