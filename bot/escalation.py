"""Handing a question over to a person: "Ask an expert".

When the docs do not cover a question the answer offers an "Ask an expert" button; a No or 👎 with
no better section to offer asks for one too. The channel's experts (``shared.channels``: users
and user groups) are then tagged in the thread, once per thread: the escalation is recorded in
the feedback log as an ``escalated`` event whose id names the channel and thread, and checked
there first, so a second click, a second person or a restart never tags them again; while one
replica tags and records, it holds a claim on the thread (``shared.coordination``, in the database
with several replicas), so two clicks on two replicas at once tag once too. With no
experts configured the thread is told so, once too (a separate record: configuring experts later
lets the next click tag them). In a direct message nobody can be tagged into the conversation;
the asker is told whom to ask instead.
"""

from __future__ import annotations

import asyncio
import logging

from shared.channels import LiveChannelConfig
from shared.qa import QAService

from . import outgoing

__all__ = ["Escalation"]

log = logging.getLogger("deepmem.bot")
QUOTED = 300  # characters of the question quoted when the experts are tagged


class Escalation:
    def __init__(self, qa: QAService, channels: LiveChannelConfig, claim=None, release=None):
        """``claim``: an async function, True for the first claim of a key (across replicas);
        ``release``: an async function giving a claim back (tagging failed: the next click may try)."""
        self.qa = qa
        self.channels = channels
        self.claim = claim
        self.release = release
        self._deciding = asyncio.Lock()  # one escalation decided at a time: two clicks at once tag once

    async def escalate(self, client, *, question_id: str, user: str, channel: str | None, thread_ts: str | None,
                       via: str, quiet: bool = False) -> bool:
        """Tag the experts of the question's channel in its thread, unless that was done already;
        returns whether anything was posted. ``quiet``: say nothing to ``user`` when it was."""
        asked = await asyncio.to_thread(self.qa.question, question_id)
        if asked is None or channel and asked["channel_id"] and asked["channel_id"] != channel:
            return False  # a button on another channel's answer tags nobody here
        channel = asked["channel_id"] or channel
        thread_ts = asked["thread_ts"] or thread_ts
        if not channel:
            return False
        experts = (await asyncio.to_thread(self.channels.current)).for_channel(channel).experts
        tagged = bool(experts)
        where = thread_ts or question_id  # an answer shown only to the asker (/ask) has no thread
        key = self.qa.escalation_id(channel, where, tagged)
        async with self._deciding:
            claimed = self.claim is None or await self.claim(key)
            if not claimed or await asyncio.to_thread(self.qa.escalated, channel, where, tagged):
                if not quiet:
                    await outgoing.post_ephemeral(client, channel=channel, user=user, thread_ts=thread_ts,
                                                  text=self._already(experts))
                return False
            try:
                await outgoing.post_message(client, channel=channel, thread_ts=thread_ts,
                                            text=self._message(experts, asked, dm=channel.startswith("D")))
            except Exception:
                if self.release is not None:
                    await self.release(key)
                raise
            await asyncio.to_thread(self.qa.record_escalation, question_id, user, channel, where, tagged=tagged,
                                    via=via)
        return True

    @staticmethod
    def _tags(experts) -> list:
        tags = []
        for n, expert in enumerate(experts):
            tags += [outgoing.expert_mention(expert), " " if n < len(experts) - 1 else ""]
        return tags

    def _message(self, experts, asked: dict, dm: bool) -> str:
        if not experts:
            return ("I cannot tag anyone: who to ask is not configured for this channel. A workspace admin can set "
                    "it with `/deepmem channel experts @someone`.")
        question = " ".join((asked.get("text") or "").split())
        question = question if len(question) <= QUOTED else question[:QUOTED - 1] + "…"
        asker = outgoing.mention(asked["user_id"]) if asked.get("user_id") else "someone"
        if dm:
            return outgoing.markup("The docs do not seem to cover this. The people who know are ",
                                   *self._tags(experts), ": ask them in their channel.")
        return outgoing.markup(*self._tags(experts), ": the docs do not seem to cover this question from ", asker,
                               f": “{question}”. Can you help?")

    def _already(self, experts) -> str:
        if not experts:
            return "Who to ask is not configured for this channel (an admin can set it: /deepmem channel experts)."
        return outgoing.markup("The experts were already asked in this thread: ", *self._tags(experts), ".")
