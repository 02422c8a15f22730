"""Everything the bot sends to Slack goes through here, and is escaped here.

Slack reads ``<!channel>``, ``<!everyone>``, ``<@U…>``, ``<https://…|label>`` and ``&…;`` in
message text as control sequences. Document text, model output and people's words are untrusted,
so every string sent to Slack (a message's notification text, block texts, button labels,
ephemeral messages, responses to a slash command) is escaped in ``message`` below, and fitted to
Slack's limits after escaping (an escaped label can be longer than the raw one). The only markup
the bot sends on purpose is a mention of the person who asked, and of a channel's experts when
someone asks for one: ``mention`` and ``expert_mention`` build them from validated user and user
group ids, and ``markup`` joins them with escaped text.
"""

from __future__ import annotations

import copy
import re

__all__ = ["Markup", "escape", "mention", "expert_mention", "markup", "message", "post_message", "post_ephemeral",
           "respond"]

TEXT_LIMIT = 3000  # a message's text and a section block's text
BUTTON_LIMIT = 75  # a button's label
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")
GROUP_ID = re.compile(r"^S[A-Z0-9]{2,20}$")
_ENTITY_TAIL = re.compile(r"&[a-z]{0,4}$")


class Markup(str):
    """Text the bot composed as Slack markup itself (a mention of the asker): sent as it is."""


def escape(text: str) -> str:
    """Slack's three control characters: the text can then never ping, link or format by itself."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention(user_id: str) -> Markup:
    """``<@U…>`` for a real Slack user id; anything else is shown as escaped text."""
    return Markup(f"<@{user_id}>") if USER_ID.match(user_id or "") else Markup(escape(user_id or ""))


def expert_mention(expert_id: str) -> Markup:
    """``<@U…>`` for a user, ``<!subteam^S…>`` for a user group; anything else as escaped text."""
    if GROUP_ID.match(expert_id or ""):
        return Markup(f"<!subteam^{expert_id}>")
    return mention(expert_id)


def markup(*parts: str) -> Markup:
    """Join the bot's own markup with untrusted text, escaping the latter."""
    return Markup("".join(p if isinstance(p, Markup) else escape(p) for p in parts))


def _fit(text: str, limit: int) -> str:
    """Cut escaped text to ``limit`` characters without splitting an entity such as ``&amp;``."""
    if len(text) <= limit:
        return text
    cut = _ENTITY_TAIL.sub("", text[: limit - 1])
    return cut + "…"


def _safe(text, limit: int) -> str:
    if isinstance(text, Markup):
        return text if len(text) <= limit else _fit(escape(text), limit)  # never cut markup in half
    return _fit(escape(str(text)), limit)


def _escape_blocks(node, limit: int = TEXT_LIMIT):
    """Every text object in the blocks, escaped in place (the blocks are a copy)."""
    if isinstance(node, list):
        for item in node:
            _escape_blocks(item, limit)
    elif isinstance(node, dict):
        inner = BUTTON_LIMIT if node.get("type") == "button" else limit
        if node.get("type") in ("mrkdwn", "plain_text") and "text" in node:
            node["text"] = _safe(node["text"], limit)
        for key, value in node.items():
            if isinstance(value, (list, dict)):
                _escape_blocks(value, inner)


def message(text: str, blocks: list[dict] | None = None) -> dict:
    """The escaped ``text`` (and ``blocks``) of one message: the one place outgoing text is escaped."""
    out = {"text": _safe(text, TEXT_LIMIT)}
    if blocks is not None:
        out["blocks"] = copy.deepcopy(blocks)
        _escape_blocks(out["blocks"])
    return out


async def post_message(client, *, channel: str, text: str, blocks: list[dict] | None = None,
                       thread_ts: str | None = None):
    """chat.postMessage; links are never unfurled (a document's link must not pull in a preview)."""
    extra = {"thread_ts": thread_ts} if thread_ts else {}
    return await client.chat_postMessage(channel=channel, **message(text, blocks), unfurl_links=False,
                                         unfurl_media=False, **extra)


async def post_ephemeral(client, *, channel: str, user: str, text: str, blocks: list[dict] | None = None,
                         thread_ts: str | None = None):
    extra = {"thread_ts": thread_ts} if thread_ts else {}
    return await client.chat_postEphemeral(channel=channel, user=user, **message(text, blocks), **extra)


async def respond(respond_fn, *, text: str, blocks: list[dict] | None = None, ephemeral: bool = True):
    """A slash command's response_url (Bolt's ``respond``)."""
    return await respond_fn(**message(text, blocks), response_type="ephemeral" if ephemeral else "in_channel")
