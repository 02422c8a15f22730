"""From feedback labels to training examples: weights, caps and the held-out feedback split.

- a click at rank r counts 1/P(examined | r) = r**eta (clipped at ``max_click_weight``): people
  click the top results whether or not they are the best, so a click far down says more;
- a vote counts 1, shared by the chunks the answer cited; the signed weights of all users are summed
  per (question, chunk): positive sums are relevant, negative sums not relevant;
- each user counts for at most ``per_user_cap`` questions (their latest): one person cannot
  steer the model;
- questions are split by a hash of their words: ``test_share`` of them are a held-out feedback
  test set that is never trained on (a question asked twice is on one side only).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["LabeledQuestion", "labeled_questions", "split_feedback", "FeedbackPolicy"]


@dataclass(frozen=True)
class FeedbackPolicy:
    click_eta: float = 1.0
    max_click_weight: float = 5.0
    per_user_cap: int = 50
    test_share: float = 0.3


@dataclass
class LabeledQuestion:
    question_id: str
    text: str
    positives: dict[int, float] = field(default_factory=dict)  # rowid -> weight
    negatives: dict[int, float] = field(default_factory=dict)
    users: set[str] = field(default_factory=set)
    source: str | None = None  # where the question was asked: slack | web | history | import


def labeled_questions(labels: list[dict], row_of: dict[str, int], policy: FeedbackPolicy = FeedbackPolicy()
                      ) -> list[LabeledQuestion]:
    """Aggregate label rows (from the ``labels`` view) into questions with weighted relevance."""
    by_user: dict[str, list[tuple[object, str]]] = defaultdict(list)
    for row in labels:
        by_user[row.get("user_id") or "?"].append((row.get("occurred_at"), row["question_id"]))
    allowed: set[tuple[str, str]] = set()
    for user, items in by_user.items():
        latest: list[str] = []
        for _, qid in sorted(items, key=lambda x: str(x[0]), reverse=True):
            if qid not in latest:
                latest.append(qid)
        allowed.update((user, qid) for qid in latest[: policy.per_user_cap])

    cited: dict[tuple[str, str], int] = defaultdict(int)  # a vote is shared by the chunks it covers
    for row in labels:
        if row["kind"] == "vote":
            cited[(row["question_id"], row.get("user_id") or "?")] += 1
    sums: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    texts: dict[str, str] = {}
    sources: dict[str, str | None] = {}
    users: dict[str, set[str]] = defaultdict(set)
    for row in labels:
        user = row.get("user_id") or "?"
        qid = row["question_id"]
        if (user, qid) not in allowed or row.get("chunk_id") not in row_of:
            continue
        weight = 1.0
        if row["kind"] == "vote":
            weight = 1.0 / max(1, cited[(qid, user)])
        elif row["kind"] == "click":
            rank = max(1, int(row.get("rank") or 1))
            weight = min(policy.max_click_weight, float(rank) ** policy.click_eta)
        sums[qid][row_of[row["chunk_id"]]] += weight * (1 if row["label"] > 0 else -1)
        texts[qid] = row["question"]
        sources[qid] = row.get("source")
        users[qid].add(user)
    out = []
    for qid, chunks in sums.items():
        q = LabeledQuestion(qid, texts[qid], users=users[qid], source=sources[qid])
        for rowid, total in chunks.items():
            if total > 0:
                q.positives[rowid] = total
            elif total < 0:
                q.negatives[rowid] = -total
        if q.positives or q.negatives:
            out.append(q)
    return sorted(out, key=lambda q: q.question_id)


def split_feedback(questions: list[LabeledQuestion], seed: int, test_share: float
                   ) -> tuple[list[LabeledQuestion], list[LabeledQuestion]]:
    """Split by the question's words, not its id: the same question asked twice lands on one side."""
    train, test = [], []
    for q in questions:
        key = " ".join(q.text.lower().split()).strip(" ?!.")
        h = int.from_bytes(hashlib.sha256(f"feedback-{seed}\x1f{key}".encode()).digest()[:8], "big") / 2 ** 64
        (test if h < test_share else train).append(q)
    return train, test
