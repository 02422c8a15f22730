"""What the dashboard shows, computed from the feedback log (questions, retrievals, events, runs).

``build_dashboard`` reads the window (the last ``days`` days, UTC) with the queries of
``queries.py`` and returns plain dataclasses:

- questions per day and per channel (a channel is the Slack channel id, or the front end: web,
  cli, ...), each with how many were answered, got a standing 👍 or 👎 (the labels view's votes:
  one per user, the latest), and were escalated to a person (an ``escalated`` event);
- the documentation gaps: questions not answered or 👎'd, grouped by topic (``topics.py``);
- pages (a URL without its #section) by how often answers cited them and people clicked them;
- every retraining run of the window: held-out hit@10 and MRR@10 of champion and challenger (real
  questions, and the synthetic split as a diagnostic), the decision, and the feedback it learned from.

A question is *answered* when it got an answer and the docs seemed to cover it (the answer's own
decision, ``covered``: shared.coverage); a question recorded before that decision existed counts as
answered when the best section retrieved for it reaches ``shared.answer.NOT_FOUND_SCORE``.
Everything is bounded: ``MAX_QUESTIONS`` per window, the newest
``MAX_CLUSTERED`` gap questions grouped, ``MAX_RUNS`` runs.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Callable
from urllib.parse import urldefrag

import numpy as np

from ..answer import NOT_FOUND_SCORE
from . import queries as Q
from .topics import MAX_CLUSTERED, group_topics

__all__ = ["Dashboard", "Counts", "Gap", "GapTopic", "PageUse", "RunPoint", "build_dashboard", "MAX_DAYS",
           "MAX_QUESTIONS", "MAX_RUNS", "SHOWN_TOPICS", "SHOWN_PAGES"]

UTC = timezone.utc
MAX_DAYS = 3650
MAX_QUESTIONS = 100_000  # questions read per window (the newest)
MAX_RUNS = 2000
SHOWN_TOPICS = 25
SHOWN_PAGES = 15
EXAMPLES = 5
OUTCOMES = ("escalated", "down", "unanswered", "up", "answered")


@dataclass
class Counts:
    questions: int = 0
    answered: int = 0
    up: int = 0  # questions with a standing 👍
    down: int = 0  # questions with a standing 👎
    escalated: int = 0
    # each question once, in the first of: escalated, 👎, not answered, 👍, answered (without a vote)
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))

    def add(self, q: "_Question") -> None:
        self.questions += 1
        self.outcomes[q.outcome] += 1
        self.answered += q.answered
        self.up += q.up
        self.down += q.down
        self.escalated += q.escalated

    def share(self, name: str) -> float | None:
        return getattr(self, name) / self.questions if self.questions else None


@dataclass
class _Question:
    id: str
    asked_at: datetime
    channel: str
    text: str
    answered: bool
    up: bool = False
    down: bool = False
    escalated: bool = False

    @property
    def outcome(self) -> str:
        return ("escalated" if self.escalated else "down" if self.down else "unanswered" if not self.answered
                else "up" if self.up else "answered")


@dataclass
class Gap:
    text: str
    times: int  # how often it was asked in these words


@dataclass
class GapTopic:
    label: str
    terms: list[str]
    questions: int
    unanswered: int
    down: int
    escalated: int
    channels: list[tuple[str, int]]
    examples: list[Gap]
    last_asked: datetime


@dataclass
class PageUse:
    page: str  # URL without the #section
    title: str | None
    retrieved: int  # times among an answer's sources
    cited: int
    clicks: int


@dataclass
class RunPoint:
    id: str
    started_at: datetime
    status: str
    trigger: str | None
    champion: str | None
    challenger: str | None
    decision: str | None
    real: dict  # {"queries", "champion": {"hit@10", "mrr@10"}, "challenger": {...}} or {}
    synthetic: dict
    feedback_questions: int | None  # real questions from feedback the run learned from
    real_questions: int | None
    collections: dict  # per collection, when the run reports them: {name: {"champion": {...}, "challenger": {...}}}


@dataclass
class Dashboard:
    generated_at: datetime
    since: datetime
    until: datetime
    days: int
    totals: Counts = field(default_factory=Counts)
    per_day: list[tuple[date, Counts]] = field(default_factory=list)
    per_channel: list[tuple[str, Counts]] = field(default_factory=list)
    # how each channel is configured (``shared.channels``): {channel id: "mode; collections"}; the default too
    channel_setup: dict[str, str] = field(default_factory=dict)
    gap_questions: int = 0
    gaps_grouped: int = 0  # how many of them were grouped (the newest, at most MAX_CLUSTERED)
    topics: list[GapTopic] = field(default_factory=list)
    most_cited: list[PageUse] = field(default_factory=list)
    least_cited: list[PageUse] = field(default_factory=list)
    pages_retrieved: int = 0
    pages_never_cited: int = 0
    runs: list[RunPoint] = field(default_factory=list)
    truncated: bool = False  # more questions in the window than were read
    notes: list[str] = field(default_factory=list)  # what the page could not show, and why

    @property
    def empty(self) -> bool:
        return not self.totals.questions and not self.runs


def _utc(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _channel(row: dict) -> str:
    return row.get("channel_id") or row.get("source") or "unknown"


def _json(value) -> dict:
    if isinstance(value, dict):
        return value
    try:
        out = json.loads(value) if value else {}
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def _pick(metrics) -> dict:
    if not isinstance(metrics, dict):
        return {}
    return {k: float(metrics[m]) for k, m in (("hit@10", "hit_rate@10"), ("mrr@10", "mrr@10"))
            if isinstance(metrics.get(m), (int, float))}


def _held_out(sets: dict, name: str) -> dict:
    s = sets.get(name)
    if not isinstance(s, dict) or not s.get("queries"):
        return {}
    return {"queries": int(s["queries"]), "champion": _pick(s.get("champion")),
            "challenger": _pick(s.get("challenger"))}


def _collections(metrics: dict) -> dict:
    """Per-collection metrics, where the run record has them: a held-out set's ``by_collection`` (the real
    questions' when they have it, else the synthetic split's)."""
    found = {}
    for name in ("real", "synthetic"):
        held = metrics.get(name)
        if isinstance(held, dict) and isinstance(held.get("by_collection"), dict) and held["by_collection"]:
            found = held["by_collection"]
            break
    out = {}
    for name, m in found.items():
        if isinstance(m, dict):
            out[str(name)] = {"champion": _pick(m.get("champion")), "challenger": _pick(m.get("challenger")),
                              "queries": m.get("queries")}
    return out


def _run(row: dict) -> RunPoint:
    metrics, counts = _json(row.get("metrics")), _json(row.get("counts"))
    origins = counts.get("real_by_origin") if isinstance(counts.get("real_by_origin"), dict) else {}
    return RunPoint(id=row["id"], started_at=_utc(row["started_at"]), status=row["status"], trigger=row.get("trigger"),
                    champion=row.get("champion"), challenger=row.get("version"),
                    decision=row.get("decision") or row.get("error"),
                    real=_held_out(metrics, "real"), synthetic=_held_out(metrics, "synthetic"),
                    feedback_questions=origins.get("feedback", 0) if counts else None,
                    real_questions=counts.get("real_questions"), collections=_collections(metrics))


def _pages(retrieved: list[dict], clicks: list[dict], titles) -> list[PageUse]:
    pages: dict[str, PageUse] = {}
    chunk_of: dict[str, str] = {}
    for row in retrieved:
        page = urldefrag(row["url"])[0]
        use = pages.setdefault(page, PageUse(page=page, title=None, retrieved=0, cited=0, clicks=0))
        use.retrieved += int(row["retrieved"])
        use.cited += int(row["cited"] or 0)
        chunk_of.setdefault(page, row["chunk_id"])
    for row in clicks:
        page = urldefrag(row["url"])[0]
        if page in pages:
            pages[page].clicks += int(row["clicks"])
    if titles is not None and chunk_of:
        found = titles(list(chunk_of.values()))
        for page, chunk_id in chunk_of.items():
            pages[page].title = found.get(chunk_id)
    return list(pages.values())


def _setup(settings) -> str:
    collections = ", ".join(settings.collections) if settings.collections else "every collection"
    experts = f"; {len(settings.experts)} expert(s)" if settings.experts else ""
    return f"{settings.mode}{', ephemeral' if settings.ephemeral else ''}; {collections}{experts}"


def build_dashboard(feedback, *, embed: Callable[[list[str]], np.ndarray] | None = None,
                    titles: Callable[[list[str]], dict[str, str]] | None = None, channels=None, days: int = 90,
                    now: datetime | None = None) -> Dashboard:
    """The dashboard of the last ``days`` days. ``feedback``: a FeedbackStore, or None when there is no
    feedback log yet (an empty dashboard). ``embed``: texts -> vectors, to group the gaps by topic
    (without it each gap question is its own topic). ``titles``: chunk ids -> page titles.
    ``channels``: the channel configuration (``shared.channels.ChannelConfig``): configured channels are
    listed with their settings, also when nobody asked there."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, not {days}")
    until = _utc(now or datetime.now(UTC))
    since = datetime.combine((until - timedelta(days=days - 1)).date(), datetime.min.time(), UTC)
    board = Dashboard(generated_at=until, since=since, until=until, days=days)
    board.per_day = [(since.date() + timedelta(days=i), Counts())
                     for i in range((until.date() - since.date()).days + 1)]
    configured = dict(channels.channels()) if channels is not None else {}
    board.channel_setup = {name: _setup(c) for name, c in configured.items()}
    if channels is not None:
        board.channel_setup["default"] = _setup(channels.default)
    board.per_channel = [(name, Counts()) for name in sorted(configured)]
    if feedback is None:
        return board
    window = Q.window(since, until + timedelta(microseconds=1))
    rows = feedback.rows(Q.QUESTIONS, window + [MAX_QUESTIONS + 1])
    board.truncated = len(rows) > MAX_QUESTIONS
    rows = rows[:MAX_QUESTIONS]
    best = {r["question_id"]: r["best"] for r in feedback.rows(Q.BEST_SCORES, window)}
    questions: dict[str, _Question] = {}
    for r in rows:
        judged = r.get("covered")  # the answer's own coverage decision; older questions: the best score
        answered = bool(r["has_answer"]) and r.get("answer_mode") != "error" and (
            bool(judged) if judged is not None else best.get(r["id"]) is not None and best[r["id"]] >= NOT_FOUND_SCORE)
        questions[r["id"]] = _Question(id=r["id"], asked_at=_utc(r["asked_at"]), channel=_channel(r), text=r["text"],
                                       answered=answered)
    for r in feedback.rows(Q.VOTES, window):
        q = questions.get(r["question_id"])
        if q is not None:
            q.up |= r["label"] > 0
            q.down |= r["label"] < 0
    for r in feedback.rows(Q.ESCALATIONS, window):
        if r["question_id"] in questions:
            questions[r["question_id"]].escalated = True

    by_day = dict(board.per_day)
    by_channel: dict[str, Counts] = {name: Counts() for name in configured}
    for q in questions.values():
        board.totals.add(q)
        if q.asked_at.date() in by_day:
            by_day[q.asked_at.date()].add(q)
        by_channel.setdefault(q.channel, Counts()).add(q)
    board.per_channel = sorted(by_channel.items(), key=lambda kv: (-kv[1].questions, kv[0]))

    gaps = sorted((q for q in questions.values() if not q.answered or q.down),
                  key=lambda q: q.asked_at, reverse=True)
    board.gap_questions = len(gaps)
    board.topics = _gap_topics(gaps[:MAX_CLUSTERED], embed)
    board.gaps_grouped = min(len(gaps), MAX_CLUSTERED)

    pages = _pages(feedback.rows(Q.RETRIEVED, window), feedback.rows(Q.CLICKS, window), titles)
    board.pages_retrieved = len(pages)
    board.pages_never_cited = sum(1 for p in pages if not p.cited and not p.clicks)
    cited = [p for p in pages if p.cited or p.clicks]
    board.most_cited = sorted(cited, key=lambda p: (-p.cited, -p.clicks, p.page))[:SHOWN_PAGES]
    shown = {p.page for p in board.most_cited}
    # least cited: pages the search keeps returning that answers rarely cite and people rarely open
    board.least_cited = sorted((p for p in pages if p.page not in shown),
                               key=lambda p: (p.cited + p.clicks, -p.retrieved, p.page))[:SHOWN_PAGES]
    board.runs = [_run(r) for r in feedback.rows(Q.RUNS, window + [MAX_RUNS])]
    return board


def _gap_topics(gaps: list[_Question], embed) -> list[GapTopic]:
    if not gaps:
        return []
    texts = [q.text for q in gaps]
    if embed is not None:
        groups = [(t.label, t.terms, t.members) for t in group_topics(texts, embed)]
    else:
        groups = [(q.text, [], [i]) for i, q in enumerate(gaps)]
    topics = []
    for label, words, members in groups[:SHOWN_TOPICS]:
        qs = [gaps[i] for i in members]
        asked = Counter(q.text.strip() for q in qs)
        topics.append(GapTopic(label=label, terms=words, questions=len(qs),
                               unanswered=sum(not q.answered for q in qs), down=sum(q.down for q in qs),
                               escalated=sum(q.escalated for q in qs),
                               channels=Counter(q.channel for q in qs).most_common(3),
                               examples=[Gap(text=t, times=n) for t, n in asked.most_common(EXAMPLES)],
                               last_asked=max(q.asked_at for q in qs)))
    return topics
