"""`deepmem train`: questions -> split -> train -> judge -> keep or discard.

Synthetic questions (split by chunk) and real ones: what people asked (feedback, the
workspace's history, imported labels), the docs' own questions, and the user's ``--queries``
files, split by question; real training questions are weighted to make a fixed share of the
training set (``training_set``). A new adapter is written as a new version and activated only
when ``judge`` says so: on held-out real questions (the held-out side of the above, and every
``--eval-queries`` file, never trained on) whenever there are enough, with their noise; on the
synthetic split (a diagnostic otherwise) only when there are not. The LLM generator is shown a few
real training questions as examples of how people ask (``style_examples``; held-out ones never).
Until the very end nothing is written, so an interrupted job leaves everything as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..coverage import calibrate_store
from ..embedders import Embedder
from ..errors import DeepmemError, EmptyStore
from ..evaluation import Comparison, evaluate
from ..home import Home
from ..queries import Query, ResolvedQuery, Resolver, load_queries
from ..questions import StyleExamples, resolve_generator, synthetic_questions
from ..questions.vectors import embed_questions
from ..settings import Settings
from ..store import Store
from ..vector_index import MemoryIndex
from .adapter import LinearAdapter
from .dataset import Dataset, Example, SplitSpec, split_salt
from .judge import HeldOut, collections_of, judge
from .real_questions import RealQuestion, docs_questions, real_questions, split_real, style_examples
from .trainer import TrainConfig, train_adapter
from .training_set import RealMix, add_real
from .versions import AdapterError, open_registry, same_split, unfit_for

__all__ = ["TrainOptions", "TrainReport", "run_training", "training_style", "MIN_CHUNKS", "REAL_TEST_SHARE"]

MIN_CHUNKS = 50
REAL_TEST_SHARE = 0.3  # of the real questions (not --eval-queries files, which are all held out)


@dataclass
class TrainOptions:
    generator: str = "auto"  # auto | offline | llm | none
    queries: list[Path] = field(default_factory=list)  # the user's real questions: trained on, a share held out
    eval_queries: list[Path] = field(default_factory=list)  # real questions: judged on, never trained on
    activate: str = "if-better"  # if-better | always | never
    config: TrainConfig = field(default_factory=TrainConfig)
    progress: bool = True
    max_train: int | None = None  # train on a random subset of this many synthetic questions (learning curves)
    mix: RealMix = field(default_factory=RealMix)  # how much real training questions weigh
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
    by_collection: dict = field(default_factory=dict)  # held-out set -> collection -> the judge's comparison

    def to_dict(self) -> dict:
        return {"version": self.version, "activated": self.activated, "decision": self.decision,
                "champion": self.champion, "counts": self.counts, "seconds": round(self.seconds, 2),
                "train": self.train, "questions": self.questions,
                "evaluations": [c.to_dict() for c in self.comparisons], "by_collection": self.by_collection}


def _file_questions(resolver: Resolver, paths: list[Path], origin: str) -> list[RealQuestion]:
    out = []
    for path in paths:
        resolved = [r for r in resolver.resolve(load_queries(path)) if r.targets]
        if not resolved:
            raise DeepmemError(f"{path}: none of its relevant entries match a chunk of this store")
        out += [RealQuestion(key=f"{Path(path).name}:{r.query.id}", text=r.text, targets=r.targets, origin=origin)
                for r in resolved]
    return out


def _people_questions(home: Home, resolver: Resolver, settings: Settings | None = None) -> list[RealQuestion]:
    """What people asked, from the feedback store (nothing when there is none yet)."""
    from ..feedback import has_feedback, open_feedback

    return real_questions(open_feedback(home, settings).labels(), resolver) if has_feedback(home, settings) else []


def _real_split(store: Store, home: Home, resolver: Resolver, options: TrainOptions, settings: Settings | None = None):
    """All real questions (people's, the docs' own, --queries files) and their train / held-out sides."""
    real = (_people_questions(home, resolver, settings) + docs_questions(store, resolver)
            + _file_questions(resolver, options.queries, "queries"))
    return (real, *split_real(real, options.config.seed, REAL_TEST_SHARE))


def training_style(store: Store, home: Home, options: TrainOptions, settings: Settings | None = None
                   ) -> StyleExamples | None:
    """The real questions ``run_training`` will show the LLM generator (for the cost estimate)."""
    _, train, _ = _real_split(store, home, Resolver(store), options, settings)
    return style_examples(train, options.config.seed)


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

    # 1. questions: real, split by question; synthetic (in the style of the real training ones), split by chunk
    resolver = Resolver(store)
    real, real_train, real_test = _real_split(store, home, resolver, options, settings)
    generator = resolve_generator(options.generator, settings)
    questions, qinfo = synthetic_questions(store, settings, generator, progress=options.progress,
                                           style=style_examples(real_train, options.config.seed))
    row_of = resolver.by_id
    by_style: dict[str, list] = {}
    for q in questions:
        rows = tuple(row_of[c] for c in q.positives if c in row_of)
        if rows:
            by_style.setdefault(f"synthetic:{q.style}", []).append((q.text, rows))
    spec = SplitSpec(salt=split_salt(options.config.seed), by=options.split_by)
    data = Dataset.build(store, sorted(by_style.items()), spec)
    if options.max_train is not None and len(data.train) > options.max_train:
        rng = np.random.default_rng(options.config.seed)
        data.train = [data.train[i] for i in sorted(rng.choice(len(data.train), options.max_train, replace=False))]
    evaluation = _file_questions(resolver, options.eval_queries, "eval")
    mixed = add_real(data, real_train, options.mix)
    counts = data.counts() | mixed | {"real_questions": len(real), "real_test": len(real_test) + len(evaluation)}
    log(f"questions: {counts['train']} train ({mixed['real_train']} real, each {mixed['real_repeat']} times), "
        f"{counts['val']} validation, {counts['test']} synthetic test, {counts['real_test']} real held out "
        f"({qinfo.get('generator')})")

    # 3. vectors (cached in the store)
    index = MemoryIndex(store)
    vectors = {s: embed_questions(store, embedder, [e.text for e in getattr(data, s)])
               for s in ("train", "val", "test")}
    held_out = real_test + evaluation
    nothing = [frozenset()] * len(data.test)
    collection_of = collections_of(store, [q.positives for q in held_out] + [e.positives for e in data.test])
    held = [HeldOut("real", embed_questions(store, embedder, [q.text for q in held_out]), [q.targets for q in held_out],
                    [q.avoid for q in held_out], [q.exclude for q in held_out],
                    [collection_of(q.positives) for q in held_out]),
            HeldOut("synthetic", vectors["test"], [[frozenset(e.positives)] for e in data.test], nothing, nothing,
                    [collection_of(e.positives) for e in data.test])]

    # 4. train (nothing is written before the end: Ctrl-C leaves everything as it was)
    def progress(epoch, loss, mrr):
        if options.progress:
            log(f"  epoch {epoch + 1}: loss {loss:.4f}, validation MRR@10 {mrr:.4f}")

    result = train_adapter(options.config, index.rowids, index.matrix, vectors["train"], data.train,
                           vectors["val"], data.val, progress=progress)

    # 5. evaluate: base, champion, challenger; synthetic test split and real questions
    registry = open_registry(home, settings)
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
    comparisons = [_compare("held-out synthetic test split", index, store, embedder, _as_resolved(data.test),
                            result.adapter, champion, vectors["test"])]
    held_real = held[0]
    if len(held_real):
        comparisons.append(_compare("held-out real questions", index, store, embedder,
                                    [_resolved(q) for q in held_out], result.adapter, champion, held_real.vectors))
    for path in options.eval_queries:
        resolved = resolver.resolve(load_queries(path))
        comparisons.append(_compare(f"real questions: {Path(path).name}", index, store, embedder, resolved,
                                    result.adapter, champion))

    # 6. decide and record
    champion_name = champion[0] if champion else f"plain search (no adapter){champion_note}"
    verdict = judge(index, held, result.adapter, champion[1] if champion else None, champion_name)
    better, reason = verdict.promote, verdict.reason
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
        "real_mix": options.mix.to_dict(),
        "metrics": [c.to_dict() for c in comparisons], "judge": verdict.sets,
        "decision": reason, "champion": champion[0] if champion else None,
    }
    covered = [i for i, q in enumerate(held_out) if q.targets]  # the docs answer them: covered by construction
    coverage = calibrate_store(store, index, [held_out[i].text for i in covered], held_real.vectors[covered],
                               [e.text for e in data.test], vectors["test"], seed=options.config.seed)
    meta["coverage"] = {"threshold": round(coverage.threshold, 4), **coverage.calibration}
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
                       train=meta["training"], questions=qinfo,
                       by_collection={name: report.get("by_collection") or {} for name, report in verdict.sets.items()})


def _as_resolved(examples: list[Example]):
    return [ResolvedQuery(Query(e.text, [], id=None), [frozenset(e.positives)], []) for e in examples]


def _resolved(q: RealQuestion) -> ResolvedQuery:
    return ResolvedQuery(Query(q.text, [], id=q.key), q.targets, [])


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
