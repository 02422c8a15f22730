"""The local chat: the same answers, sources and feedback as Slack, in a browser, with no keys.

Who may use it (``check``):

- **Loopback, no access control** (the default): anyone on this machine, that is the operator. The
  Host header must name this machine (no DNS rebinding), and a request that came through a reverse
  proxy (Forwarded, X-Forwarded-For or X-Real-IP) is refused: the proxy would expose the chat.
- **DEEPMEM_CHAT_TOKEN**: every request carries the shared token, as the password of HTTP Basic
  authentication (the browser asks once) or as ``Authorization: Bearer TOKEN``.
- **DEEPMEM_CHAT_USER_HEADER**: a reverse proxy signs people in and names them in that header; the
  header is believed only from DEEPMEM_CHAT_TRUSTED_PROXIES (default: this machine).

``deepmem serve`` refuses to listen beyond loopback without one of the last two (``server``).
Beyond loopback the Host must be a loopback name, the address listened on, an IP address (DNS
rebinding needs a name) or a name in DEEPMEM_CHAT_HOSTS. A POST must also carry the page's random
token (another web site cannot post to it).

Identities: a user named by the proxy is ``web:user:NAME``. Everyone else is unauthenticated and
says who they are with a cookie: ``local:OSUSER:VISITOR`` on loopback, ``web:anon:CLIENT:VISITOR``
otherwise (CLIENT: a hash of the client's address). Feedback weighting counts all the visitors of
one client as one user (``shared.deep_memory.feedback_data``), and every client (or named user) is
rate-limited (DEEPMEM_CHAT_RATE requests a minute).

Source links go through /go/<question>/<n>, which records the click and redirects to the section.
A 👎 answers with the retrieved sections the answer did not show, for the user to pick the right one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import getpass
import hashlib
import ipaddress
import json
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from shared.qa import QAService
from shared.settings import Settings, is_loopback

from .ratelimit import RateLimit

__all__ = ["add_chat_routes", "MAX_QUESTION"]

PAGE = (Path(__file__).resolve().parent / "static" / "chat.html").read_text(encoding="utf-8")
MAX_QUESTION = 2000
MAX_TURNS = 50  # thread entries accepted (the last 10 are used)
MAX_TURN = 8000  # characters of one earlier turn
MAX_USER = 128  # characters of a user name from the proxy header
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                               "style-src 'unsafe-inline'; frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _bad(message: str, status: int = 400) -> web.HTTPException:
    kind = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden,
            429: web.HTTPTooManyRequests}[status]
    return kind(text=json.dumps({"error": message}), content_type="application/json")


def _valid_text(value) -> bool:
    """A string that is valid Unicode text (a lone surrogate cannot be stored or embedded)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]", 1)[0].lower()
    return (host.rsplit(":", 1)[0] if host.count(":") == 1 else host).lower()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class Access:
    """Who may use the chat and who they are (see the module docstring)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.bind = _hostname(settings.host)
        self.local_only = not settings.chat_access_control  # then serve() only listens on loopback
        self.token = settings.chat_token.get_secret_value().encode() if settings.chat_token else None
        self.header = settings.chat_user_header
        self.proxies = settings.trusted_proxies
        self.hosts = {h.lower() for h in settings.chat_hosts.split(",") if h}
        self.limit = RateLimit(settings.chat_rate)
        self.os_user = getpass.getuser()

    def _trusted(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address((address or "").split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in net for net in self.proxies)

    def host_ok(self, request: web.Request) -> bool:
        host = _hostname(request.host or "")
        if is_loopback(host) or host in self.hosts:
            return True
        if self.local_only:
            return False
        return host == self.bind or _is_ip(host)

    def client(self, request: web.Request) -> str:
        """The client's address: the peer, or what a trusted proxy says the peer was."""
        peer = request.remote or ""
        if self._trusted(peer):
            hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
            for hop in reversed(hops):  # the nearest hop a trusted proxy did not add
                if not self._trusted(hop):
                    return hop
        return peer

    def _token_ok(self, request: web.Request) -> bool:
        if self.token is None:
            return False
        kind, _, value = request.headers.get("Authorization", "").partition(" ")
        if kind.lower() == "bearer":
            given = value.strip().encode()
        elif kind.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                return False
        else:
            return False
        return secrets.compare_digest(given, self.token)

    def _proxy_user(self, request: web.Request) -> str | None:
        if not self.header or not self._trusted(request.remote):
            return None
        name = request.headers.get(self.header, "").strip()
        if not name:
            return None
        if len(name) > MAX_USER or not name.isprintable():
            raise _bad(f"the {self.header} header is not a user name", 400)
        return name

    def visitor(self, request: web.Request) -> str:
        """The user id of an allowed request; raises the HTTP error otherwise."""
        if not self.host_ok(request):
            raise _bad("unknown host: add it to DEEPMEM_CHAT_HOSTS", 403)
        user = self._proxy_user(request)
        if self.local_only:
            if any(h in request.headers for h in PROXY_HEADERS):
                raise _bad("this chat answers only on this machine: serving it through a proxy needs "
                           "DEEPMEM_CHAT_TOKEN or DEEPMEM_CHAT_USER_HEADER", 403)
        elif user is None and not self._token_ok(request):
            denied = _bad("sign in: this chat needs its token (DEEPMEM_CHAT_TOKEN)" if self.token else
                          "sign in through the proxy: no trusted user header", 401)
            if self.token:
                denied.headers["WWW-Authenticate"] = 'Basic realm="deepmem", charset="UTF-8"'
            raise denied
        client = self.client(request)
        if not self.limit.allow(f"user:{user}" if user else f"client:{client}"):
            raise _bad("too many requests: wait a minute", 429)
        if user:
            return f"web:user:{user}"
        cookie = request.cookies.get("deepmem_visitor", "")
        visitor = cookie if cookie.isascii() and cookie.isalnum() and len(cookie) <= 32 else ""
        if self.local_only:
            return f"local:{self.os_user}" + (f":{visitor}" if visitor else "")
        who = hashlib.sha256(f"deepmem-client:{client}".encode()).hexdigest()[:16]
        return f"web:anon:{who}" + (f":{visitor}" if visitor else "")


def add_chat_routes(app: web.Application, qa: QAService, settings: Settings) -> None:
    access = Access(settings)
    page_token = secrets.token_urlsafe(24)
    answers: dict[str, object] = {}  # question id -> Answer, for click redirects

    def check(request: web.Request) -> str:
        visitor = access.visitor(request)
        if request.method == "POST" and not secrets.compare_digest(
                request.headers.get("X-Deepmem-Token", "").encode(), page_token.encode()):
            raise _bad("missing or wrong token", 403)
        return visitor

    async def page(request: web.Request):
        check(request)
        response = web.Response(text=PAGE.replace("{{TOKEN}}", page_token), content_type="text/html",
                                headers=SECURITY_HEADERS)
        if "deepmem_visitor" not in request.cookies:
            response.set_cookie("deepmem_visitor", secrets.token_hex(8), httponly=True, samesite="Strict")
        return response

    async def body_of(request: web.Request) -> dict:
        try:
            data = json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise _bad("the body must be JSON") from None
        if not isinstance(data, dict):
            raise _bad("the body must be a JSON object")
        return data

    def history_of(thread) -> list[tuple[str, str]]:
        if thread is None:
            return []
        if not isinstance(thread, list) or len(thread) > MAX_TURNS:
            raise _bad(f"thread must be a list of at most {MAX_TURNS} [role, text] pairs")
        for turn in thread:
            if not (isinstance(turn, list) and len(turn) == 2 and turn[0] in ("user", "assistant")
                    and _valid_text(turn[1]) and len(turn[1]) <= MAX_TURN):
                raise _bad(f"thread must be a list of [role, text] pairs: role 'user' or 'assistant', "
                           f"text of at most {MAX_TURN} characters")
        return [(role, text) for role, text in thread][-10:]

    async def ask(request: web.Request):
        visitor = check(request)
        data = await body_of(request)
        question = data.get("question")
        if not isinstance(question, str) or not question.strip():
            raise _bad("the question is empty")
        if len(question) > MAX_QUESTION:
            raise _bad(f"the question is longer than {MAX_QUESTION} characters")
        if not _valid_text(question):
            raise _bad("the question is not valid text (it holds a lone surrogate)")
        history = history_of(data.get("thread"))
        asked = await asyncio.to_thread(qa.ask, question.strip(), source="web", user_id=visitor,
                                        history=history)
        answers[asked.question_id] = asked.answer
        while len(answers) > 5000:
            answers.pop(next(iter(answers)))
        out = asked.answer.to_dict() | {"question_id": asked.question_id}
        for s in out["sources"] + out["more"]:
            s["href"] = href(asked.question_id, s)
        return web.json_response(out)

    def href(qid: str, source: dict) -> str | None:
        return f"/go/{qid}/{source['n']}" if urlsplit(source["url"]).scheme in ("http", "https") else None

    async def vote(request: web.Request):
        visitor = check(request)
        data = await body_of(request)
        qid, value = data.get("question_id"), data.get("value")
        if not isinstance(qid, str):
            raise _bad("question_id must be a string")
        if isinstance(value, bool) or value not in (1, -1, 0):
            raise _bad("value must be 1, -1 or 0")
        if qid not in answers:
            return web.json_response({"error": "unknown question"}, status=404)
        await asyncio.to_thread(qa.vote, qid, visitor, value, via="button")
        if value >= 0:
            return web.json_response({"ok": True})
        others = [s.to_dict() for s in answers[qid].other_sources]
        return web.json_response({"ok": True, "other_sources": [s | {"href": href(qid, s)} for s in others]})

    async def go(request: web.Request):
        visitor = check(request)
        qid = request.match_info["question"]
        answer = answers.get(qid)
        try:
            n = int(request.match_info["n"])
            source = next(s for s in [*answer.sources, *answer.more] if s.n == n) if answer else None
        except (ValueError, StopIteration):
            source = None
        if source is None or urlsplit(source.url).scheme not in ("http", "https"):
            raise web.HTTPNotFound(text="unknown source")
        await asyncio.to_thread(qa.source_click, qid, visitor, source.chunk_id, source.rank)
        raise web.HTTPFound(source.url)

    async def health(request: web.Request):
        return web.json_response({"ok": True})

    app.router.add_get("/", page)
    app.router.add_post("/api/ask", ask)
    app.router.add_post("/api/vote", vote)
    app.router.add_get("/go/{question}/{n}", go)
    app.router.add_get("/healthz", health)
