"""The retraining run: synthetic questions plus real ones, judged on held-out real questions.

1. optionally re-ingest the known sources (incremental), then questions for new chunks (cached);
2. training data: synthetic questions (split by chunk) plus real questions (``real_questions``:
   feedback on answers, the workspace's history, imported labels, the docs' own questions),
   split by question: a held-out real test set is never trained on; the real training questions
   are weighted to make a fixed share of what the adapter sees (``training_set``), and the LLM
   generator is shown a few of them as examples of how people ask (held-out ones never);
3. train a challenger, on ``threads`` torch threads. The time budget is the whole run's: it is
   checked between stages and while question vectors are made, and training gets what the
   stages before it left (less a tenth for evaluating); a run out of time before training is
   recorded as failed, and what it made (questions) is cached for the next one;
4. evaluate challenger, champion (the active adapter) and plain search on the held-out real
   questions and the held-out synthetic split (``judge``): with enough real questions, they
   decide and the synthetic split is a diagnostic; an adapter that loses to plain search on
   them beyond the noise is never promoted, and an active one that does is switched off. Noise
   = the standard error of the per-question difference (paired), reported with every decision;
5. promotion is an atomic pointer swap: a running bot picks the new adapter up at its next
   question; the feedback memory's settings are re-tuned and saved the same way, and the
   coverage decision ("do the docs cover this question?", shared.coverage) is calibrated on the
   store's own held-out questions and kept in the store;
6. the run is recorded in the feedback database (start, end, counts, metrics, decision, error).

Only one run at a time across processes: a file lock; a second run is recorded as skipped.
With DEEPMEM_DATABASE_URL (several replicas, each with its scheduler), the lock is a Postgres
session advisory lock held on a connection of its own for the run: exactly one replica trains,
and one that dies mid-run releases it with its connection.
A run still marked running while nobody holds the lock was killed: ``mark_interrupted`` says so
(every run does it first, and `deepmem runs` does it before listing).
"""

from __future__ import annotations

import os
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..coverage import calibrate_store
from ..database import advisory_lock, database_url
from ..embedders import Embedder, make_embedder
from ..errors import DeepmemError, StoreError
from ..feedback import open_feedback
from ..feedback.store import FeedbackStore, now
from ..feedback_memory import MemoryParams, Names, tune
from ..files import file_lock
from ..home import Home
from ..queries import Resolver
from ..questions import resolve_generator, synthetic_questions
from ..questions.vectors import embed_questions
from ..settings import Settings
from ..store import Store, open_store
from ..vector_index import MemoryIndex
from .dataset import Dataset, SplitSpec, split_salt
from .feedback_data import FeedbackPolicy
from .judge import HeldOut, collections_of, judge
from .real_questions import docs_questions, real_questions, split_real, style_examples
from .training_set import RealMix, add_real
from .trainer import TrainConfig, train_adapter
from .versions import AdapterError, open_registry, same_split, unfit_for

__all__ = ["NightlyConfig", "run_nightly", "RunBusy", "OutOfTime", "mark_interrupted"]



class RunBusy(Exception):
    """Another retraining run holds the lock."""


class OutOfTime(DeepmemError):
    """The run's time budget was spent before there was time to train."""


class Deadline:
    """The run's time budget, counted from its start."""

    def __init__(self, budget_s: float, started: float):
        self.budget_s, self.end = budget_s, started + budget_s

    def left(self) -> float:
        return self.end - time.perf_counter()

    def check(self, stage: str) -> None:
        if self.left() <= 0:
            raise OutOfTime(f"the time budget of {self.budget_s:g} s was spent {stage}; nothing was trained "
                            f"(the questions made are cached, so the next run starts further on)")


@dataclass
class NightlyConfig:
    reingest: bool = False
    generator: str = "auto"
    seed: int = 0
    time_budget_s: float = 1800.0  # the whole run: questions, vectors, training, evaluation
    threads: int | None = 1  # leave the other cores to the bot answering questions
    policy: FeedbackPolicy = field(default_factory=FeedbackPolicy)
    mix: RealMix = field(default_factory=RealMix)
    trigger: str = "manual"
    train: TrainConfig | None = None


TRAINER_LOCK = 0x6465_6570_7472  # the advisory lock's key in the scale-out database: "deeptr"


class LostLock(DeepmemError):
    """The run lock went away mid-run (its database connection dropped): another run may have started."""


class Lease:
    """The run lock, while the run holds it. ``confirm`` before writing what other replicas serve: a file
    lock lasts as long as this process, but a database lock ends with its connection, and then another
    replica may be training too; its run, not this one, gets to promote."""

    def __init__(self, lock=None):
        self._lock = lock

    def confirm(self, step: str) -> None:
        if self._lock is not None and not self._lock.held():
            raise LostLock(f"the trainer lock was lost {step} (its database connection dropped, and another "
                           f"replica may be training); nothing was saved")


@contextmanager
def run_lock(home: Home, settings: Settings | None = None):
    """Held for a whole run: a file lock in the data directory, or the database's advisory lock.
    Yields the run's Lease."""
    url = database_url(settings)
    if url:
        with advisory_lock(url, TRAINER_LOCK, busy=lambda: RunBusy("another retraining run is in progress"),
                           application="deepmem trainer") as lock:
            yield Lease(lock)
        return
    home.locks_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(home.locks_dir / "retrain.lock", busy=lambda: RunBusy("another retraining run is in progress")
                   ) as fh:
        fh.truncate(0)  # the holder's pid, for whoever looks
        fh.write(str(os.getpid()))
        fh.flush()
        yield Lease()


def run_nightly(home: Home, settings: Settings, config: NightlyConfig | None = None, *,
                embedder: Embedder | None = None, log=print) -> dict:
    """One retraining run; always returns its record (also written to the feedback database)."""
    config = config or NightlyConfig()
    feedback = open_feedback(home, settings)
    run_id = uuid.uuid4().hex[:12]
    started = time.perf_counter()
    record = {"id": run_id, "started_at": now(), "trigger": config.trigger, "pid": os.getpid()}
    try:
        with run_lock(home, settings) as lease:
            _mark_interrupted(feedback)
            feedback.record([FeedbackStore.run_op(**record, status="running")])
            result = _run(home, settings, config, embedder, feedback, log, Deadline(config.time_budget_s, started),
                          lease)
            record |= result
    except RunBusy as exc:
        record |= {"status": "skipped", "decision": str(exc)}
    except Exception as exc:  # a failed run is recorded and retried next time; it never takes the bot down
        first_line = (str(exc).strip().splitlines() or [""])[0][:1000]
        record |= {"status": "failed", "error": f"{exc.__class__.__name__}: {first_line}",
                   "decision": "run failed; the active adapter is unchanged"}
        if not isinstance(exc, DeepmemError):  # a known condition is one line; an unexpected one shows where
            log(traceback.format_exc(limit=3))
    record |= {"finished_at": now(), "seconds": round(time.perf_counter() - started, 2)}
    feedback.record([FeedbackStore.run_op(**record)])
    feedback.drain(timeout=5)
    return record


def mark_interrupted(home: Home, feedback: FeedbackStore, settings: Settings | None = None) -> None:
    """Mark runs killed mid-way as interrupted, unless a run is in progress right now: a 'running' row
    while nobody holds the run lock (the file lock, or the database's advisory lock, which a dead replica's
    connection gave back) belongs to a run that died. The lock is held only to queue the marks (a scheduled
    run starting meanwhile is never turned away for long), and a mark changes only a run still 'running'
    when it is applied."""
    try:
        stale = feedback.rows("SELECT id FROM runs WHERE status = 'running'")
    except DeepmemError:
        return
    if not stale:
        return
    try:
        with run_lock(home, settings):
            _record_interrupted(feedback, stale)
    except RunBusy:
        pass


def _mark_interrupted(feedback: FeedbackStore) -> None:
    """Runs still 'running' while we hold the lock were killed: say so."""
    try:
        stale = feedback.rows("SELECT id FROM runs WHERE status = 'running'")
    except Exception:
        return
    _record_interrupted(feedback, stale)


def _record_interrupted(feedback: FeedbackStore, stale: list[dict]) -> None:
    if stale:
        feedback.record([FeedbackStore.run_op(id=r["id"], status="interrupted",
                                              decision="the process ended before the run finished")
                         for r in stale])


def _embed(store: Store, embedder: Embedder, texts: list[str], deadline: Deadline) -> np.ndarray:
    """Vectors for texts (cached in the store), a slice at a time, so that a spent time budget stops
    the run within a slice."""
    return embed_questions(store, embedder, texts, between=lambda: deadline.check("making question vectors"))


def _run(home: Home, settings: Settings, config: NightlyConfig, embedder: Embedder | None, feedback: FeedbackStore,
         log, deadline: Deadline, lease: Lease) -> dict:
    embedder = embedder or make_embedder(settings)
    with open_store(home, settings, create=False) as store:
        if config.reingest:
            from ..ingest import ingest, reingestable_sources

            for source in reingestable_sources(store):  # one source that cannot be read must not stop the others
                try:
                    report = ingest(store, embedder, settings, source.uri, base_url=source.base_url, progress=False)
                except StoreError:
                    raise
                except DeepmemError as exc:
                    log(f"not re-ingested {source.uri}: {exc}")
                    continue
                log(f"re-ingested {source.uri}: {report.pages_new} new, {report.pages_changed} changed, "
                    f"{report.pages_removed} removed, {report.pages_failed} failed")
        store.check_embedder(embedder.name, embedder.dim)
        row_of = store.chunk_rowids()

        # real questions, split by question: the held-out side is never trained on, nor shown to the generator
        resolver = Resolver(store)
        real = real_questions(feedback.labels(), resolver, config.policy) + docs_questions(store, resolver)
        real_train, real_test = split_real(real, config.seed, config.policy.test_share)

        # synthetic questions (in the style of the real training ones), split by chunk
        generator = resolve_generator(config.generator, settings)
        questions, qinfo = synthetic_questions(store, settings, generator, progress=False,
                                               style=style_examples(real_train, config.seed))
        deadline.check("by the time the questions were made")
        items = [(q.text, tuple(row_of[c] for c in q.positives if c in row_of)) for q in questions]
        spec = SplitSpec(salt=split_salt(config.seed))
        data = Dataset.build(store, [("synthetic", [i for i in items if i[1]])], spec)
        mixed = add_real(data, real_train, config.mix)
        trained_on = {r for q in real_train for r in q.positives if r in data.units}
        trained_units = {data.units[r] for r in trained_on}  # a copy of a real-trained chunk was trained on too
        data.test = [e for e in data.test if not any(data.units[p] in trained_units for p in e.positives)]
        origins: dict[str, int] = {}
        for q in real:
            origins[q.origin] = origins.get(q.origin, 0) + 1
        counts = data.counts() | mixed | {"real_questions": len(real), "real_test": len(real_test),
                                          "real_by_origin": origins,
                                          "real_users": len({u for q in real for u in q.users})}
        log(f"training on {counts['train']} questions ({mixed['real_train']} real questions, each "
            f"{mixed['real_repeat']} times); {len(real_test)} real questions held out")

        index = MemoryIndex(store)
        vec = {s: _embed(store, embedder, [e.text for e in getattr(data, s)], deadline)
               for s in ("train", "val", "test")}
        collection_of = collections_of(store, [q.positives for q in real_test] + [e.positives for e in data.test])
        held_real = HeldOut("real", _embed(store, embedder, [q.text for q in real_test], deadline),
                            [q.targets for q in real_test], [q.avoid for q in real_test],
                            [q.exclude for q in real_test], [collection_of(q.positives) for q in real_test])
        nothing = [frozenset()] * len(data.test)
        held_synthetic = HeldOut("synthetic", vec["test"], [[frozenset(e.positives)] for e in data.test], nothing,
                                 nothing, [collection_of(e.positives) for e in data.test])

        train_cfg = config.train or TrainConfig(seed=config.seed)
        train_cfg.time_budget_s = deadline.left() - 0.1 * config.time_budget_s  # a tenth kept for evaluating
        if train_cfg.time_budget_s < 1.0:
            raise OutOfTime(f"the time budget of {config.time_budget_s:g} s was spent before training "
                            f"({deadline.budget_s - deadline.left():.0f} s on questions and their vectors); "
                            f"nothing was trained")
        train_cfg.threads = config.threads
        result = train_adapter(train_cfg, index.rowids, index.matrix, vec["train"], data.train, vec["val"], data.val)

        # champion: the active adapter, if comparable; else plain search
        registry = open_registry(home, settings)
        champion_name, champion = None, None
        try:
            active = registry.load_active()
        except AdapterError as exc:  # a damaged champion: the challenger is compared with plain search
            active = None
            log(f"the active adapter cannot serve ({exc}); comparing with plain search")
        if active is not None:
            name, adapter, meta = active
            if unfit_for(meta, adapter, embedder.name, embedder.dim) is None and same_split(meta, spec):
                champion_name, champion = name, adapter
        verdict = judge(index, [held_real, held_synthetic], result.adapter, champion, champion_name)
        promote, reason = verdict.promote, verdict.reason
        if result.best_epoch < 0:
            promote, reason = False, "no epoch improved validation MRR@10 over plain search"
        champion_label = champion_name or "plain search"
        meta = {"embedder": embedder.name, "dim": embedder.dim, "config": {"dim": embedder.dim, "kind": "linear"},
                "train_config": train_cfg.to_dict(),
                "split": spec.to_meta(),
                "generator": qinfo.get("generator"), "counts": counts, "trigger": config.trigger,
                "training": {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                             "stopped_by": result.stopped_by, "seconds": round(result.seconds, 2)},
                "real_mix": config.mix.to_dict(),
                "metrics": [{"name": "held-out real questions", "base": verdict.sets["real"]["plain"],
                             "deep_memory": verdict.sets["real"]["challenger"]},
                            {"name": "held-out synthetic test split", "base": verdict.sets["synthetic"]["plain"],
                             "deep_memory": verdict.sets["synthetic"]["challenger"]}],
                "decision": reason, "champion": champion_name}
        params, memory_report = _tune_memory(index, store, embedder, data, vec)
        covered_real = [i for i, q in enumerate(real_test) if q.targets]  # a question with an answer in the docs
        lease.confirm("before saving the run's results")  # what follows is served by every replica
        version = registry.save(result.adapter, meta).name if result.best_epoch >= 0 else None
        if promote and version:
            registry.activate(version)
        elif verdict.demote_champion:
            registry.deactivate()
            reason += f"; {champion_name} loses to plain search on held-out real questions: switched off"
        params.save(home.root / "memory.json", {"tuned_at": now(), "report": memory_report})
        coverage = calibrate_store(store, index, [real_test[i].text for i in covered_real],
                                   held_real.vectors[covered_real], [e.text for e in data.test], vec["test"],
                                   seed=config.seed, at=now())
        log(f"{'promoted' if promote else 'kept ' + champion_label}: {reason}")
        return {"status": "promoted" if promote else "kept", "version": version, "champion": champion_name,
                "decision": reason, "counts": counts,
                "metrics": verdict.sets | {"memory": params.__dict__,
                                           "coverage": {"threshold": round(coverage.threshold, 4),
                                                        **coverage.calibration}}}


def _tune_memory(index: MemoryIndex, store: Store, embedder: Embedder, data: Dataset, vec: dict
                 ) -> tuple[MemoryParams, dict]:
    """Tune the feedback memory on validation questions that share an answer: the first labels it,
    the others probe it; validation questions about other answers are the unrelated ones."""
    column_of = index.column_of
    by_target: dict[tuple[int, ...], list[int]] = {}
    for i, e in enumerate(data.val):
        by_target.setdefault(e.positives, []).append(i)
    labeled_idx, probe_idx, unrelated_idx = [], [], []
    for target, members in by_target.items():
        if len(members) >= 2:
            labeled_idx.append(members[0])
            probe_idx.extend(members)
        else:
            unrelated_idx.extend(members)
    if len(labeled_idx) < 5 or len(unrelated_idx) < 20:
        return MemoryParams(), {"note": "too few validation questions to tune; defaults kept"}
    cols = lambda e: {column_of[p]: 1.0 for p in e.positives if p in column_of}  # noqa: E731
    names = Names(store)
    named = lambda ids: [names(data.val[i].text) for i in ids]  # noqa: E731
    V = vec["val"]
    params, report = tune(V[labeled_idx], [cols(data.val[i]) for i in labeled_idx],
                          V[probe_idx], [set(cols(data.val[i])) for i in probe_idx],
                          V[unrelated_idx], [set(cols(data.val[i])) for i in unrelated_idx], index.matrix,
                          labeled_names=named(labeled_idx), probe_names=named(probe_idx),
                          unrelated_names=named(unrelated_idx))
    return params, report
