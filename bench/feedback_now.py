"""Feedback takes effect at once: a 👎 and a click on the right source, then the same question
and rephrasings of it, with no retraining in between.

    python bench/feedback_now.py --home DIR [--questions 200]

For held-out synthetic questions (the active adapter never trained on their chunks) whose right
chunk is not in plain search's top 3: the question is asked through the answer path, the user
presses 👎 and clicks the right source (its rank is recorded), the bot's feedback memory
refreshes, and then the same question and two rephrasings (bench/rephrase.py) are asked.
Reported: how often the labeled chunk is in the top 3 (target: at least 90%), and hit@10 on
unrelated questions before and after all that feedback (target: within noise).
Saves bench/results/feedback_now.json.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import machine, save, scratch_copy  # noqa: E402
from bench.rephrase import rephrase  # noqa: E402
from shared.answer import Answerer  # noqa: E402
from shared.deep_memory.dataset import Dataset, SplitSpec, split_salt  # noqa: E402
from shared.deep_memory.nightly import NightlyConfig, run_nightly  # noqa: E402
from shared.feedback.store import FeedbackStore  # noqa: E402
from shared.feedback_memory import FeedbackMemory, MemoryLoader  # noqa: E402
from shared.qa import QAService  # noqa: E402
from shared.questions import synthetic_questions  # noqa: E402
from shared.retrieval import open_searcher  # noqa: E402
from shared.vector_index import MemoryIndex  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    home, settings, embedder, store = scratch_copy(args.home, "deepmem-now-")
    run_nightly(home, settings, NightlyConfig(trigger="setup"), embedder=embedder, log=lambda *a: None)

    questions, _ = synthetic_questions(store, settings, "offline", progress=False)
    row_of = store.chunk_rowids()
    id_of = {r: c for c, r in row_of.items()}
    items = [(q.text, tuple(row_of[c] for c in q.positives if c in row_of)) for q in questions]
    test = Dataset.build(store, [("s", [i for i in items if i[1]])], SplitSpec(salt=split_salt(0))).test
    rng.shuffle(test)

    feedback = FeedbackStore(home)
    memory = FeedbackMemory()
    searcher = open_searcher(store, embedder, home, index=MemoryIndex(store), memory=memory)
    qa = QAService(Answerer(searcher, settings, k=5), feedback)
    loader = MemoryLoader(memory, feedback, store, embedder, home.root / "memory.json")

    def top(text, k):
        return [h.chunk.rowid for h in searcher.search(text, k).hits]

    chosen, unrelated = [], []
    for e in test:
        if len(chosen) < args.questions:
            ranked = top(e.text, 100)
            if not set(ranked[:3]) & set(e.positives):  # a question the system gets wrong today
                right = next((r for r in ranked if r in e.positives), e.positives[0])
                rank = ranked.index(right) + 1 if right in ranked else None
                chosen.append((e, right, rank))
        else:
            unrelated.append(e)
    unrelated = unrelated[:400]

    def hit10(examples):
        return float(np.mean([bool(set(top(e.text, 10)) & set(e.positives)) for e in examples]))

    before_unrelated = hit10(unrelated)
    for i, (e, right, rank) in enumerate(chosen):
        user = f"U{i:04d}"  # one user each: the per-user cap is not what is measured here
        asked = qa.ask(e.text, source="bench", user_id=user)
        qa.vote(asked.question_id, user, -1)
        qa.source_click(asked.question_id, user, id_of[right], rank)
    feedback.drain()
    loader.refresh()
    same, rephrased = [], []
    for e, right, _ in chosen:
        same.append(right in top(e.text, 3))
        for _ in range(2):
            rephrased.append(right in top(rephrase(e.text, rng), 3))
    after_unrelated = hit10(unrelated)
    noise = float(np.sqrt(before_unrelated * (1 - before_unrelated) / len(unrelated)))
    result = {
        "machine": machine(), "labeled_questions": len(chosen), "memory": memory.params.__dict__,
        "same_question_top3": round(float(np.mean(same)), 4),
        "rephrased_top3": round(float(np.mean(rephrased)), 4),
        "same_or_rephrased_top3": round(float(np.mean(same + rephrased)), 4),
        "unrelated_hit@10_before": round(before_unrelated, 4), "unrelated_hit@10_after": round(after_unrelated, 4),
        "unrelated_noise": round(noise, 4), "unrelated_questions": len(unrelated),
    }
    print(result)
    save("feedback_now", result)


if __name__ == "__main__":
    main()
