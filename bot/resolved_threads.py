"""Threads the bot answered and people resolved: labels, and a document others can be shown.

After the bot answers in a thread, a person may answer better. When someone other than the asker
replies with links into the docs and the asker marks that reply resolved (a ✅ reaction, or
thanks in the thread), the thread is read again and goes through the same extraction as the
history import (``shared.history.label_thread``): the linked sections become labels on the
bot's recorded question (they are what its answer should have found), and the question with the
person's answer becomes a resolved-thread document, citable with a link back to the thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading

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
    def __init__(self, qa: QAService, settings: Settings):
        self.qa = qa
        self.settings = settings
        self._resolver: tuple[int, Resolver] | None = None
        self._lock = threading.Lock()
        self._done: set[tuple[str, str, str]] = set()  # (channel, thread, answer) already recorded

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

    async def check(self, client, channel: str, thread_ts: str) -> ThreadLabel | None:
        """Read the thread; when a person's answer with docs links is marked resolved by the asker,
        record it (once). Returns the label recorded, or None."""
        question = await self._question(channel, thread_ts)
        if question is None:
            return None  # not a thread the bot answered
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
        key = (channel, thread_ts, label.answer_ts)
        if key in self._done:
            return None
        self._done.add(key)
        rows = [{"target": docs_entry(resolver, url), "value": label.strength, "user_id": label.answerer}
                for url in label.links]
        self.qa.feedback.record([FeedbackStore.labels_op(question["id"], "thread", rows)])
        try:
            link = (await client.chat_getPermalink(channel=channel, message_ts=thread_ts)).get("permalink")
        except Exception as exc:  # the labels are kept; the document needs the thread's address
            log.info("no permalink for a resolved thread in %s: %s", channel, exc.__class__.__name__)
            return label
        if link:
            where = await self._channel_name(client, channel)
            searcher = self.qa.answerer.searcher
            await asyncio.to_thread(add_thread_document, searcher.store, searcher.embedder, self.settings, url=link,
                                    channel=channel, thread_ts=thread_ts, question=question["text"],
                                    answer=label.answer, users=[label.asker, label.answerer], where=where)
        log.info("resolved thread in %s recorded: %d linked sections", channel, len(rows))
        return label

    async def _channel_name(self, client, channel: str) -> str:
        try:
            info = await client.conversations_info(channel=channel)
            name = (info.get("channel") or {}).get("name")
            return f"#{name}" if name else "a channel"
        except Exception:
            return "a channel"
