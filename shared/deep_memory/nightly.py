"""The retraining run: synthetic questions plus users' feedback, gated on two held-out sets.

1. optionally re-ingest the known sources (incremental), then questions for new chunks (cached);
2. training data: synthetic questions (split by chunk) plus labeled questions from feedback
   (weighted, capped per user, split by question: a held-out feedback test set is never trained
   on; synthetic test questions about chunks that feedback trains on are left out of the test);
3. train a challenger, on ``threads`` torch threads. The time budget is the whole run's: it is
   checked between stages and while question vectors are made, and training gets what the
   stages before it left (less a tenth for evaluating); a run out of time before training is
   recorded as failed, and what it made (questions) is cached for the next one;
4. evaluate challenger and champion (the active adapter, or plain search) on the held-out
   synthetic split and the held-out feedback set. Promote when the challenger is better on
   feedback by more than the noise and not worse on synthetic beyond the noise (with too little
   held-out feedback: better on synthetic by more than the noise). Noise = the standard error
   of the per-question difference (paired), reported with every decision;
5. promotion is an atomic pointer swap: a running bot picks the new adapter up at its next
   question; the feedback memory's settings are re-tuned and saved the same way;
6. the run is recorded in the feedback database (start, end, counts, metrics, decision, error).

Only one run at a time across processes: a file lock; a second run is recorded as skipped.
A run still marked running while nobody holds the lock was killed: ``mark_interrupted`` says so
(every run does it first, and `deepmem runs` does it before listing).
"""

from __future__ import annotations

import fcntl
import os
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..embedders import Embedder, make_embedder
from ..errors import DeepmemError, StoreError
from ..feedback.store import FeedbackStore, now
from ..feedback_memory import MemoryParams, Names, tune
from ..home import Home
from ..metrics import per_query
from ..questions import resolve_generator, synthetic_questions
from ..settings import Settings
from ..store import Store
from ..vector_index import MemoryIndex
from .dataset import Dataset, Example, SplitSpec, split_salt
from .feedback_data import FeedbackPolicy, labeled_questions, split_feedback
from .trainer import TrainConfig, train_adapter
from .versions import AdapterError, AdapterRegistry, same_split, unfit_for

__all__ = ["NightlyConfig", "run_nightly", "RunBusy", "OutOfTime", "mark_interrupted", "paired_gain"]

MIN_FEEDBACK_TEST = 10
EMBED_SLICE = 128  # question vectors are made this many at a time, the time budget checked between


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
    trigger: str = "manual"
    train: TrainConfig | None = None


@contextmanager
def run_lock(home: Home):
    home.locks_dir.mkdir(parents=True, exist_ok=True)
    with open(home.locks_dir / "retrain.lock", "a+") as fh:  # not "w": that would wipe the holder's pid
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy("another retraining run is in progress") from None
        try:
            fh.truncate(0)
            fh.write(str(os.getpid()))
            fh.flush()
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _scores(rankings: list[list[int]], targets: list[list[frozenset[int]]],
            avoid: list[frozenset[int]] | None = None) -> np.ndarray:
    """Per question: (hit@10 + MRR@10) / 2 over its relevant chunks, averaged with the share of its
    chunks labeled not relevant that stay out of the top 3 (when it has either)."""
    out = []
    avoid = avoid or [frozenset()] * len(rankings)
    for r, t, bad in zip(rankings, targets, avoid):
        parts = []
        if t and any(t):
            m = per_query(r, t, ks=(10,))
            parts.append((m["hit_rate@10"] + m["mrr@10"]) / 2)
        if bad:
            parts.append(1.0 - len(bad & set(r[:3])) / len(bad))
        out.append(float(np.mean(parts)) if parts else 0.0)
    return np.asarray(out, dtype=np.float64)


def paired_gain(challenger: np.ndarray, champion: np.ndarray) -> tuple[float, float]:
    """Mean per-question difference and its standard error (the noise of the comparison)."""
    d = challenger - champion
    if len(d) < 2:
        return float(d.mean()) if len(d) else 0.0, float("inf")
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def _evaluate(index: MemoryIndex, vectors: np.ndarray, targets: list[list[frozenset[int]]], adapter,
              avoid: list[frozenset[int]] | None = None) -> dict:
    if not len(targets):
        return {"queries": 0}
    q = adapter(vectors) if adapter is not None else vectors
    ids, _ = index.search_many(q, 10)
    rankings = [list(map(int, row)) for row in ids]
    scores = _scores(rankings, targets, avoid)
    hits = [per_query(r, t, ks=(10,)) for r, t in zip(rankings, targets) if t and any(t)]
    out = {"queries": len(targets), "_scores": scores, "score": float(scores.mean())}
    if hits:
        out |= {"hit_rate@10": float(np.mean([h["hit_rate@10"] for h in hits])),
                "mrr@10": float(np.mean([h["mrr@10"] for h in hits]))}
    if avoid and any(avoid):
        kept_out = [1.0 - len(b & set(r[:3])) / len(b) for r, b in zip(rankings, avoid) if b]
        out["labeled_irrelevant_out_of_top3"] = float(np.mean(kept_out))
    return out


def decide(synthetic: dict, feedback: dict) -> tuple[bool, str]:
    """synthetic / feedback: {"gain", "noise", "queries"} of challenger over champion."""
    s_gain, s_noise = synthetic["gain"], synthetic["noise"]
    if feedback["queries"] >= MIN_FEEDBACK_TEST:
        f_gain, f_noise = feedback["gain"], feedback["noise"]
        if f_gain <= max(f_noise, 0.005):
            return False, (f"not better on held-out feedback beyond the noise "
                           f"(gain {f_gain:+.4f}, noise {f_noise:.4f}, {feedback['queries']} questions)")
        if s_gain < -s_noise:
            return False, (f"worse on the held-out synthetic split beyond the noise "
                           f"(gain {s_gain:+.4f}, noise {s_noise:.4f})")
        return True, (f"better on held-out feedback ({f_gain:+.4f}, noise {f_noise:.4f}) and not worse on the "
                      f"synthetic split ({s_gain:+.4f}, noise {s_noise:.4f})")
    if s_gain <= max(s_noise, 0.002):
        return False, (f"not better on the held-out synthetic split beyond the noise (gain {s_gain:+.4f}, noise "
                       f"{s_noise:.4f}); {feedback['queries']} held-out feedback questions are too few to decide on")
    return True, f"better on the held-out synthetic split ({s_gain:+.4f}, noise {s_noise:.4f})"


def run_nightly(home: Home, settings: Settings, config: NightlyConfig | None = None, *,
                embedder: Embedder | None = None, log=print) -> dict:
    """One retraining run; always returns its record (also written to the feedback database)."""
    config = config or NightlyConfig()
    feedback = FeedbackStore(home)
    run_id = uuid.uuid4().hex[:12]
    started = time.perf_counter()
    record = {"id": run_id, "started_at": now(), "trigger": config.trigger, "pid": os.getpid()}
    try:
        with run_lock(home):
            _mark_interrupted(feedback)
            feedback.record([FeedbackStore.run_op(**record, status="running")])
            result = _run(home, settings, config, embedder, feedback, log, Deadline(config.time_budget_s, started))
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


def mark_interrupted(home: Home, feedback: FeedbackStore) -> None:
    """Mark runs killed mid-way as interrupted, unless a run is in progress right now. The run lock is
    held only to queue the marks (a scheduled run starting meanwhile is never turned away for long), and
    a mark changes only a run still 'running' when it is applied."""
    try:
        stale = feedback.rows("SELECT id FROM runs WHERE status = 'running'")
    except DeepmemError:
        return
    if not stale:
        return
    try:
        with run_lock(home):
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


def _embed(embedder: Embedder, texts: list[str], deadline: Deadline) -> np.ndarray:
    """Vectors for texts, a slice at a time, so that a spent time budget stops the run within a slice."""
    parts = []
    for start in range(0, len(texts), EMBED_SLICE):
        deadline.check("making question vectors")
        parts.append(embedder.embed(texts[start:start + EMBED_SLICE]))
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)


def _run(home: Home, settings: Settings, config: NightlyConfig, embedder: Embedder | None, feedback: FeedbackStore,
         log, deadline: Deadline) -> dict:
    embedder = embedder or make_embedder(settings)
    with Store.open(home.store_path, create=False) as store:
        if config.reingest:
            from ..ingest import ingest

            for source in store.sources():  # one source that cannot be read must not stop the others
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
        row_of = dict(store.conn.execute("SELECT id, rowid FROM chunks"))

        # synthetic questions, split by chunk
        generator = resolve_generator(config.generator, settings)
        questions, qinfo = synthetic_questions(store, settings, generator, progress=False)
        deadline.check("by the time the questions were made")
        items = [(q.text, tuple(row_of[c] for c in q.positives if c in row_of)) for q in questions]
        spec = SplitSpec(salt=split_salt(config.seed))
        data = Dataset.build(store, [("synthetic", [i for i in items if i[1]])], spec)

        # feedback, split by question
        labeled = labeled_questions(feedback.labels(), row_of, config.policy)
        fb_train, fb_test = split_feedback(labeled, config.seed, config.policy.test_share)
        trained_on = set()
        for q in fb_train:
            if q.positives:
                weight = min(3.0, sum(q.positives.values()))
                data.train.append(Example(text=q.text, positives=tuple(sorted(q.positives)), source="feedback",
                                          weight=weight, negatives=tuple(sorted(q.negatives))))
                trained_on.update(q.positives)
        trained_units = {data.units[r] for r in trained_on}  # a copy of a feedback-trained chunk was trained on too
        data.test = [e for e in data.test if not any(data.units[p] in trained_units for p in e.positives)]
        counts = data.counts() | {"feedback_questions": len(labeled), "feedback_train": len(fb_train),
                                  "feedback_test": len(fb_test),
                                  "feedback_users": len({u for q in labeled for u in q.users})}
        log(f"training on {counts['train']} questions ({counts['train_by_source'].get('feedback', 0)} from feedback)")

        index = MemoryIndex(store)
        vec = {s: _embed(embedder, [e.text for e in getattr(data, s)], deadline) for s in ("train", "val", "test")}
        fb_vectors = _embed(embedder, [q.text for q in fb_test], deadline)

        train_cfg = config.train or TrainConfig(seed=config.seed)
        train_cfg.time_budget_s = deadline.left() - 0.1 * config.time_budget_s  # a tenth kept for evaluating
        if train_cfg.time_budget_s < 1.0:
            raise OutOfTime(f"the time budget of {config.time_budget_s:g} s was spent before training "
                            f"({deadline.budget_s - deadline.left():.0f} s on questions and their vectors); "
                            f"nothing was trained")
        train_cfg.threads = config.threads
        result = train_adapter(train_cfg, index.rowids, index.matrix, vec["train"], data.train, vec["val"], data.val)

        # champion: the active adapter, if comparable; else plain search
        registry = AdapterRegistry(home.adapters_dir)
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
        syn_targets = [[frozenset(e.positives)] for e in data.test]
        fb_targets = [[frozenset(q.positives)] if q.positives else [] for q in fb_test]
        fb_avoid = [frozenset(q.negatives) for q in fb_test]
        sets = {}
        for label, vectors, targets, avoid in (("synthetic", vec["test"], syn_targets, None),
                                               ("feedback", fb_vectors, fb_targets, fb_avoid)):
            base = _evaluate(index, vectors, targets, None, avoid)
            champ = _evaluate(index, vectors, targets, champion, avoid) if champion is not None else base
            chall = _evaluate(index, vectors, targets, result.adapter, avoid)
            gain, noise = paired_gain(chall["_scores"], champ["_scores"]) if targets else (0.0, float("inf"))
            sets[label] = {"queries": len(targets), "gain": gain, "noise": noise,
                           "plain": {k: v for k, v in base.items() if not k.startswith("_")},
                           "champion": {k: v for k, v in champ.items() if not k.startswith("_")},
                           "challenger": {k: v for k, v in chall.items() if not k.startswith("_")}}
        promote, reason = decide(sets["synthetic"], sets["feedback"])
        if result.best_epoch < 0:
            promote, reason = False, "no epoch improved validation MRR@10 over plain search"
        champion_label = champion_name or "plain search"
        meta = {"embedder": embedder.name, "dim": embedder.dim, "config": {"dim": embedder.dim, "kind": "linear"},
                "train_config": train_cfg.to_dict(),
                "split": spec.to_meta(),
                "generator": qinfo.get("generator"), "counts": counts, "trigger": config.trigger,
                "training": {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                             "stopped_by": result.stopped_by, "seconds": round(result.seconds, 2)},
                "metrics": [{"name": "held-out synthetic test split",
                             "base": sets["synthetic"]["plain"], "deep_memory": sets["synthetic"]["challenger"]},
                            {"name": "held-out feedback", "base": sets["feedback"]["plain"],
                             "deep_memory": sets["feedback"]["challenger"]}],
                "decision": reason, "champion": champion_name}
        version = registry.save(result.adapter, meta).name if result.best_epoch >= 0 else None
        if promote and version:
            registry.activate(version)
        params, memory_report = _tune_memory(index, store, embedder, data, vec)
        params.save(home.root / "memory.json", {"tuned_at": now(), "report": memory_report})
        log(f"{'promoted' if promote else 'kept ' + champion_label}: {reason}")
        return {"status": "promoted" if promote else "kept", "version": version, "champion": champion_name,
                "decision": reason, "counts": counts,
                "metrics": {k: {kk: vv for kk, vv in v.items()} for k, v in sets.items()} | {"memory": params.__dict__}}


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
