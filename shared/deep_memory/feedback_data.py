"""From feedback labels to training examples: weights, caps and the held-out feedback split.

- a click at rank r counts 1/P(examined | r) = r**eta (clipped at ``max_click_weight``): people
  click the top results whether or not they are the best, so a click far down says more;
- a vote counts 1, shared by the chunks the answer cited; the signed weights of all users are summed
  per (question, chunk): positive sums are relevant, negative sums not relevant;
- each user counts for at most ``per_user_cap`` questions (their latest): one person cannot
  steer the model;
- people the chat cannot name are one user per client: all the visitors (cookies) of one client
  (``web:anon:CLIENT:VISITOR``) or of the operator on loopback (``local:OSUSER:VISITOR``) are one
  voter, whose labels count once (the mean over its visitors) and towards one cap. A chunk's labels
  from unauthenticated clients count only when ``anonymous_quorum`` different clients gave them: one
  client cannot move a chunk by itself, however many cookies it makes up.
(``real_questions`` splits them, with the other real questions, into trained and held out.)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["LabeledQuestion", "labeled_questions", "FeedbackPolicy", "voter"]

ANONYMOUS = "web:anon:"  # the local chat's unauthenticated identities: web:anon:CLIENT:VISITOR


@dataclass(frozen=True)
class FeedbackPolicy:
    click_eta: float = 1.0
    max_click_weight: float = 5.0
    per_user_cap: int = 50
    test_share: float = 0.3
    anonymous_quorum: int = 2  # distinct unauthenticated clients needed before their label on a chunk counts


def voter(user_id: str) -> str:
    """Whom a label counts as: the visitors of one unauthenticated client are one voter."""
    if user_id.startswith(ANONYMOUS):
        return ":".join(user_id.split(":")[:3])
    if user_id.startswith("local:"):
        return ":".join(user_id.split(":")[:2])
    return user_id


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
    by_user: dict[str, list[tuple[object, str]]] = defaultdict(list)  # per voter
    for row in labels:
        by_user[voter(row.get("user_id") or "?")].append((row.get("occurred_at"), row["question_id"]))
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
    # signed weights per (question, voter, chunk), and the identities (visitors) each voter used
    by_voter: dict[tuple[str, str], dict[int, float]] = defaultdict(lambda: defaultdict(float))
    identities: dict[tuple[str, str], set[str]] = defaultdict(set)
    texts: dict[str, str] = {}
    sources: dict[str, str | None] = {}
    for row in labels:
        user = row.get("user_id") or "?"
        qid = row["question_id"]
        if (voter(user), qid) not in allowed or row.get("chunk_id") not in row_of:
            continue
        weight = 1.0
        if row["kind"] == "vote":
            weight = 1.0 / max(1, cited[(qid, user)])
        elif row["kind"] == "click":
            rank = max(1, int(row.get("rank") or 1))
            weight = min(policy.max_click_weight, float(rank) ** policy.click_eta)
        by_voter[(qid, voter(user))][row_of[row["chunk_id"]]] += weight * (1 if row["label"] > 0 else -1)
        identities[(qid, voter(user))].add(user)
        texts[qid] = row["question"]
        sources[qid] = row.get("source")
    sums: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    anonymous: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    users: dict[str, set[str]] = defaultdict(set)
    for (qid, who), chunks in by_voter.items():
        share = 1.0 / len(identities[(qid, who)])  # a voter counts once, however many visitors it used
        users[qid].add(who)
        for rowid, total in chunks.items():
            if who.startswith(ANONYMOUS):
                anonymous[qid][rowid].append(total * share)
            else:
                sums[qid][rowid] += total * share
    for qid, chunks in anonymous.items():
        for rowid, totals in chunks.items():
            if sum(1 for t in totals if t) >= policy.anonymous_quorum:
                sums[qid][rowid] += sum(totals)
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
