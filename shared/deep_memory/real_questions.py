"""Real questions: asked by people, or written by the docs' maintainers, with what answers them.

Deep memory is for people's questions, so they are its training signal whenever they exist, and
its judge: synthetic questions only fill in where real ones are missing, and are a diagnostic.
Where real questions come from:

- **feedback** on the bot's answers (votes, reactions, clicks on sources; see feedback_data);
- the workspace's **history**: a thread where a person answered a question with links into the
  docs (``deepmem history import``), and threads the bot took part in that people resolved;
- **imports**: ``deepmem feedback import`` of a file of questions with their relevant pages;
- the **docs' own questions**: a section whose heading asks a question and whose answer links to
  other sections of the docs (FAQ, troubleshooting, "how do I" pages). The question's target is
  where its answer points, not the FAQ answer itself, which is left out when it is scored.

A target is one relevant place: a chunk, a section (url#anchor) or a page, found when any of its
chunks is. A page stays one target; it is not every chunk it holds.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field

from ..queries import Resolver
from ..questions.style import StyleExamples, choose_examples
from ..store import Store
from .feedback_data import FeedbackPolicy, labeled_questions

__all__ = ["RealQuestion", "real_questions", "docs_questions", "split_real", "style_examples"]

QUESTION_HEADING = re.compile(
    r"^(?:how|what|why|when|where|which|who|can|could|is|are|does|do|did|should|would|will|has|have|"
    r"i'?m|i am|i can'?t|i get|my)\b.{3,}\?$", re.I)
SPACE = re.compile(r"\s+")


@dataclass
class RealQuestion:
    key: str  # stable: the feedback question id, or "docs:<chunk id>"
    text: str
    targets: list[frozenset[int]]  # relevant places (chunk rowids each); found when any chunk is
    origin: str  # feedback | history | import | docs
    weight: float = 1.0
    avoid: frozenset[int] = frozenset()  # chunks labeled not relevant
    exclude: frozenset[int] = frozenset()  # chunks that do not count when scoring (a FAQ's own answer)
    users: frozenset[str] = field(default_factory=frozenset)

    @property
    def positives(self) -> tuple[int, ...]:
        return tuple(sorted(frozenset().union(*self.targets))) if self.targets else ()


def _origin(source: str | None) -> str:
    return {"history": "history", "thread": "history", "import": "import"}.get(source or "", "feedback")


def real_questions(labels: list[dict], resolver: Resolver, policy: FeedbackPolicy = FeedbackPolicy()
                   ) -> list[RealQuestion]:
    """Real questions from the feedback store's ``labels`` rows: votes and clicks on answers (each
    relevant chunk a target), and labels that name a page or section (each one target)."""
    by_chunk = [r for r in labels if not r.get("target")]
    out = [RealQuestion(key=q.question_id, text=q.text, targets=[frozenset([c]) for c in sorted(q.positives)],
                        origin=_origin(q.source), weight=min(3.0, sum(q.positives.values())) if q.positives else 0.0,
                        avoid=frozenset(q.negatives), users=frozenset(q.users))
           for q in labeled_questions(by_chunk, resolver.by_id, policy)]
    seen = {q.key: q for q in out}
    grouped: dict[str, dict] = {}
    for row in labels:
        target = row.get("target")
        if not target:
            continue
        rowids = resolver.resolve_entry(target)
        if not rowids:
            continue  # a page no longer in the store
        entry = grouped.setdefault(row["question_id"], {"text": row["question"], "targets": {}, "avoid": set(),
                                                         "users": set(), "source": row.get("source")})
        if row["label"] > 0:
            entry["targets"][target] = max(entry["targets"].get(target, (0, None))[0], row["label"]), rowids
        else:
            entry["avoid"].update(rowids)
        entry["users"].add(row.get("user_id") or "?")
    for qid, entry in grouped.items():
        targets = [rowids for _, rowids in entry["targets"].values()]
        strength = max((s for s, _ in entry["targets"].values()), default=0)
        if qid in seen:  # votes and a page label on one question: one question
            q = seen[qid]
            q.targets += [t for t in targets if t not in q.targets]
            q.weight = min(3.0, q.weight + strength)
            q.avoid |= frozenset(entry["avoid"])
            q.users |= frozenset(entry["users"])
        elif targets or entry["avoid"]:
            q = RealQuestion(key=qid, text=entry["text"], targets=targets, origin=_origin(entry["source"]),
                             weight=float(max(1, strength)), avoid=frozenset(entry["avoid"]),
                             users=frozenset(entry["users"]))
            seen[qid] = q
            out.append(q)
    return sorted(out, key=lambda q: q.key)


def _norm(text: str) -> str:
    return SPACE.sub(" ", text).strip().lstrip("-*• ").strip().lower()


def docs_questions(store: Store, resolver: Resolver | None = None) -> list[RealQuestion]:
    """The docs' own questions: sections whose heading asks, with the sections their answer links
    to (other pages of the store). The answer's own chunks are kept out of scoring."""
    resolver = resolver or Resolver(store)
    sections: dict[str, list[tuple[int, str, str, int]]] = defaultdict(list)  # url -> (rowid, id, text, page_id)
    headings: dict[str, str] = {}
    for c in store.iter_chunks(order="page"):
        rowid, cid, url, page_id, heads, text = c.rowid, c.id, c.url, c.page_id, c.headings, c.text
        if heads and QUESTION_HEADING.match(heads[-1].strip()) and len(heads[-1]) <= 200:
            sections[url].append((rowid, cid, text, page_id))
            headings[url] = heads[-1].strip()
    if not sections:
        return []
    pages = {page_id for members in sections.values() for *_, page_id in members}
    links: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for page_id, target, _text, context in store.links_from(pages):
        links[page_id].append((target, _norm(context or "")))
    out = []
    for url, members in sections.items():
        own = frozenset(r for r, *_ in members)
        body = _norm(" ".join(text for _, _, text, _ in members))
        page_id = members[0][3]
        targets: dict[str, frozenset[int]] = {}
        for target, context in links[page_id]:
            if not context or context[:120] not in body:
                continue  # a link of another section of the page
            rowids = resolver.resolve_entry(target) - own
            if rowids and not rowids <= own:
                targets.setdefault(target, rowids)
        if targets and len(targets) <= 5:
            out.append(RealQuestion(key=f"docs:{members[0][1]}", text=headings[url], targets=list(targets.values()),
                                    origin="docs", exclude=own))
    return sorted(out, key=lambda q: q.key)


def split_real(questions: list[RealQuestion], seed: int, test_share: float
               ) -> tuple[list[RealQuestion], list[RealQuestion]]:
    """Train and held-out test by a hash of the question's answer: questions answered by exactly the
    same places land on one side (the same question asked again, in other words, by someone else, is
    not a held-out question: judged on it, an adapter that memorised the trained one would look like
    one that generalises). A question without targets goes by its words."""
    train, test = [], []
    for q in questions:
        if q.targets:
            key = "answer:" + ";".join(sorted(",".join(map(str, sorted(t))) for t in q.targets))
        else:
            key = " ".join(q.text.lower().split()).strip(" ?!.")
        h = int.from_bytes(hashlib.sha256(f"real-{seed}\x1f{key}".encode()).digest()[:8], "big") / 2 ** 64
        (test if h < test_share else train).append(q)
    return train, test


def style_examples(train: list[RealQuestion], seed: int) -> StyleExamples | None:
    """Examples of how people ask, for the LLM question generator: from the *training* side of
    ``split_real`` only (a held-out question is never shown), people's questions before the docs' own."""
    return choose_examples([q.text for q in train if q.origin != "docs"],
                           [q.text for q in train if q.origin == "docs"], seed)
