"""A Slack Web API on 127.0.0.1 for the real slack_sdk client, plus signed requests to the app.

Records every call (method, form or JSON arguments, token) and answers like Slack does:
auth.test, chat.postMessage (returns a fresh ts), chat.postEphemeral, chat.update,
conversations.replies (returns the thread as the test seeded it; given the ts of a reply, the
thread it is in, as Slack does), conversations.info (``channels``: id -> name, public; others are
not found), users.info (``users``: id -> fields such as is_admin; others are not found),
chat.getPermalink (an archives URL of the message), and for Socket Mode
apps.connections.open (an app-level token gets a WebSocket URL on this server) and the WebSocket
itself: a hello on connect, then the envelopes a test sends, whose acknowledgements it records.
Faults: ``refuse_channels`` (chat.postMessage there fails with not_in_channel, as when the bot is
not in the channel), ``errors`` (a method answers with that error) and ``delay`` (seconds before
answering chat.postMessage: a slow Slack).

``Harness`` posts signed requests to a running deepmem server; ``serving`` runs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

BOT_USER = "UDEEPMEM"
BOT_ID = "BDEEPMEM"
TEAM = "T0001"


class SlackAPI:
    def __init__(self):
        self.calls: list[dict] = []
        self.threads: dict[str, list[dict]] = {}  # thread ts -> messages returned by conversations.replies
        self._ts = itertools.count(1)
        self.runner = None
        self.port = 0
        self.app_token = "xapp-1-test"  # the app-level token apps.connections.open accepts
        self.sockets: list[web.WebSocketResponse] = []
        self.acks: list[dict] = []  # what the app sent back over Socket Mode
        self.refuse_channels: set[str] = set()
        self.channels: dict[str, dict] = {"C1": {"name": "help-docs"}}  # id -> conversations.info fields
        self.users: dict[str, dict] = {}  # id -> users.info fields (is_admin, is_owner)
        self.errors: dict[str, str] = {}  # method -> the error it answers with (ok: false), until removed
        self.delay = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def posts(self, method: str = "chat.postMessage") -> list[dict]:
        return [c["args"] for c in self.calls if c["method"] == method]

    async def _handle(self, request: web.Request):
        method = request.match_info["method"]
        raw = await request.text()
        if request.method == "GET":
            args = dict(request.query)
        elif request.content_type == "application/json":
            args = json.loads(raw or "{}")
        else:
            args = dict(parse_qsl(raw))
        for key in ("blocks", "attachments"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        self.calls.append({"method": method, "args": args, "auth": request.headers.get("Authorization")})
        if method in self.errors:
            return web.json_response({"ok": False, "error": self.errors[method]})
        if method == "auth.test":
            return web.json_response({"ok": True, "url": "https://test.slack.com/", "team": "Test", "user": "deepmem",
                                      "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID})
        if method == "chat.postMessage" and args.get("channel") in self.refuse_channels:
            return web.json_response({"ok": False, "error": "not_in_channel"})
        if method == "chat.postMessage" and self.delay:
            await asyncio.sleep(self.delay)
        if method == "response":  # a slash command's response_url
            return web.Response(text="ok")
        if method in ("chat.postMessage", "chat.update"):
            ts = f"{int(time.time())}.{next(self._ts):06d}"
            self.calls[-1]["ts"] = ts
            message = {"ts": ts, "text": args.get("text"), "bot_id": BOT_ID, "user": BOT_USER}
            if args.get("thread_ts"):
                message["thread_ts"] = args["thread_ts"]
                self.threads.setdefault(args["thread_ts"], []).append(message)
            return web.json_response({"ok": True, "channel": args.get("channel"), "ts": ts, "message": message})
        if method == "chat.postEphemeral":
            return web.json_response({"ok": True, "message_ts": f"{int(time.time())}.{next(self._ts):06d}"})
        if method == "apps.connections.open":
            if request.headers.get("Authorization") != f"Bearer {self.app_token}":
                return web.json_response({"ok": False, "error": "invalid_auth"})
            return web.json_response({"ok": True, "url": f"ws://127.0.0.1:{self.port}/link/?ticket=t1"})
        if method == "conversations.replies":
            ts = args.get("ts")
            thread = self.threads.get(ts)
            if thread is None:  # the ts of a reply: the thread it is in
                thread = next((t for t in self.threads.values() if any(m.get("ts") == ts for m in t)), [])
            return web.json_response({"ok": True, "messages": thread, "has_more": False})
        if method == "conversations.info":
            channel = args.get("channel")
            if channel not in self.channels:
                return web.json_response({"ok": False, "error": "channel_not_found"})
            return web.json_response({"ok": True, "channel": {"id": channel, "is_channel": True, "is_private": False,
                                                              "is_im": False, "is_mpim": False}
                                      | self.channels[channel]})
        if method == "users.info":
            user = args.get("user")
            if user not in self.users:
                return web.json_response({"ok": False, "error": "user_not_found"})
            return web.json_response({"ok": True, "user": {"id": user, "is_admin": False, "is_owner": False}
                                      | self.users[user]})
        if method == "chat.getPermalink":
            channel, ts = args.get("channel"), args.get("message_ts") or ""
            return web.json_response({"ok": True, "channel": channel,
                                      "permalink": f"https://test.slack.com/archives/{channel}/p{ts.replace('.', '')}"})
        return web.json_response({"ok": False, "error": "unknown_method"})

    async def _socket(self, request: web.Request):
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0001"},
                            "debug_info": {"host": "loopback"}})
        async for message in ws:
            if message.type == web.WSMsgType.TEXT:
                self.acks.append(json.loads(message.data))
        self.sockets.remove(ws)
        return ws

    async def wait_socket(self, timeout: float = 10.0) -> web.WebSocketResponse:
        deadline = time.monotonic() + timeout
        while not self.sockets:
            if time.monotonic() > deadline:
                raise AssertionError("the app did not open a Socket Mode connection")
            await asyncio.sleep(0.02)
        return self.sockets[-1]

    async def send_envelope(self, kind: str, payload: dict, *, retry_attempt: int = 0, socket: int = -1) -> str:
        """Deliver an events_api / interactive / slash_commands envelope (over the connection ``socket``, in
        the order they opened: Slack picks one of an app's connections); returns its envelope id."""
        envelope_id = str(uuid.uuid4())
        await self.wait_socket()
        ws = self.sockets[socket]
        await ws.send_json({"envelope_id": envelope_id, "type": kind, "payload": payload,
                            "accepts_response_payload": kind != "events_api", "retry_attempt": retry_attempt,
                            "retry_reason": "timeout" if retry_attempt else ""})
        return envelope_id

    async def start(self) -> "SlackAPI":
        app = web.Application()
        app.router.add_get("/link/", self._socket)
        app.router.add_post("/api/{method}", self._handle)
        app.router.add_get("/api/{method}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()


def signed_headers(secret: str, body: str, *, timestamp: int | None = None, content_type="application/json") -> dict:
    ts = str(timestamp if timestamp is not None else int(time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature, "Content-Type": content_type}


def event_body(event: dict, event_id: str) -> str:
    return json.dumps({"token": "legacy", "team_id": TEAM, "api_app_id": "A0001", "type": "event_callback",
                       "event_id": event_id, "event_time": int(time.time()), "event": event,
                       "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}]})


class Harness:
    """Signed Events API, interactivity and slash-command requests to a deepmem server."""

    def __init__(self, runtime, api: SlackAPI, url: str, session, secret: str):
        self.runtime, self.api, self.url, self.session, self.secret = runtime, api, url, session, secret
        self.n = 0

    async def post(self, body: str, *, content_type="application/json", headers=None, sign=True, timestamp=None,
                   retry: int | None = None):
        h = signed_headers(self.secret, body, timestamp=timestamp, content_type=content_type) if sign else \
            {"Content-Type": content_type}
        if retry is not None:
            h |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        h |= headers or {}
        started = time.perf_counter()
        async with self.session.post(f"{self.url}/slack/events", data=body.encode(), headers=h) as r:
            return r.status, await r.text(), time.perf_counter() - started

    async def event(self, event: dict, event_id: str | None = None, **kw):
        self.n += 1
        return await self.post(event_body(event, event_id or f"Ev{self.n:04d}"), **kw)

    async def action(self, action_id: str, value: str, user="U_ALICE", action_ts=None, message: dict | None = None,
                     channel="C1", **kw):
        return await self.post(**action_request(action_id, value, user=user, action_ts=action_ts, message=message,
                                                channel=channel), **kw)

    async def command(self, text: str, *, user="U_CAROL", channel="C2", trigger_id="trig-1", name="/ask", **kw):
        body = urlencode({"command": name, "text": text, "user_id": user, "channel_id": channel, "team_id": TEAM,
                          "trigger_id": trigger_id, "response_url": f"{self.api.base_url}response"})
        return await self.post(body, content_type="application/x-www-form-urlencoded", **kw)

    async def wait_posts(self, count: int, method="chat.postMessage", timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.api.posts(method)) >= count:
                return self.api.posts(method)
            await asyncio.sleep(0.05)
        raise AssertionError(f"expected {count} {method} calls, got {len(self.api.posts(method))}")

    def feedback(self):
        return self.runtime.feedback


def action_request(action_id: str, value: str, user="U_ALICE", action_ts=None, message: dict | None = None,
                   channel="C1") -> dict:
    """The body and content type of a block action (a button pressed in Slack)."""
    payload = {"type": "block_actions", "team": {"id": TEAM}, "user": {"id": user}, "api_app_id": "A0001",
               "trigger_id": f"tr{time.time_ns()}", "container": {"type": "message"}, "message": message or {},
               "channel": {"id": channel}, "actions": [{"action_id": action_id, "block_id": "b", "value": value,
                                                    "type": "button",
                                                    "action_ts": action_ts or f"{time.time():.6f}"}]}
    return {"body": urlencode({"payload": json.dumps(payload)}), "content_type": "application/x-www-form-urlencoded"}


@contextlib.asynccontextmanager
async def serving(settings, secret: str, api: SlackAPI | None = None):
    """deepmem's server (``build_web_app``) on 127.0.0.1 with a loopback Slack; yields a Harness.
    Leaving it shuts the server down as ``deepmem serve`` does (listeners in flight, last drain)."""
    from bot.server import build_runtime, build_web_app

    own_api = api is None
    api = api or await SlackAPI().start()
    runtime = build_runtime(settings.model_copy(update={"slack_api_url": api.base_url}))
    runner = web.AppRunner(build_web_app(runtime))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            yield Harness(runtime, api, f"http://127.0.0.1:{port}", session, secret)
    finally:
        await runner.cleanup()
        runtime.coordination.close()
        if own_api:
            await api.stop()


@contextlib.asynccontextmanager
async def serving_bot(secret: str = "test-signing-secret", **settings):
    """The bot served over HTTP for a test: Slack over loopback, no nightly job."""
    from shared.settings import load_settings

    async with serving(load_settings(slack_bot_token="xoxb-test-token", slack_signing_secret=secret, port=0,
                                     retrain_cron="off", **settings), secret) as harness:
        yield harness
