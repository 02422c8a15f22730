"""Real questions from a team's chat history: who asked, and which docs a person answered with.

A thread is a labeled question when its first message, from a person, asks something, and a
reply from *another* person links into the ingested docs. The question's text and the linked
sections (resolved like evaluation entries: a page URL, or url#anchor) become a label. A
reply the asker marked resolved (a ✅ reaction) or thanked for is a stronger label. Bots'
messages never count, as askers or as answerers.

This module knows threads, not Slack: a chat adapter (the bot's history import, the bot's own
threads) turns its messages into ``Message`` values, with links already taken out of the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from .feedback.store import FeedbackStore

__all__ = ["Message", "ThreadLabel", "label_thread", "is_question", "docs_entry", "record_label",
           "MAX_QUESTION_CHARS", "MAX_LINKS", "RESOLVED_REACTIONS", "STRONG", "WEAK"]

MAX_QUESTION_CHARS = 1000  # longer first messages are stories, not questions; the start is kept
MAX_LINKS = 5  # an answer linking more pages is a reading list
WEAK, STRONG = 1, 2  # label strength: answered with links / answered and marked resolved or thanked
RESOLVED_REACTIONS = {"white_check_mark", "heavy_check_mark", "ballot_box_with_check", "check", "resolved",
                      "done", "+1", "thumbsup", "pray", "raised_hands", "tada"}
QUESTION_START = re.compile(  # greetings first ("hey all, is there a way to ..."), then how people ask
    r"^(?:(?:(?:hi|hey|hello)(?: there)?|hiya|morning|folks|all|team|everyone|y'all|guys|@\S+)[\s,!:.-]*)*"
    r"(?:how|what|why|when|where|which|who|whom|whose|can|could|is|are|does|do|did|should|would|will|has|have|"
    r"any(?:one|body)?|is there|are there|help|question|quick question|q:|i'?m trying|i am trying|trying to|"
    r"i (?:can'?t|cannot|don'?t|need|want)|need help|wondering)\b", re.I)
LINK_JUNK = re.compile(r"[\s<>\"']")
THANKS = re.compile(r"\b(?:thanks|thank you|thank u|thx|ty|tysm|cheers|that (?:worked|works|did it|helped|fixed it)|"
                    r"works now|solved|fixed|perfect|got it|awesome|great,? thanks|much appreciated)\b", re.I)


@dataclass(frozen=True)
class Message:
    ts: str  # the chat's message id, ordered like time ("1700000000.000100")
    user: str | None
    text: str  # readable text: links shown as their labels, mentions removed
    links: tuple[str, ...] = ()  # the URLs the message links to
    is_bot: bool = False
    reactions: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> users who reacted

    @property
    def human(self) -> bool:
        return bool(self.user) and not self.is_bot


@dataclass(frozen=True)
class ThreadLabel:
    question: str
    question_ts: str
    asker: str
    answer_ts: str
    answerer: str
    links: tuple[str, ...]  # docs URLs the answer links to, in order, at most MAX_LINKS
    strength: int  # WEAK or STRONG
    resolved_by: str | None = None  # "reaction" | "thanks" | None
    answer: str = ""  # the answer's text (for a resolved-thread document; history imports keep only links)


def is_question(text: str) -> bool:
    """A message that asks: a question mark, or the way people open a question in chat."""
    text = text.strip()
    return len(text.split()) >= 3 and ("?" in text or bool(QUESTION_START.match(text)))


def _reacted(message: Message, user: str) -> bool:
    return any(user in users for name, users in message.reactions.items()
               if name.split("::", 1)[0] in RESOLVED_REACTIONS)


def label_thread(messages: list[Message], is_docs_link: Callable[[str], bool], *,
                 asked: tuple[str, str] | None = None) -> ThreadLabel | None:
    """The label a thread gives, or None. ``messages``: the thread, first message first.
    ``is_docs_link``: whether a URL points into the ingested documentation. ``asked``: (asker,
    question) when they are known otherwise (a thread the bot opened for /ask); the first
    message then only has to be there."""
    if not messages:
        return None
    first = messages[0]
    if asked is not None:
        asker, question = asked
    elif first.human and is_question(first.text):
        asker, question = first.user, first.text
    else:
        return None
    candidates = []  # (reply index, docs links) of replies by other people that link into the docs
    for i, m in enumerate(messages[1:], start=1):
        if not m.human or m.user == asker:
            continue
        links = tuple(dict.fromkeys(u for u in m.links if is_docs_link(u)))
        if links and len(links) <= MAX_LINKS:
            candidates.append((i, links))
    if not candidates:
        return None
    chosen, how = None, None
    for i, links in candidates:  # an answer the asker marked resolved, or thanked for before anyone else answered
        if _reacted(messages[i], asker):
            chosen, how = (i, links), "reaction"
            break
        later = messages[i + 1:]
        next_answer = next((j for j, _ in candidates if j > i), len(messages))
        if any(m.user == asker and THANKS.search(m.text) for m in later[: next_answer - i - 1]):
            chosen, how = (i, links), "thanks"
            break
    if chosen is None and _reacted(first, asker):  # the asker marked the whole thread resolved
        chosen, how = candidates[-1], "reaction"
    strength = STRONG if chosen is not None else WEAK
    i, links = chosen or candidates[0]
    question = " ".join(question.split())[:MAX_QUESTION_CHARS]
    return ThreadLabel(question=question, question_ts=first.ts, asker=asker, answer_ts=messages[i].ts,
                       answerer=messages[i].user, links=links, strength=strength, resolved_by=how,
                       answer=messages[i].text)


def docs_entry(resolver, url: str) -> str | None:
    """The relevance entry (page URL or url#anchor, as a ``Resolver`` knows it) that a link posted
    in chat denotes, or None when it points outside the docs. Tracking query strings, a trailing
    slash and an anchor the store does not know are forgiven."""
    url = LINK_JUNK.sub("", url).rstrip(".,;:)")
    if not url.startswith(("http://", "https://")):
        return None
    base, _, anchor = url.partition("#")
    candidates = [url]
    stripped = base.split("?", 1)[0]
    for page in (stripped, stripped.rstrip("/"), stripped.rstrip("/") + "/index.html", stripped + ".html"):
        candidates.append(page + (f"#{anchor}" if anchor else ""))
        if anchor:
            candidates.append(page)  # an anchor this store does not know: the page still counts
    for entry in dict.fromkeys(candidates):
        if "://" in entry and resolver.resolve_entry(entry):
            return entry
    return None


def _iso(ts: str) -> str:
    return datetime.fromtimestamp(float(ts), timezone.utc).isoformat()


def record_label(feedback: FeedbackStore, label: ThreadLabel, entry_of: Callable[[str], str | None], *,
                 channel: str, team: str | None, origin: str) -> str:
    """Record a thread's label in the feedback store: the question (asker, place, text) and one
    label per linked section (``entry_of``: link -> relevance entry), replacing what an earlier
    read of the same thread recorded. Answers' text is not kept. Returns the question id."""
    qid = f"{origin}:{team or '-'}:{channel}:{label.question_ts}"
    rows = [{"target": entry_of(url), "value": label.strength, "user_id": label.answerer,
             "at": _iso(label.answer_ts)} for url in label.links]
    feedback.record([FeedbackStore.question_op(id=qid, asked_at=_iso(label.question_ts), source=origin,
                                               user_id=label.asker, team_id=team, channel_id=channel,
                                               thread_ts=label.question_ts, text=label.question),
                     FeedbackStore.labels_op(qid, origin, [r for r in rows if r["target"]])])
    return qid
