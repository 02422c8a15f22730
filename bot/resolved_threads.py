"""Threads the bot answered and people resolved: labels, and a document others can be shown.

After the bot answers in a thread, a person may answer better. When someone other than the asker
replies with links into the docs and the asker marks that reply resolved (a ✅ reaction, or
thanks in the thread), the thread is read again and goes through the same extraction as the
history import (``shared.history.label_thread``): the linked sections become labels on the
bot's recorded question (they are what its answer should have found), and the question with the
person's answer becomes a resolved-thread document, citable with a link back to the thread.

The app calls ``on_reaction`` (a resolved reaction such as ✅ on a message that is not one of the
bot's answers) and ``on_thanks`` (thanks written in a thread). Both filter cheaply first (is the
person the asker of a question the bot answered there?) and never raise: a failure is logged.
A document is made only from a public channel's thread: what people said in a private channel or
a direct message is never shown to others. The labels are recorded wherever the bot answered.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from shared.coordination import THREAD_TTL, Coordination, MemoryCoordination
from shared.feedback.store import FeedbackStore
from shared.history import STRONG, ThreadLabel, docs_entry, label_thread
from shared.qa import QAService
from shared.queries import Resolver
from shared.settings import Settings
from shared.thread_documents import add_thread_document

from .history import slack_message

__all__ = ["ResolvedThreads"]

log = logging.getLogger("deepmem.bot")
MAX_REPLIES = 1000  # a thread longer than this is read to here


class ResolvedThreads:
    def __init__(self, qa: QAService, settings: Settings, coordination: Coordination | None = None):
        self.qa = qa
        self.settings = settings
        self._resolver: tuple[int, Resolver] | None = None
        self._lock = threading.Lock()
        # a resolved answer is recorded once, by one replica: a later ✅ or thanks on it (here or at another
        # replica) claims the same key and finds it taken
        self.coordination = coordination if coordination is not None else MemoryCoordination()
        self._recording = asyncio.Lock()  # one thread recorded at a time in this process

    @property
    def store(self):
        return self.qa.answerer.searcher.store

    def resolver(self) -> Resolver:
        """A Resolver over the current store, rebuilt when chunks were added or removed."""
        version = self.store.vectors_version()
        with self._lock:
            if self._resolver is None or self._resolver[0] != version:
                self._resolver = (version, Resolver(self.store))
            return self._resolver[1]

    async def _question(self, channel: str, thread_ts: str) -> dict | None:
        rows = await asyncio.to_thread(
            self.qa.feedback.rows, "SELECT id, user_id, text FROM questions WHERE channel_id = ? AND thread_ts = ? "
                                   "AND source = 'slack' ORDER BY asked_at LIMIT 1", [channel, thread_ts])
        return rows[0] if rows else None

    async def _asked_here(self, channel: str, user: str) -> bool:
        rows = await asyncio.to_thread(
            self.qa.feedback.rows, "SELECT 1 AS asked FROM questions WHERE channel_id = ? AND user_id = ? "
                                   "AND source = 'slack' AND thread_ts IS NOT NULL LIMIT 1", [channel, user])
        return bool(rows)

    async def on_reaction(self, client, channel: str, user: str, message_ts: str) -> ThreadLabel | None:
        """``user`` reacted resolved to the message ``message_ts`` (not one of the bot's answers)."""
        try:
            if not (channel and user and message_ts) or not await self._asked_here(channel, user):
                return None  # the common case, answered without calling Slack: not someone the bot answered here
            page = await client.conversations_replies(channel=channel, ts=message_ts, limit=1)
            first = (page.get("messages") or [{}])[0]
            thread_ts = first.get("thread_ts")
            if not thread_ts:
                return None  # a message outside any thread
            return await self.check(client, channel, str(thread_ts), by=user)
        except Exception as exc:  # never let bookkeeping take a listener down
            log.warning("could not check a resolved thread in %s: %s: %s", channel, exc.__class__.__name__, exc)
            return None

    async def on_thanks(self, client, channel: str, user: str, thread_ts: str) -> ThreadLabel | None:
        """``user`` wrote thanks in the thread ``thread_ts``."""
        try:
            return await self.check(client, channel, thread_ts, by=user)
        except Exception as exc:
            log.warning("could not check a resolved thread in %s: %s: %s", channel, exc.__class__.__name__, exc)
            return None

    async def check(self, client, channel: str, thread_ts: str, *, by: str | None = None) -> ThreadLabel | None:
        """Read the thread; when a person's answer with docs links is marked resolved by the asker,
        record it (once). ``by``: who marked it; nothing is read unless that is the asker.
        Returns the label recorded, or None."""
        question = await self._question(channel, thread_ts)
        if question is None:
            return None  # not a thread the bot answered
        if by is not None and by != question["user_id"]:
            return None  # only the asker can say their question was answered
        raw: list[dict] = []
        cursor = None
        while len(raw) < MAX_REPLIES:
            page = await client.conversations_replies(channel=channel, ts=thread_ts, limit=200,
                                                      **({"cursor": cursor} if cursor else {}))
            raw.extend(page.get("messages", []))
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        messages = [m for m in map(slack_message, raw) if m is not None]
        resolver = await asyncio.to_thread(self.resolver)
        label = label_thread(messages, lambda url: docs_entry(resolver, url) is not None,
                             asked=(question["user_id"], question["text"]))
        if label is None or label.strength < STRONG:
            return None
        key = f"resolved:{channel}:{thread_ts}:{label.answer_ts}"
        async with self._recording:
            if not await asyncio.to_thread(self.coordination.claim_event, key, THREAD_TTL):
                return None
            try:
                return await self._record(client, channel, thread_ts, question, label, resolver)
            except BaseException:
                await asyncio.to_thread(self.coordination.release_event, key)  # the next ✅ or thanks tries again
                raise

    async def _record(self, client, channel: str, thread_ts: str, question: dict, label: ThreadLabel,
                      resolver: Resolver) -> ThreadLabel:
        """Labels on the bot's question (replacing an earlier read's), then the thread's document."""
        rows = [{"target": docs_entry(resolver, url), "value": label.strength, "user_id": label.answerer}
                for url in label.links]
        self.qa.feedback.record([FeedbackStore.labels_op(question["id"], "thread", rows)])
        where, public = await self._place(client, channel)
        if not public:
            log.info("resolved thread recorded: %d linked sections (not a public channel: no document)", len(rows))
            return label
        try:
            link = (await client.chat_getPermalink(channel=channel, message_ts=thread_ts)).get("permalink")
        except Exception as exc:  # the labels are kept; the document needs the thread's address
            log.info("no permalink for a resolved thread in %s: %s", channel, exc.__class__.__name__)
            return label
        if link:
            searcher = self.qa.answerer.searcher
            await asyncio.to_thread(add_thread_document, searcher.store, searcher.embedder, self.settings, url=link,
                                    channel=channel, thread_ts=thread_ts, question=question["text"],
                                    answer=label.answer, users=[label.asker, label.answerer], where=where)
        log.info("resolved thread in %s recorded: %d linked sections", where, len(rows))
        return label

    async def _place(self, client, channel: str) -> tuple[str, bool]:
        """A readable name of the channel, and whether it is public (only then is a thread shown to others)."""
        try:
            info = (await client.conversations_info(channel=channel)).get("channel") or {}
        except Exception as exc:  # unknown: treated as private
            log.info("no channel info for %s: %s", channel, exc.__class__.__name__)
            return "a channel", False
        public = bool(info.get("is_channel")) and not any(info.get(k) for k in ("is_private", "is_im", "is_mpim",
                                                                                  "is_group"))
        name = info.get("name")
        return (f"#{name}" if name else "a channel"), public
