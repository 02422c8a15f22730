"""Does deepmem learn from its users? A simulated week on the bundled SQLite docs.

    python bench/learning_week.py --home DIR [--days 7] [--per-day 150]

Night 0 trains the synthetic-only adapter. The question pool: synthetic questions about chunks
held out of that training (the test split). For every answer with two or more questions, one
question is kept aside for evaluation; the rest may be asked during the week.

Three fixed evaluation sets, disjoint from the questions asked:
- rephrased: each question that will be asked, as a person might ask it another time
  (bench/rephrase.py: the frame changes, the subject stays);
- same answers: the question kept aside, a different question whose answer people asked about;
- unasked topics: questions whose answer nobody asks about (must not get worse). Each day, questions
are asked by 40 simulated users through the bot's answer path (QAService.ask: retrieval with the
active adapter and the feedback memory, an extractive answer with citations). A user who sees the
right chunk among the cited sources clicks it (and sometimes presses 👍); one who does not presses
👎 and is offered the other retrieved sections (as the bot does): 70% look, and click the right one
when it is there. Noise: 30% of users do nothing, 5% misclick (they click a wrong cited source, or vote the wrong
way). After each day the nightly job runs (synthetic questions plus all feedback so far).

After each night: hit@10 and MRR@10 on the fixed evaluation questions (paraphrases of the topics
people asked about), and on questions about topics nobody asked (must not get worse), for the
live system (adapter + feedback memory) and for the synthetic-only adapter. Saves
bench/results/learning_week.json.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import machine, save, scratch_copy  # noqa: E402
from bench.rephrase import rephrase  # noqa: E402
from shared.answer import Answerer  # noqa: E402
from shared.deep_memory import AdapterRegistry  # noqa: E402
from shared.deep_memory.dataset import Dataset, SplitSpec, split_salt  # noqa: E402
from shared.deep_memory.nightly import NightlyConfig, run_nightly  # noqa: E402
from shared.feedback.store import FeedbackStore  # noqa: E402
from shared.feedback_memory import FeedbackMemory, MemoryLoader  # noqa: E402
from shared.home import Home  # noqa: E402
from shared.metrics import per_query  # noqa: E402
from shared.qa import QAService  # noqa: E402
from shared.questions import synthetic_questions  # noqa: E402
from shared.retrieval import open_searcher  # noqa: E402
from shared.store import Store  # noqa: E402
from shared.vector_index import MemoryIndex  # noqa: E402


def evaluate(searcher, items, *, deep_memory=True, memory=True) -> dict:
    saved = searcher.memory
    if not memory:
        searcher.memory = None
    rows = []
    for text, targets in items:
        hits = searcher.search(text, 10, deep_memory=deep_memory).hits
        rows.append(per_query([h.chunk.rowid for h in hits], [frozenset(targets)], ks=(10,)))
    searcher.memory = saved
    hit = float(np.mean([r["hit_rate@10"] for r in rows]))
    return {"hit@10": round(hit, 4), "mrr@10": round(float(np.mean([r["mrr@10"] for r in rows])), 4),
            "noise_hit@10": round(float(np.sqrt(hit * (1 - hit) / len(rows))), 4), "n": len(rows)}


PROMPTS = {"thumbs": "button", "yes-no": "answered"}  # how the bot records each prompt's votes (QAService.vote via)
YES_NO_FACTOR = 5.0  # "Did this answer your question?" draws this many times the responses of bare thumbs (reported)


def response_rate(prompt: str, thumbs_rate: float, factor: float = YES_NO_FACTOR) -> float:
    """The share of askers who respond: the bare-thumbs rate, or ``factor`` times it for Yes/No."""
    return min(1.0, thumbs_rate * (factor if prompt == "yes-no" else 1.0))


def respond(qa, text, target, user, rng, row_of, stats, *, responds: bool, via: str) -> None:
    """One asker: asks through the bot's answer path, then (when ``responds``) reacts as described above."""
    asked = qa.ask(text, source="simulation", user_id=user)
    shown = asked.answer.cited_sources or asked.answer.sources[:3]
    right = [s for s in shown if row_of.get(s.chunk_id) in target]
    if not responds:
        stats["silent"] += 1
        return
    misclick = rng.random() < 0.05
    if right and not misclick:
        qa.source_click(asked.question_id, user, right[0].chunk_id, right[0].rank)
        if rng.random() < 0.5:
            qa.vote(asked.question_id, user, +1, via=via)
        stats["clicked"] += 1
    elif right and misclick:
        wrong = [s for s in shown if s not in right]
        if wrong:
            qa.source_click(asked.question_id, user, wrong[0].chunk_id, wrong[0].rank)
        else:
            qa.vote(asked.question_id, user, -1, via=via)
        stats["misclicked"] += 1
    else:
        qa.vote(asked.question_id, user, +1 if misclick else -1, via=via)
        stats["thumbs_down" if not misclick else "misvoted"] += 1
        if misclick or rng.random() < 0.30:
            return  # 30% of those who press 👎 do not look at the sections offered after it
        offered = qa.other_sources(asked.question_id)
        found = [s for s in offered if row_of.get(s.chunk_id) in target]
        if found and rng.random() >= 0.05:
            qa.source_click(asked.question_id, user, found[0].chunk_id, found[0].rank)
            stats["found_after_thumbs_down"] += 1
        elif offered and found:  # a misclick among the offered sections
            wrong = [s for s in offered if s not in found]
            if wrong:
                qa.source_click(asked.question_id, user, wrong[0].chunk_id, wrong[0].rank)
                stats["misclicked_after_thumbs_down"] += 1


def prepare(args, rng: random.Random) -> SimpleNamespace:
    """A scratch copy of the store, night 0 (the synthetic-only adapter), the questions to ask and the
    three evaluation sets."""
    home, settings, embedder, store = scratch_copy(args.home, "deepmem-week-")
    log = lambda *a: None  # noqa: E731

    started = time.perf_counter()
    night0 = run_nightly(home, settings, NightlyConfig(trigger="night-0"), embedder=embedder, log=log)
    synthetic_only = night0["version"]
    print(f"night 0: {night0['status']} {synthetic_only} ({night0['decision']})")

    # the question pool: held-out synthetic questions; one per answer kept aside for evaluation
    questions, _ = synthetic_questions(store, settings, "offline", progress=False)
    row_of = store.chunk_rowids()
    items = [(q.text, tuple(row_of[c] for c in q.positives if c in row_of)) for q in questions]
    test = Dataset.build(store, [("s", [i for i in items if i[1]])], SplitSpec(salt=split_salt(0))).test
    by_target = defaultdict(list)
    for e in test:
        by_target[e.positives].append(e.text)
    asked_pool, eval_asked, eval_unasked = [], [], []
    targets = sorted(by_target)
    rng.shuffle(targets)
    for target in targets:
        texts = by_target[target]
        if len(texts) >= 2:
            eval_asked.append((texts[0], target))
            asked_pool.extend((t, target) for t in texts[1:])
        else:
            eval_unasked.append((texts[0], target))
    rng.shuffle(asked_pool)
    week = asked_pool[: args.days * args.per_day]
    eval_rephrased = [(rephrase(t, rng), target) for t, target in dict.fromkeys(week)]
    print(f"pool: {len(asked_pool)} questions to ask; evaluation: {len(eval_rephrased)} rephrased, "
          f"{len(eval_asked)} same answers, {len(eval_unasked)} unasked topics")

    return SimpleNamespace(home=home, settings=settings, embedder=embedder, store=store, night0=night0,
                           synthetic_only=synthetic_only, row_of=row_of, week=week, eval_rephrased=eval_rephrased,
                           eval_asked=eval_asked, eval_unasked=eval_unasked, started=started, log=log)


def label_counts(feedback: FeedbackStore, store) -> dict:
    """What a week of feedback gave the nightly job: events by kind, label rows, labeled questions,
    and the real questions it trains and judges on (``real_questions``: with a relevant chunk or not)."""
    from shared.deep_memory.real_questions import real_questions
    from shared.queries import Resolver

    events = defaultdict(int)
    for e in feedback.events():
        events[f"{e['kind']}:{e.get('detail') or ''}".rstrip(":")] += 1
    labels = feedback.labels()
    real = real_questions(labels, Resolver(store))
    return {"events": dict(events), "label_rows": len(labels),
            "positive_label_rows": sum(1 for r in labels if r["label"] > 0),
            "labeled_questions": len({r["question_id"] for r in labels}),
            "real_questions": len(real), "real_questions_with_answer": sum(1 for q in real if q.targets),
            "users": len({u for q in real for u in q.users})}


def compare_prompts(args) -> None:
    """The same week of questions under each prompt and response rate: who answers, what labels that
    makes, and (unless --no-nightly) what one nightly run at the end of the week does with them.
    Askers are the same in every condition (common random numbers: an asker who answers at a low
    rate answers at every higher one), so differences come from the rates, not from the draw."""
    rng = random.Random(args.seed)
    w = prepare(args, rng)
    rates = [float(r) for r in args.prompts.split(",")]
    if not rates or any(not 0.0 < r <= 1.0 for r in rates):
        raise SystemExit("--prompts: response rates within (0, 1], comma-separated")
    w.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    users = [f"U{i:03d}" for i in range(40)]
    baseline = {name: evaluate(open_searcher(w.store, w.embedder, w.home, index=MemoryIndex(w.store)), items)
                for name, items in (("rephrased", w.eval_rephrased), ("same_answers", w.eval_asked),
                                    ("unasked_topics", w.eval_unasked))}
    print(f"after night 0 (no feedback): {baseline}")
    conditions = []
    for rate in rates:
        for prompt in ("thumbs", "yes-no"):
            started = time.perf_counter()
            response = response_rate(prompt, rate, args.yes_no_factor)
            home = Home.open(tempfile.mkdtemp(prefix=f"deepmem-prompt-{prompt}-"))
            shutil.copy(w.home.store_path, home.store_path)
            shutil.copytree(w.home.adapters_dir, home.adapters_dir)
            if (w.home.root / "memory.json").exists():
                shutil.copy(w.home.root / "memory.json", home.root / "memory.json")
            store = Store.open(home.store_path)
            feedback = FeedbackStore(home)
            memory = FeedbackMemory()
            searcher = open_searcher(store, w.embedder, home, index=MemoryIndex(store), memory=memory)
            qa = QAService(Answerer(searcher, w.settings, k=5), feedback)
            stats = defaultdict(int)
            for i in range(args.days * args.per_day):  # the week's questions, in order, as the week mode asks them
                text, target = w.week[i % len(w.week)]
                ask_rng = random.Random(f"{args.seed}:{i}")  # the same asker and draws in every condition
                user = ask_rng.choice(users)
                responds = ask_rng.random() < response
                respond(qa, text, target, user, ask_rng, w.row_of, stats, responds=responds, via=PROMPTS[prompt])
            feedback.drain()
            row = {"prompt": prompt, "thumbs_rate": rate, "response_rate": round(response, 4),
                   "questions": args.days * args.per_day, "askers": dict(stats),
                   "labels": label_counts(feedback, store)}
            if not args.no_nightly:
                record = run_nightly(home, w.settings, NightlyConfig(trigger=f"week-{prompt}-{rate}"),
                                     embedder=w.embedder, log=w.log)
                MemoryLoader(memory, feedback, store, w.embedder, home.root / "memory.json").refresh()
                real = (record.get("metrics") or {}).get("real") or {}
                row["nightly"] = {"status": record["status"], "decision": record.get("decision"),
                                  "real_test": real.get("queries"), "real_gain": real.get("gain"),
                                  "real_noise": real.get("noise")}
                row["after_the_night"] = {name: evaluate(searcher, items) for name, items in (
                    ("rephrased", w.eval_rephrased), ("same_answers", w.eval_asked),
                    ("unasked_topics", w.eval_unasked))}
            row["seconds"] = round(time.perf_counter() - started, 1)
            conditions.append(row)
            print({k: row[k] for k in ("prompt", "thumbs_rate", "response_rate")}, row["labels"],
                  row.get("nightly", {}).get("status"), row.get("after_the_night", {}).get("rephrased"))
            store.close()
            shutil.rmtree(home.root, ignore_errors=True)
    save("feedback_prompts", {
        "machine": machine(), "days": args.days, "questions_per_day": args.per_day, "users": len(users),
        "assumption": {"yes_no_factor": args.yes_no_factor,
                       "source": "reported (not measured here): 'Did this answer your question?' Yes/No draws about "
                                 "5x the responses of generic thumbs",
                       "thumbs_rates": rates,
                       "responder": "a responder who sees a right section clicks it (and votes Yes/👍 half the "
                                    "time), otherwise votes No/👎 and, 70% of the time, looks at the sections "
                                    "offered after it; 5% misclick or misvote; a non-responder does nothing"},
        "after_night_0": baseline, "conditions": conditions,
        "seconds": round(time.perf_counter() - w.started, 1)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True, help="data directory with the demo ingested")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--per-day", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--prompt", choices=sorted(PROMPTS), default="thumbs",
                        help="how the bot asks for feedback: bare 👍/👎, or 'Did this answer your question?' Yes/No")
    parser.add_argument("--response-rate", type=float, default=0.70,
                        help="share of askers who answer bare 👍/👎 (Yes/No: --yes-no-factor times it)")
    parser.add_argument("--yes-no-factor", type=float, default=YES_NO_FACTOR)
    parser.add_argument("--prompts", metavar="RATES",
                        help="compare the prompts instead: comma-separated bare-thumbs response rates (0.02,0.05)")
    parser.add_argument("--no-nightly", action="store_true", help="with --prompts: count labels only")
    args = parser.parse_args()
    if not 0.0 <= args.response_rate <= 1.0 or args.yes_no_factor <= 0:
        parser.error("--response-rate must be within 0..1 and --yes-no-factor above 0")
    if args.prompts:
        compare_prompts(args)
        return
    response = response_rate(args.prompt, args.response_rate, args.yes_no_factor)
    via = PROMPTS[args.prompt]
    rng = random.Random(args.seed)
    w = prepare(args, rng)
    home, settings, embedder, store, log, started = w.home, w.settings, w.embedder, w.store, w.log, w.started
    night0, synthetic_only, row_of, week = w.night0, w.synthetic_only, w.row_of, w.week
    eval_rephrased, eval_asked, eval_unasked = w.eval_rephrased, w.eval_asked, w.eval_unasked

    feedback = FeedbackStore(home)
    memory = FeedbackMemory()
    searcher = open_searcher(store, embedder, home, index=MemoryIndex(store), memory=memory)
    qa = QAService(Answerer(searcher, settings, k=5), feedback)
    loader = MemoryLoader(memory, feedback, store, embedder, home.root / "memory.json")
    registry = AdapterRegistry(home.adapters_dir)

    def snapshot(night: int, record: dict | None) -> dict:
        loader.refresh()
        row = {"night": night, "active": registry.active_name(),
               "decision": record.get("status") if record else None,
               "rephrased": evaluate(searcher, eval_rephrased),
               "same_answers": evaluate(searcher, eval_asked),
               "unasked_topics": evaluate(searcher, eval_unasked)}
        current = registry.active_name()
        registry.activate(synthetic_only)
        for name, items in (("rephrased", eval_rephrased), ("same_answers", eval_asked),
                            ("unasked_topics", eval_unasked)):
            row[f"synthetic_only_{name}"] = evaluate(searcher, items, memory=False)
        registry.activate(current)
        row["plain_search_rephrased"] = evaluate(searcher, eval_rephrased, deep_memory=False)
        return row

    curve = [snapshot(0, night0)]
    print(curve[-1])
    users = [f"U{i:03d}" for i in range(40)]
    cursor = 0
    for day in range(1, args.days + 1):
        stats = defaultdict(int)
        for _ in range(args.per_day):
            text, target = week[cursor % len(week)]
            cursor += 1
            user = rng.choice(users)
            responds = rng.random() >= 1.0 - response  # the same draws as before: silent when below 1 - rate
            respond(qa, text, target, user, rng, row_of, stats, responds=responds, via=via)
        feedback.drain()
        record = run_nightly(home, settings, NightlyConfig(trigger=f"night-{day}"), embedder=embedder, log=log)
        row = snapshot(day, record) | {"day_feedback": dict(stats), "nightly": {
            "status": record["status"], "decision": record.get("decision"),
            "feedback_questions": record.get("counts", {}).get("feedback_questions")}}
        curve.append(row)
        print({k: row[k] for k in ("night", "active", "decision", "rephrased", "same_answers", "unasked_topics")},
              row["day_feedback"])
    final, first = curve[-1], curve[0]
    worst_drop = min(b["rephrased"]["hit@10"] - a["rephrased"]["hit@10"] for a, b in zip(curve, curve[1:]))
    save("learning_week", {
        "machine": machine(), "days": args.days, "questions_per_day": args.per_day, "users": len(users),
        "feedback_prompt": {"prompt": args.prompt, "thumbs_response_rate": args.response_rate,
                            "yes_no_factor": args.yes_no_factor, "response_rate": response},
        "noise": {"silent": round(1 - response, 4), "misclick": 0.05, "ignore_offered_sections": 0.30},
        "seconds": round(time.perf_counter() - started, 1),
        "pool": {"asked": len(week), "eval_rephrased": len(eval_rephrased), "eval_same_answers": len(eval_asked),
                 "eval_unasked_topics": len(eval_unasked)},
        "curve": curve,
        "gain_over_synthetic_only_hit@10": {
            name: round(final[name]["hit@10"] - final[f"synthetic_only_{name}"]["hit@10"], 4)
            for name in ("rephrased", "same_answers", "unasked_topics")},
        "unasked_topics_change_hit@10": round(final["unasked_topics"]["hit@10"] - first["unasked_topics"]["hit@10"], 4),
        "worst_night_to_night_change_hit@10": round(worst_drop, 4),
    })


if __name__ == "__main__":
    main()
