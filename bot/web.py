"""The local chat: the same answers, sources and feedback as Slack, in a browser, with no keys.

Served on 127.0.0.1 by default. A POST must carry the page's random token (another web site
cannot post to it), and the Host header must be this server (no DNS rebinding). Source links
go through /go/<question>/<n>, which records the click and redirects to the section. A 👎
answers with the retrieved sections the answer did not show, for the user to pick the right one.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from shared.qa import QAService

__all__ = ["add_chat_routes"]

PAGE = (Path(__file__).resolve().parent / "static" / "chat.html").read_text(encoding="utf-8")
MAX_QUESTION = 2000
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def add_chat_routes(app: web.Application, qa: QAService, *, bind_host: str) -> None:
    token = secrets.token_urlsafe(24)
    answers: dict[str, object] = {}  # question id -> Answer, for click redirects
    user = f"local:{getpass.getuser()}"

    def host_ok(request: web.Request) -> bool:
        host = (request.host or "").rsplit(":", 1)[0] if not (request.host or "").startswith("[") \
            else request.host.split("]")[0] + "]"
        return host in LOCAL_HOSTS or host == bind_host or bind_host in ("0.0.0.0", "::")

    def check(request: web.Request) -> None:
        if not host_ok(request):
            raise web.HTTPForbidden(text="unknown host")
        if request.method == "POST" and not secrets.compare_digest(request.headers.get("X-Deepmem-Token", ""), token):
            raise web.HTTPForbidden(text="missing or wrong token")

    def visitor(request: web.Request) -> str:
        vid = request.cookies.get("deepmem_visitor", "")
        return f"{user}:{vid}" if vid.isalnum() and len(vid) <= 32 else user

    async def page(request: web.Request):
        check(request)
        response = web.Response(text=PAGE.replace("{{TOKEN}}", token), content_type="text/html",
                                headers={"Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                                                    "style-src 'unsafe-inline'; frame-ancestors 'none'",
                                         "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})
        if "deepmem_visitor" not in request.cookies:
            response.set_cookie("deepmem_visitor", secrets.token_hex(8), httponly=True, samesite="Strict")
        return response

    async def body_of(request: web.Request) -> dict:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text=json.dumps({"error": "the body must be JSON"}),
                                     content_type="application/json") from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text=json.dumps({"error": "the body must be a JSON object"}),
                                     content_type="application/json")
        return data

    def error(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    async def ask(request: web.Request):
        check(request)
        data = await body_of(request)
        question = data.get("question")
        if not isinstance(question, str) or not question.strip():
            return error(400, "the question is empty")
        if len(question) > MAX_QUESTION:
            return error(400, f"the question is longer than {MAX_QUESTION} characters")
        thread = data.get("thread") or []
        history = [(t[0], t[1]) for t in thread if isinstance(t, list) and len(t) == 2
                   and t[0] in ("user", "assistant") and isinstance(t[1], str)][-10:]
        asked = await asyncio.to_thread(qa.ask, question.strip(), source="web", user_id=visitor(request),
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
        check(request)
        data = await body_of(request)
        qid, value = data.get("question_id"), data.get("value")
        if qid not in answers:
            return error(404, "unknown question")
        if value not in (1, -1, 0):
            return error(400, "value must be 1, -1 or 0")
        await asyncio.to_thread(qa.vote, qid, visitor(request), value, via="button")
        if value >= 0:
            return web.json_response({"ok": True})
        others = [s.to_dict() for s in answers[qid].other_sources]
        return web.json_response({"ok": True, "other_sources": [s | {"href": href(qid, s)} for s in others]})

    async def go(request: web.Request):
        check(request)
        qid = request.match_info["question"]
        answer = answers.get(qid)
        try:
            n = int(request.match_info["n"])
            source = next(s for s in [*answer.sources, *answer.more] if s.n == n) if answer else None
        except (ValueError, StopIteration):
            source = None
        if source is None or urlsplit(source.url).scheme not in ("http", "https"):
            raise web.HTTPNotFound(text="unknown source")
        await asyncio.to_thread(qa.source_click, qid, visitor(request), source.chunk_id, source.rank)
        raise web.HTTPFound(source.url)

    async def health(request: web.Request):
        return web.json_response({"ok": True})

    app.router.add_get("/", page)
    app.router.add_post("/api/ask", ask)
    app.router.add_post("/api/vote", vote)
    app.router.add_get("/go/{question}/{n}", go)
    app.router.add_get("/healthz", health)
