"""The answer path shared by every front end (Slack, the local chat, benchmarks).

``ask`` answers a question and records it: who asked where, what was retrieved (with and
without deep memory), which adapter answered, the answer and its latency. ``vote`` and
``source_click`` record a vote, a reaction or a click on a source; ``other_sources`` gives what
to offer a user who found no answer (the retrieved sections not shown yet), so that a 👎 can be
followed by a click on the right section. Recording goes through the feedback spool, so it
never blocks on the database and never loses an event.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from .answer import SHOWN, Answer, Answerer, Citation
from .feedback.store import FeedbackStore, now

__all__ = ["QAService", "Asked", "reaction_value"]

UP_REACTIONS = {"+1", "thumbsup", "white_check_mark", "heavy_check_mark", "100", "raised_hands", "tada", "star"}
DOWN_REACTIONS = {"-1", "thumbsdown", "x", "no_entry", "no_entry_sign", "disappointed", "confused"}


def reaction_value(name: str) -> int:
    """+1, -1, or 0 for reactions that say nothing about the answer. Skin tones are ignored."""
    base = name.split("::", 1)[0]
    return 1 if base in UP_REACTIONS else -1 if base in DOWN_REACTIONS else 0


@dataclass
class Asked:
    question_id: str
    answer: Answer


class QAService:
    RECENT = 5000  # recent answers whose other sources are kept in memory (citations only: small)

    def __init__(self, answerer: Answerer, feedback: FeedbackStore):
        self.answerer = answerer
        self.feedback = feedback
        self._recent: OrderedDict[str, list[Citation]] = OrderedDict()
        self._recent_lock = threading.Lock()

    def _remember(self, question_id: str, answer: Answer) -> None:
        with self._recent_lock:
            self._recent[question_id] = answer.other_sources
            while len(self._recent) > self.RECENT:
                self._recent.popitem(last=False)

    def other_sources(self, question_id: str) -> list[Citation]:
        """The retrieved sections the answer did not show, best first. From memory for recent answers,
        otherwise from the recorded retrieval (after a restart); empty for an unknown question."""
        with self._recent_lock:
            recent = self._recent.get(question_id)
        if recent is not None:
            return list(recent)
        rows = self.feedback.answer_retrievals(question_id)
        shown = {r["rank"] for r in rows if r["cited"]} or {r["rank"] for r in rows[:SHOWN]}
        chunks = self.answerer.searcher.store.chunks_by_id([r["chunk_id"] for r in rows])
        out = []
        for n, row in enumerate(rows, start=1):
            chunk = chunks.get(row["chunk_id"])
            if row["rank"] in shown or chunk is None:  # a chunk re-ingested away since is not offered
                continue
            out.append(Citation.from_chunk(n, chunk, row["rank"], row["score"]))
        return out

    def ask(self, text: str, *, source: str, user_id: str | None, history: list[tuple[str, str]] = (),
            team_id: str | None = None, channel_id: str | None = None, thread_ts: str | None = None,
            dedupe_key: str | None = None, question_id: str | None = None, collections=None) -> Asked:
        """Answer ``text`` from ``collections`` (None: every collection; an unknown name is an
        UnknownCollection error naming it, raised before anything is recorded) and record it."""
        question_id = question_id or uuid.uuid4().hex
        asked_at = now()
        started = time.perf_counter()
        answer = self.answerer.answer(text, list(history), collections=collections)
        ops = [
            FeedbackStore.question_op(id=question_id, asked_at=asked_at, source=source, user_id=user_id,
                                      team_id=team_id, channel_id=channel_id, thread_ts=thread_ts,
                                      dedupe_key=dedupe_key, text=text, answer=answer.text, answer_mode=answer.mode,
                                      adapter_version=answer.adapter, answered_at=now(),
                                      latency_ms=(time.perf_counter() - started) * 1e3, error=answer.error,
                                      covered=answer.covered, coverage=answer.coverage),
            FeedbackStore.retrievals_op(question_id, "answer", [
                {"rank": s.rank, "chunk_id": s.chunk_id, "url": s.url, "score": s.score, "cited": s.n in answer.cited}
                for s in [*answer.sources, *answer.more]]),
        ]
        if answer.base_hits is not None:
            ops.append(FeedbackStore.retrievals_op(question_id, "base", [
                {"rank": h.rank, "chunk_id": h.chunk.id, "url": h.chunk.url, "score": h.score, "cited": False}
                for h in answer.base_hits]))
        self.feedback.record(ops)
        self._remember(question_id, answer)
        return Asked(question_id=question_id, answer=answer)

    def posted(self, question_id: str, message_ts: str) -> None:
        """Remember where the answer was posted: reactions point at that message."""
        self.feedback.record([FeedbackStore.question_op(id=question_id, message_ts=message_ts)])

    def vote(self, question_id: str, user_id: str, value: int, *, via: str = "button", event_id: str | None = None) -> None:
        kind = "reaction" if via.startswith("reaction") else "vote"
        self.feedback.record([FeedbackStore.event_op(question_id=question_id, kind=kind, user_id=user_id,
                                                     value=value, detail=via, id=event_id)])

    def source_click(self, question_id: str, user_id: str, chunk_id: str, rank: int | None,
                     event_id: str | None = None) -> None:
        self.feedback.record([FeedbackStore.event_op(question_id=question_id, kind="source_click", user_id=user_id,
                                                     value=1, chunk_id=chunk_id, rank=rank, id=event_id)])

    def collections(self) -> list[str]:
        """The store's collections (what a channel may answer from)."""
        return self.answerer.searcher.store.collections()

    # -- escalation: a person asked for an expert ---------------------------------------------
    def question(self, question_id: str) -> dict | None:
        """The recorded question (who asked what, where), or None."""
        return self.feedback.question(question_id)

    @staticmethod
    def escalation_id(channel_id: str, thread_ts: str, tagged: bool) -> str:
        """One escalation per thread (and one "nobody to tag" note): the event id says which."""
        return f"escalated:{channel_id}:{thread_ts}" if tagged else f"escalated-untagged:{channel_id}:{thread_ts}"

    def escalated(self, channel_id: str, thread_ts: str, tagged: bool) -> bool:
        """Has this thread been escalated already (experts tagged, or told that nobody is configured)?"""
        return self.feedback.has_event(self.escalation_id(channel_id, thread_ts, tagged))

    def record_escalation(self, question_id: str, user_id: str, channel_id: str, thread_ts: str, *, tagged: bool,
                          via: str) -> None:
        """An ``escalated`` event: value 1 when experts were tagged, 0 when none were configured."""
        self.feedback.record([FeedbackStore.event_op(question_id=question_id, kind="escalated", user_id=user_id,
                                                     value=int(tagged), detail=via,
                                                     id=self.escalation_id(channel_id, thread_ts, tagged))])
