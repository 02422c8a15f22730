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
import sys
import time
from collections import defaultdict
from pathlib import Path

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
from shared.metrics import per_query  # noqa: E402
from shared.qa import QAService  # noqa: E402
from shared.questions import synthetic_questions  # noqa: E402
from shared.retrieval import open_searcher  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True, help="data directory with the demo ingested")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--per-day", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
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
            asked = qa.ask(text, source="simulation", user_id=user)
            shown = asked.answer.cited_sources or asked.answer.sources[:3]
            right = [s for s in shown if row_of.get(s.chunk_id) in target]
            if rng.random() < 0.30:
                stats["silent"] += 1
                continue
            misclick = rng.random() < 0.05
            if right and not misclick:
                qa.source_click(asked.question_id, user, right[0].chunk_id, right[0].rank)
                if rng.random() < 0.5:
                    qa.vote(asked.question_id, user, +1)
                stats["clicked"] += 1
            elif right and misclick:
                wrong = [s for s in shown if s not in right]
                if wrong:
                    qa.source_click(asked.question_id, user, wrong[0].chunk_id, wrong[0].rank)
                else:
                    qa.vote(asked.question_id, user, -1)
                stats["misclicked"] += 1
            else:
                qa.vote(asked.question_id, user, +1 if misclick else -1)
                stats["thumbs_down" if not misclick else "misvoted"] += 1
                if misclick or rng.random() < 0.30:
                    continue  # 30% of those who press 👎 do not look at the sections offered after it
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
        "noise": {"silent": 0.30, "misclick": 0.05, "ignore_offered_sections": 0.30}, "seconds": round(time.perf_counter() - started, 1),
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
