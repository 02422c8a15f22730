"""The Slack app: slack-bolt's AsyncApp with deepmem's listeners.

- A mention, a DM, a follow-up in a thread the bot answered, or `/ask` gets an answer in the
  thread: the text, the sources as link buttons, 👍 / 👎 buttons.
- Buttons, source clicks and reactions on an answer become feedback events. After a 👎 (button
  or reaction) the user is shown, privately in the thread, the retrieved sections the answer did
  not show: a click on the right one tells what the answer should have been.
- In a thread the bot answered, when a person replies with links into the docs and the asker marks
  that reply resolved (a ✅ on it, or thanks in the thread), the thread is read again
  (``bot.resolved_threads``): its links become labels on the question, and in a public channel
  the answer becomes a citable document. Thanks that ask nothing is not answered.
- Slack is acknowledged at once; retrieval and generation run afterwards, off the event loop.
- A retried or duplicated delivery is answered once: events are claimed by their id in the
  coordination (``shared.coordination``), which every replica shares in Postgres mode, so a retry
  that reaches another replica is not answered again. The threads the bot answered are kept there
  too: a follow-up is recognised by any replica.
- The bot ignores itself (Bolt) and every other bot (a middleware here).
- Requests are verified by signature (Bolt: HMAC-SHA256, constant-time compare, 5-minute
  window), always: the app is never built without verification. Over HTTP that needs
  SLACK_SIGNING_SECRET; in Socket Mode (no HTTP requests from Slack) the app gets a random secret
  nobody knows, so a request that reaches it over HTTP anyway can never verify. A replayed
  request, same signature twice, is refused here.
- Every string sent to Slack goes through ``bot.outgoing``, which escapes it.
- Shutdown waits for the listeners in flight (``bot.inflight``): no answer or vote is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets

from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from shared.coordination import Coordination, MemoryCoordination
from shared.errors import ConfigError
from shared.history import RESOLVED_REACTIONS, THANKS, is_question
from shared.qa import QAService, reaction_value
from shared.settings import Settings

from . import outgoing
from .blocks import answer_blocks, other_sources_blocks, parse_value
from .inflight import InFlight
from .resolved_threads import ResolvedThreads

__all__ = ["build_slack_app", "signing_secret", "MAX_QUESTION"]

log = logging.getLogger("deepmem.bot")
SIGNATURE_TTL = 10 * 60  # seconds a request's signature is remembered (Bolt refuses older timestamps anyway)
MAX_QUESTION = 2000  # characters of a question that are answered (the local chat refuses longer ones)
MAX_ID = 128  # a question id, chunk id or user id in a button's value
MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>")
SURROGATE = re.compile("[\ud800-\udfff]")  # half of a UTF-16 pair: not text, cannot be stored
for noisy in ("slack_sdk", "slack_bolt", "sentence_transformers"):  # DEBUG logs with request bodies, model chatter
    logging.getLogger(noisy).setLevel(logging.WARNING)


def _question_text(text: str) -> str:
    """The words of a message without mentions, as valid UTF-8 (a lone surrogate becomes U+FFFD), bounded."""
    text = SURROGATE.sub("\ufffd", text if isinstance(text, str) else "")
    return " ".join(MENTION.sub(" ", text).split())[:MAX_QUESTION]


def _an_id(value) -> str | None:
    """A question or chunk id from a button's value: a short string, or nothing."""
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID and value.isprintable() else None


def _a_rank(value) -> int | None:
    """The rank a source was shown at: a positive integer (a forged value is dropped, not stored)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 10_000 else None


def signing_secret(settings: Settings) -> str:
    """The secret requests are verified with. There is no way to build the app without one."""
    if settings.slack_signing_secret is not None:
        return settings.slack_signing_secret.get_secret_value()  # never empty: settings refuse that
    if settings.slack_app_token is not None:
        return secrets.token_hex(32)  # Socket Mode: nothing can sign an HTTP request with this
    raise ConfigError("Slack over HTTP needs SLACK_SIGNING_SECRET (or set SLACK_APP_TOKEN for Socket Mode)")


def build_slack_app(settings: Settings, qa: QAService, in_flight: InFlight | None = None,
                    coordination: Coordination | None = None) -> AsyncApp:
    token = settings.slack_bot_token.get_secret_value()
    client = AsyncWebClient(token=token, base_url=settings.slack_api_url)
    app = AsyncApp(signing_secret=signing_secret(settings), client=client, request_verification_enabled=True,
                   logger=log)
    track = (in_flight if in_flight is not None else InFlight()).track
    coordination = coordination if coordination is not None else MemoryCoordination()
    resolved = ResolvedThreads(qa, settings)

    # -- deliveries and thread state, shared with the other replicas -----------------------
    async def first_time(key: str, ttl: float | None = None) -> bool:
        """Whether this is the first delivery of ``key`` to any replica (only the first is handled)."""
        return await asyncio.to_thread(coordination.claim_event, key, ttl)

    async def bot_thread(channel: str | None, thread_ts: str | None) -> bool:
        """Whether the bot (this replica or another) answered in this thread."""
        return bool(channel and thread_ts) and await asyncio.to_thread(coordination.is_bot_thread, channel,
                                                                       thread_ts)

    # -- middleware ----------------------------------------------------------------------
    @app.middleware
    async def refuse_replays(req, resp, next):
        signature = req.headers.get("x-slack-signature", [None])[0]
        if signature and not await first_time(f"signature:{signature}", SIGNATURE_TTL):
            return BoltResponse(status=401, body="replayed request")
        return await next()

    @app.middleware
    async def ignore_bots(body, next):
        event = body.get("event") or {}
        if event.get("bot_id") or event.get("subtype") == "bot_message":
            return BoltResponse(status=200, body="")
        return await next()

    # -- answering -----------------------------------------------------------------------
    async def history_of(client, channel: str, thread_ts: str, before_ts: str, bot_user: str | None):
        try:
            replies = await client.conversations_replies(channel=channel, ts=thread_ts, limit=30)
        except Exception as exc:  # missing scope or history: answer without it
            log.info("no thread history for %s: %s", channel, exc.__class__.__name__)
            return []
        turns = []
        for m in replies.get("messages", []):
            if m.get("ts") == before_ts:
                break
            role = "assistant" if (m.get("bot_id") or m.get("user") == bot_user) else "user"
            text = _question_text(m.get("text", ""))
            if text:
                turns.append((role, text))
        return turns

    async def answer(client, *, channel: str, thread_ts: str, text: str, user: str, team: str | None,
                     key: str, history=()):
        if not text:
            await outgoing.post_message(client, channel=channel, thread_ts=thread_ts,
                                        text="Ask me a question about the documentation.")
            return
        try:
            asked = await asyncio.to_thread(qa.ask, text, source="slack", user_id=user, team_id=team,
                                            channel_id=channel, thread_ts=thread_ts, dedupe_key=key,
                                            history=list(history))
        except Exception:
            log.exception("answering failed")
            await outgoing.post_message(client, channel=channel, thread_ts=thread_ts,
                                        text="Sorry, something went wrong while answering. Please try again.")
            return
        response = await outgoing.post_message(client, channel=channel, thread_ts=thread_ts, text=asked.answer.text,
                                               blocks=answer_blocks(asked.question_id, asked.answer))
        ts = response.get("ts")
        if ts:
            await asyncio.to_thread(qa.posted, asked.question_id, ts)
        # every replica now answers follow-ups in this thread and finds the question of this message
        await asyncio.to_thread(coordination.remember_thread, channel, thread_ts, question_id=asked.question_id,
                                message_ts=ts if isinstance(ts, str) and ts else None)

    # -- listeners -----------------------------------------------------------------------
    @app.event("app_mention")
    @track
    async def on_mention(body, event, client, context):
        if not await first_time(body.get("event_id") or event.get("client_msg_id") or event["ts"]):
            return
        thread_ts = event.get("thread_ts") or event["ts"]
        history = await history_of(client, event["channel"], thread_ts, event["ts"], context.bot_user_id) \
            if event.get("thread_ts") else []
        await answer(client, channel=event["channel"], thread_ts=thread_ts, text=_question_text(event.get("text")),
                     user=event.get("user"), team=body.get("team_id"), key=body.get("event_id") or event["ts"],
                     history=history)

    @app.event("message")
    @track
    async def on_message(body, event, client, context):
        if event.get("subtype") or not event.get("user"):
            return  # edits, joins, deletions, bots
        text = event.get("text") or ""
        if context.bot_user_id and f"<@{context.bot_user_id}>" in text:
            return  # the app_mention listener answers it
        in_dm = event.get("channel_type") == "im"
        follow_up = await bot_thread(event.get("channel"), event.get("thread_ts"))
        # thanks in a thread: perhaps the asker saying a person's answer resolved it (any thread: the
        # bot may have answered it before a restart; ResolvedThreads looks that up)
        thanks = bool(event.get("thread_ts")) and bool(THANKS.search(text))
        asks = not thanks or is_question(_question_text(text))  # "thanks, that worked!" is not answered
        if not (thanks or ((in_dm or follow_up) and asks)):
            return
        if not await first_time(body.get("event_id") or event.get("client_msg_id") or event["ts"]):
            return
        if thanks:
            checking = resolved.on_thanks(client, event["channel"], event["user"], event["thread_ts"])
            if not ((in_dm or follow_up) and asks):
                await checking
                return
        thread_ts = event.get("thread_ts") or event["ts"]
        history = await history_of(client, event["channel"], thread_ts, event["ts"], context.bot_user_id) \
            if event.get("thread_ts") else []
        answering = answer(client, channel=event["channel"], thread_ts=thread_ts, text=_question_text(text),
                           user=event["user"], team=body.get("team_id"), key=body.get("event_id") or event["ts"],
                           history=history)
        if thanks:
            await asyncio.gather(checking, answering)
        else:
            await answering

    async def ack_ask(ack, command):
        text = (command.get("text") or "").strip()
        await ack(text="Looking that up…" if text else "Usage: /ask how do I …?")

    @track
    async def run_ask(command, client, respond):
        text = _question_text(command.get("text") or "")
        if not text or not await first_time(f"cmd:{command.get('trigger_id')}"):
            return
        channel, user = command["channel_id"], command["user_id"]
        try:
            posted = await outgoing.post_message(client, channel=channel,
                                                 text=outgoing.markup(outgoing.mention(user), " asked: ", text))
        except Exception as exc:  # the bot is not in the channel: answer only to the asker
            log.info("cannot post in %s (%s): answering privately", channel, exc.__class__.__name__)
            asked = await asyncio.to_thread(qa.ask, text, source="slack", user_id=user, channel_id=channel,
                                            team_id=command.get("team_id"))
            await outgoing.respond(respond, text=asked.answer.text,
                                   blocks=answer_blocks(asked.question_id, asked.answer))
            return
        await answer(client, channel=channel, thread_ts=posted["ts"], text=text, user=user,
                     team=command.get("team_id"), key=f"cmd:{command.get('trigger_id')}")

    app.command("/ask")(ack=ack_ask, lazy=[run_ask])

    async def offer_other_sources(client, question: str, user: str, channel: str | None, thread_ts: str | None):
        if not channel or not await first_time(f"offered:{question}:{user}"):
            return
        try:
            thread_ts = thread_ts or await asyncio.to_thread(coordination.thread_of, question)
            if not thread_ts:  # an answer from before a restart: its thread is in the feedback store
                rows = await asyncio.to_thread(qa.feedback.rows, "SELECT thread_ts FROM questions WHERE id = ?",
                                               [question])
                thread_ts = rows[0]["thread_ts"] if rows else None
            if not thread_ts:
                return
            sources = await asyncio.to_thread(qa.other_sources, question)
            blocks = other_sources_blocks(question, sources)
            if blocks:
                await outgoing.post_ephemeral(client, channel=channel, user=user, thread_ts=thread_ts, blocks=blocks,
                                              text="Is the answer in one of these sections?")
        except Exception as exc:  # the vote is recorded; the offer is a courtesy
            log.info("could not offer other sources: %s", exc.__class__.__name__)

    async def vote(ack, body, client, value: int):
        await ack()
        action = body["actions"][0]
        user = body["user"]["id"]
        question = _an_id(action.get("value"))
        key = f"{action.get('action_ts')}:{user}:{action['action_id']}"
        if question is None or not await first_time(key):
            return
        await asyncio.to_thread(qa.vote, question, user, value, via="button", event_id=key)
        if value < 0:
            message = body.get("message") or {}
            channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
            await offer_other_sources(client, question, user, channel,
                                      message.get("thread_ts") or message.get("ts"))

    @app.action("vote_up")
    @track
    async def on_up(ack, body, client):
        await vote(ack, body, client, +1)

    @app.action("vote_down")
    @track
    async def on_down(ack, body, client):
        await vote(ack, body, client, -1)

    @app.action(re.compile(r"^source_\d+$"))
    @track
    async def on_source(ack, body):
        await ack()
        action = body["actions"][0]
        user = body["user"]["id"]
        data = parse_value(action.get("value"))
        question, chunk = _an_id(data.get("q")), _an_id(data.get("c"))
        key = f"{action.get('action_ts')}:{user}:{action['action_id']}"
        if question and chunk and await first_time(key):
            await asyncio.to_thread(qa.source_click, question, user, chunk, _a_rank(data.get("r")), event_id=key)

    async def question_of(ts: str) -> str | None:
        question = await asyncio.to_thread(coordination.question_of, ts)
        if question:
            return question
        rows = await asyncio.to_thread(qa.feedback.rows, "SELECT id FROM questions WHERE message_ts = ?", [ts])
        return rows[0]["id"] if rows else None

    async def reaction(body, event, client, added: bool):
        item = event.get("item") or {}
        name = (event.get("reaction") or "").split("::", 1)[0]
        value = reaction_value(name)
        resolves = added and name in RESOLVED_REACTIONS
        if item.get("type") != "message" or not (value or resolves):
            return
        key = body.get("event_id") or f"{event.get('event_ts')}:{event.get('user')}:{name}:{added}"
        if not await first_time(key):
            return
        question = await question_of(item.get("ts"))
        if question and value:
            await asyncio.to_thread(qa.vote, question, event["user"], value if added else 0,
                                    via=f"reaction:{name}", event_id=key)
            if added and value < 0:
                await offer_other_sources(client, question, event["user"], item.get("channel"), None)
        elif not question and resolves:  # on someone's reply: perhaps the asker marking it resolved
            await resolved.on_reaction(client, item.get("channel"), event.get("user"), item.get("ts"))

    @app.event("reaction_added")
    @track
    async def on_reaction_added(body, event, client):
        await reaction(body, event, client, True)

    @app.event("reaction_removed")
    @track
    async def on_reaction_removed(body, event, client):
        await reaction(body, event, client, False)

    @app.error
    async def on_error(error, body):
        log.error("unhandled error in a Slack listener: %s", error.__class__.__name__)

    return app
