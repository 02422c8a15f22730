"""The Slack app: slack-bolt's AsyncApp with deepmem's listeners.

- A mention, a DM, a follow-up in a thread the bot answered, or `/ask` gets an answer in the
  thread: the text, the sources as link buttons, "Did this answer your question?" Yes / No.
- Each channel answers as configured (``shared.channels``, `deepmem channels`, `/deepmem`): from
  its collections, when mentioned / at every question-like message / never, in the thread or
  privately to the asker (chat.postEphemeral). DMs and `/ask` use the default settings.
- When the docs do not cover a question the answer says so and offers "Ask an expert", which tags
  the channel's experts in the thread, once (``bot.escalation``); a No or 👎 with no better section
  to offer does the same.
- Buttons, source clicks and reactions on an answer become feedback events (Yes / No and the 👍 / 👎
  buttons of older answers are votes). After a No or 👎 (button or reaction) the user is shown,
  privately in the thread, the retrieved sections the answer did not show: a click on the right one
  tells what the answer should have been.
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

from shared.channels import ChannelSettings, LiveChannelConfig, open_channel_config
from shared.coordination import Coordination, MemoryCoordination
from shared.errors import ConfigError
from shared.history import RESOLVED_REACTIONS, THANKS, is_question
from shared.home import Home
from shared.qa import QAService, reaction_value
from shared.settings import Settings

from . import outgoing
from .admin_command import register_admin_command
from .blocks import ESCALATE, VOTE_ACTIONS, answer_blocks, answer_text, other_sources_blocks, parse_value
from .escalation import Escalation
from .inflight import InFlight
from .resolved_threads import ResolvedThreads

__all__ = ["build_slack_app", "signing_secret", "MAX_QUESTION"]

log = logging.getLogger("deepmem.bot")
SIGNATURE_TTL = 10 * 60  # seconds a request's signature is remembered (Bolt refuses older timestamps anyway)
MAX_QUESTION = 2000  # characters of a question that are answered (the local chat refuses longer ones)
ESCALATION_CLAIM = 120.0  # seconds one replica holds a thread's escalation while it tags and records it
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
    resolved = ResolvedThreads(qa, settings, coordination)
    channel_config = LiveChannelConfig(open_channel_config(Home.open(settings.home), settings), on_error=log.warning)

    async def settings_for(channel: str) -> ChannelSettings:
        """A channel's settings; a direct message's are the default. (In a thread: with replicas, asking
        the database whether it changed is a query, at most once a second.)"""
        config = await asyncio.to_thread(channel_config.current)
        return config.default if channel.startswith("D") else config.for_channel(channel)

    # -- deliveries and thread state, shared with the other replicas -----------------------
    async def first_time(key: str, ttl: float | None = None) -> bool:
        """Whether this is the first delivery of ``key`` to any replica (only the first is handled)."""
        return await asyncio.to_thread(coordination.claim_event, key, ttl)

    # one replica at a time tags a thread's experts (the feedback log then says it was done)
    escalation = Escalation(qa, channel_config, claim=lambda key: first_time(key, ESCALATION_CLAIM),
                            release=lambda key: asyncio.to_thread(coordination.release_event, key))

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
                     key: str, history=(), scope: ChannelSettings, unasked: bool = False):
        """``unasked``: a question posted in an all-mode channel, not to the bot: answered only when
        the docs cover it (the bot does not interrupt people to say it does not know)."""
        private = scope.ephemeral and not channel.startswith("D")  # a DM is private already

        async def say(text: str, blocks=None):
            if private:
                return await outgoing.post_ephemeral(client, channel=channel, user=user, thread_ts=thread_ts,
                                                     text=text, blocks=blocks)
            return await outgoing.post_message(client, channel=channel, thread_ts=thread_ts, text=text, blocks=blocks)

        if not text:
            await say("Ask me a question about the documentation.")
            return
        try:
            asked = await asyncio.to_thread(qa.ask, text, source="slack", user_id=user, team_id=team,
                                            channel_id=channel, thread_ts=thread_ts, dedupe_key=key,
                                            history=list(history), collections=list(scope.collections) or None)
        except ConfigError as exc:  # a collection removed from the store since the channel was configured
            log.warning("channel %s: %s", channel, exc)
            await say(f"This channel is set to answer from collections the docs do not have ({exc}). A workspace "
                      f"admin can change them with /deepmem channel collections.")
            return
        except Exception:
            log.exception("answering failed")
            await say("Sorry, something went wrong while answering. Please try again.")
            return
        if unasked and not asked.answer.covered:
            return  # recorded (an unanswered question for the docs team), not posted
        # every replica answers follow-ups in this thread from now on: known before the answer is posted, so a
        # reply to it (at any replica) can never come first
        await asyncio.to_thread(coordination.remember_thread, channel, thread_ts, question_id=asked.question_id)
        response = await say(answer_text(asked.answer), answer_blocks(asked.question_id, asked.answer))
        ts = None if private else response.get("ts")  # an ephemeral message cannot be reacted to
        if isinstance(ts, str) and ts:
            await asyncio.to_thread(qa.posted, asked.question_id, ts)
            # and every replica finds the question of this message (a reaction on it)
            await asyncio.to_thread(coordination.remember_thread, channel, thread_ts, question_id=asked.question_id,
                                    message_ts=ts)

    # -- listeners -----------------------------------------------------------------------
    @app.event("app_mention")
    @track
    async def on_mention(body, event, client, context):
        if not await first_time(body.get("event_id") or event.get("client_msg_id") or event["ts"]):
            return
        thread_ts = event.get("thread_ts") or event["ts"]
        scope = await settings_for(event["channel"])
        if scope.mode == "off":
            await outgoing.post_ephemeral(client, channel=event["channel"], user=event.get("user"),
                                          thread_ts=event.get("thread_ts"),
                                          text="I do not answer in this channel (a workspace admin can change that "
                                               "with /deepmem channel mode).")
            return
        history = await history_of(client, event["channel"], thread_ts, event["ts"], context.bot_user_id) \
            if event.get("thread_ts") else []
        await answer(client, channel=event["channel"], thread_ts=thread_ts, text=_question_text(event.get("text")),
                     user=event.get("user"), team=body.get("team_id"), key=body.get("event_id") or event["ts"],
                     history=history, scope=scope)

    @app.event("message")
    @track
    async def on_message(body, event, client, context):
        if event.get("subtype") or not event.get("user"):
            return  # edits, joins, deletions, bots
        text = event.get("text") or ""
        if context.bot_user_id and f"<@{context.bot_user_id}>" in text:
            return  # the app_mention listener answers it
        in_dm = event.get("channel_type") == "im"
        scope = await settings_for(event["channel"])
        answering_here = scope.mode != "off"
        follow_up = answering_here and await bot_thread(event.get("channel"), event.get("thread_ts"))
        # mode "all": every question-like message posted in the channel (not replies in people's threads)
        asked_channel = scope.mode == "all" and not in_dm and not event.get("thread_ts") \
            and is_question(_question_text(text))
        # thanks in a thread: perhaps the asker saying a person's answer resolved it (any thread: the
        # bot may have answered it before a restart; ResolvedThreads looks that up)
        thanks = bool(event.get("thread_ts")) and bool(THANKS.search(text))
        asks = not thanks or is_question(_question_text(text))  # "thanks, that worked!" is not answered
        if in_dm and not answering_here and asks and await first_time(body.get("event_id") or event["ts"]):
            await outgoing.post_message(client, channel=event["channel"], thread_ts=event["ts"],
                                        text="I do not answer direct messages here (a workspace admin can change "
                                             "that with /deepmem default mode).")
            return
        if not (thanks or ((in_dm and answering_here or follow_up or asked_channel) and asks)):
            return
        if not await first_time(body.get("event_id") or event.get("client_msg_id") or event["ts"]):
            return
        if thanks:
            checking = resolved.on_thanks(client, event["channel"], event["user"], event["thread_ts"])
            if not ((in_dm and answering_here or follow_up or asked_channel) and asks):
                await checking
                return
        thread_ts = event.get("thread_ts") or event["ts"]
        history = await history_of(client, event["channel"], thread_ts, event["ts"], context.bot_user_id) \
            if event.get("thread_ts") else []
        answering = answer(client, channel=event["channel"], thread_ts=thread_ts, text=_question_text(text),
                           user=event["user"], team=body.get("team_id"), key=body.get("event_id") or event["ts"],
                           history=history, scope=scope, unasked=asked_channel and not follow_up)
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
        scope = (await asyncio.to_thread(channel_config.current)).default  # /ask answers as DMs do
        if scope.mode == "off":
            await outgoing.respond(respond, text="/ask is switched off (a workspace admin can change that with "
                                                 "/deepmem default mode).")
            return

        async def privately():
            try:
                asked = await asyncio.to_thread(qa.ask, text, source="slack", user_id=user, channel_id=channel,
                                                team_id=command.get("team_id"),
                                                collections=list(scope.collections) or None)
            except ConfigError as exc:
                await outgoing.respond(respond, text=f"The default collections are not in the docs ({exc}).")
                return
            await outgoing.respond(respond, text=answer_text(asked.answer),
                                   blocks=answer_blocks(asked.question_id, asked.answer))

        if scope.ephemeral:
            await privately()
            return
        try:
            posted = await outgoing.post_message(client, channel=channel,
                                                 text=outgoing.markup(outgoing.mention(user), " asked: ", text))
        except Exception as exc:  # the bot is not in the channel: answer only to the asker
            log.info("cannot post in %s (%s): answering privately", channel, exc.__class__.__name__)
            await privately()
            return
        await answer(client, channel=channel, thread_ts=posted["ts"], text=text, user=user,
                     team=command.get("team_id"), key=f"cmd:{command.get('trigger_id')}", scope=scope)

    app.command("/ask")(ack=ack_ask, lazy=[run_ask])
    register_admin_command(app, qa, channel_config, track, first_time)

    async def thread_of(question: str) -> str | None:
        thread_ts = await asyncio.to_thread(coordination.thread_of, question)
        if thread_ts:
            return thread_ts
        asked = await asyncio.to_thread(qa.question, question)  # an answer from before a restart
        return asked["thread_ts"] if asked else None

    async def offer_other_sources(client, question: str, user: str, channel: str | None, thread_ts: str | None,
                                  via: str):
        """After a No or 👎: the sections the answer did not show, privately; with none to offer, an expert."""
        if not channel or not await first_time(f"offered:{question}:{user}"):
            return
        try:
            thread_ts = thread_ts or await thread_of(question)
            if not thread_ts:
                return
            sources = await asyncio.to_thread(qa.other_sources, question)
            blocks = other_sources_blocks(question, sources)
            if blocks:
                await outgoing.post_ephemeral(client, channel=channel, user=user, thread_ts=thread_ts, blocks=blocks,
                                              text="Is the answer in one of these sections?")
            else:
                await escalation.escalate(client, question_id=question, user=user, channel=channel,
                                          thread_ts=thread_ts, via=via, quiet=True)
        except Exception as exc:  # the vote is recorded; the offer is a courtesy
            log.info("could not offer other sources: %s", exc.__class__.__name__)

    def where_clicked(body) -> tuple[str | None, str | None]:
        """(channel, thread) of the message a button is on (an ephemeral message has only its channel)."""
        message, container = body.get("message") or {}, body.get("container") or {}
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
        return channel, message.get("thread_ts") or message.get("ts") or container.get("thread_ts")

    def click_of(body) -> tuple[dict, str, str]:
        """The button clicked, who clicked it, and the click's key (the same for Slack's retries of it)."""
        action, user = body["actions"][0], body["user"]["id"]
        return action, user, f"{action.get('action_ts')}:{user}:{action['action_id']}"

    @app.action(re.compile("^(?:" + "|".join(VOTE_ACTIONS) + ")$"))
    @track
    async def on_vote(ack, body, client):
        """Yes / No, and the 👍 / 👎 buttons of answers posted before them: the same up / down votes."""
        await ack()
        action, user, key = click_of(body)
        question = _an_id(action.get("value"))
        value = VOTE_ACTIONS[action["action_id"]]
        if question is None or not await first_time(key):
            return
        via = "answered" if action["action_id"].startswith("answered_") else "button"
        await asyncio.to_thread(qa.vote, question, user, value, via=via, event_id=key)
        if value < 0:
            channel, thread_ts = where_clicked(body)
            await offer_other_sources(client, question, user, channel, thread_ts, via="no")

    @app.action(ESCALATE)
    @track
    async def on_escalate(ack, body, client):
        await ack()
        action, user, key = click_of(body)
        question = _an_id(action.get("value"))
        if question is None or not await first_time(key):
            return
        channel, thread_ts = where_clicked(body)
        try:
            await escalation.escalate(client, question_id=question, user=user, channel=channel,
                                      thread_ts=thread_ts or await thread_of(question), via="button")
        except Exception as exc:
            log.warning("could not ask the experts: %s", exc.__class__.__name__)

    @app.action(re.compile(r"^source_\d+$"))
    @track
    async def on_source(ack, body):
        await ack()
        action, user, key = click_of(body)
        data = parse_value(action.get("value"))
        question, chunk = _an_id(data.get("q")), _an_id(data.get("c"))
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
                await offer_other_sources(client, question, event["user"], item.get("channel"), None,
                                          via=f"reaction:{name}")
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
