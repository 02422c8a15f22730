"""How many labels a week of questions yields, by how often people answer the feedback prompt.

    python bench/feedback_rates.py --home DIR [--days 7] [--per-day 150] [--base-rate 0.04] [--factors 1,2,5]

"Did this answer your question?" Yes / No is reported to get about 5x the responses of bare thumbs.
This replays the same simulated week once per response rate, through the real answer path
(QAService.ask: retrieval, an extractive answer with citations, everything recorded) and the real
feedback store, and counts what the ``labels`` view derives: vote labels (the cited chunks of an
answer voted on), clicks on cited sources, and clicks among the sections offered after a No.

The assumptions (stated in the results file):
- the questions: the store's own synthetic questions (offline generator), each with the chunks that
  answer it; ``--per-day`` a day drawn at random (the same draws for every rate);
- a person answers the prompt with probability ``base_rate x factor`` (thumbs: factor 1; Yes / No: 5,
  the reported factor; 2 as a cautious middle), Yes when a right chunk is among the shown sources,
  else No, 5% the wrong way;
- independently of the prompt, 15% of those shown a right source click it;
- after a No, 70% look at the sections offered and click a right one when it is there.
Common random numbers: each question's draws are the same for every rate, so differences come from
the response rate alone. No nightly training runs (bench/learning_week.py measures what labels do).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import machine, save, scratch_copy  # noqa: E402
from shared.answer import Answerer  # noqa: E402
from shared.feedback.store import FeedbackStore  # noqa: E402
from shared.qa import QAService  # noqa: E402
from shared.questions import synthetic_questions  # noqa: E402
from shared.retrieval import open_searcher  # noqa: E402
from shared.vector_index import MemoryIndex  # noqa: E402

CLICK = 0.15  # of those shown a right source, who click it
WRONG_WAY = 0.05  # who answer Yes / No the wrong way
LOOK_AFTER_NO = 0.70  # who look at the sections offered after a No


def week(home_dir: str, rate: float, plan: list[tuple]) -> dict:
    home, settings, embedder, store = scratch_copy(home_dir, "deepmem-rates-")
    feedback = FeedbackStore(home)
    searcher = open_searcher(store, embedder, home, index=MemoryIndex(store))
    qa = QAService(Answerer(searcher, settings, k=5), feedback)
    counts = {"asked": 0, "answered_prompt": 0, "yes": 0, "no": 0, "clicked_cited": 0, "found_after_no": 0}
    for day in plan:
        for text, targets, user, u_vote, u_way, u_click, u_look in day:
            asked = qa.ask(text, source="simulation", user_id=user)
            counts["asked"] += 1
            shown = asked.answer.shown_sources
            right = [s for s in shown if s.chunk_id in targets]
            if right and u_click < CLICK:
                qa.source_click(asked.question_id, user, right[0].chunk_id, right[0].rank)
                counts["clicked_cited"] += 1
            if u_vote >= rate:
                continue
            counts["answered_prompt"] += 1
            yes = bool(right) != (u_way < WRONG_WAY)
            qa.vote(asked.question_id, user, +1 if yes else -1, via="answered")
            counts["yes" if yes else "no"] += 1
            if not yes and u_look < LOOK_AFTER_NO:
                found = [s for s in qa.other_sources(asked.question_id) if s.chunk_id in targets]
                if found:
                    qa.source_click(asked.question_id, user, found[0].chunk_id, found[0].rank)
                    counts["found_after_no"] += 1
        feedback.drain()
    labels = feedback.labels()
    store.close()
    return counts | {
        "labels": len(labels),
        "vote_labels": sum(1 for l in labels if l["kind"] == "vote"),
        "click_labels": sum(1 for l in labels if l["kind"] == "click"),
        "relevant": sum(1 for l in labels if l["label"] > 0),
        "not_relevant": sum(1 for l in labels if l["label"] < 0),
        "labeled_questions": len({l["question_id"] for l in labels}),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True, help="data directory with docs ingested")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--per-day", type=int, default=150)
    parser.add_argument("--base-rate", type=float, default=0.04, help="share of answers voted on with bare thumbs")
    parser.add_argument("--factors", default="1,2,5", help="response-rate multipliers to compare")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.perf_counter()

    _, settings, _, store = scratch_copy(args.home, "deepmem-rates-q-")
    questions, _ = synthetic_questions(store, settings, "offline", progress=False)
    store.close()
    pool = [(q.text, frozenset(q.positives)) for q in questions if q.positives]
    users = [f"U{i:03d}" for i in range(40)]
    plan = [[(*rng.choice(pool), rng.choice(users), rng.random(), rng.random(), rng.random(), rng.random())
             for _ in range(args.per_day)] for _ in range(args.days)]
    print(f"{len(pool)} questions in the pool; {args.days} days x {args.per_day} asked")

    runs = {}
    for factor in [float(f) for f in args.factors.split(",")]:
        rate = min(1.0, args.base_rate * factor)
        t0 = time.perf_counter()
        runs[f"{factor:g}x"] = week(args.home, rate, plan) | {"response_rate": rate,
                                                               "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{factor:g}x ({rate:.0%} answer the prompt): {runs[f'{factor:g}x']}")
    base = runs[next(iter(runs))]
    save("feedback_rates", {
        "machine": machine(), "days": args.days, "questions_per_day": args.per_day, "pool": len(pool),
        "assumptions": {"thumbs_response_rate": args.base_rate, "factors": args.factors,
                        "click_right_cited_source": CLICK, "wrong_way": WRONG_WAY, "look_after_no": LOOK_AFTER_NO,
                        "yes_no_factor_reported": 5},
        "runs": runs,
        "labels_vs_thumbs": {k: round(r["labels"] / max(1, base["labels"]), 2) for k, r in runs.items()},
        "labeled_questions_vs_thumbs": {k: round(r["labeled_questions"] / max(1, base["labeled_questions"]), 2)
                                        for k, r in runs.items()},
        "seconds": round(time.perf_counter() - started, 1),
    })


if __name__ == "__main__":
    main()
