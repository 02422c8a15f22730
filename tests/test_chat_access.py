"""Who may use the local chat, who they are, and how much their feedback counts: real HTTP on
127.0.0.1 to deepmem's server (build_web_app), `deepmem serve` in a subprocess for start-up."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import aiohttp
import pytest
from click.testing import CliRunner

from bot.server import build_runtime
from shared.cli import cli
from shared.deep_memory.feedback_data import FeedbackPolicy, labeled_questions
from shared.errors import ConfigError
from shared.settings import load_settings

from .helpers.serving import listening

pytestmark = pytest.mark.fault

TOKEN = "s3cret-chat-token"
QUESTION = "How do I create an AUTOINCREMENT column?"


@contextlib.asynccontextmanager
async def chat(**overrides):
    """deepmem's web server with these settings, listening on 127.0.0.1 (whatever host the settings name)."""
    runtime = build_runtime(load_settings(retrain_cron="off", **overrides))
    async with listening(runtime) as base, \
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield Client(runtime, session, base)


class Client:
    def __init__(self, runtime, session, url):
        self.runtime, self.session, self.url = runtime, session, url
        self.page_token = None

    async def get(self, path="/", *, auth=None, visitor=None, headers=None):
        h = dict(headers or {})
        if auth:
            h["Authorization"] = auth
        if visitor:
            h["Cookie"] = f"deepmem_visitor={visitor}"
        async with self.session.get(self.url + path, headers=h, allow_redirects=False) as r:
            text = await r.text()
            if path == "/" and r.status == 200:
                self.page_token = re.search(r'name="deepmem-token" content="([^"]+)"', text).group(1)
            return r.status, text, r.headers

    async def post(self, path, body, *, auth=None, visitor=None, headers=None):
        h = {"Content-Type": "application/json", "X-Deepmem-Token": self.page_token or ""} | dict(headers or {})
        if auth:
            h["Authorization"] = auth
        if visitor:
            h["Cookie"] = f"deepmem_visitor={visitor}"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.post(self.url + path, data=data, headers=h) as r:
            return r.status, await r.json(content_type=None)


def basic(password: str, user: str = "anyone") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


BEARER = f"Bearer {TOKEN}"


# -- exposure is explicit -------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5"])
def test_listening_beyond_loopback_without_access_control_is_refused(host):
    result = CliRunner().invoke(cli, ["serve", "--host", host])
    assert result.exit_code == 1
    message = result.output.strip()
    assert message.count("\n") == 0 and "Traceback" not in message
    assert f"refusing to serve the local chat on {host} without access control" in message
    assert "DEEPMEM_CHAT_TOKEN" in message and "DEEPMEM_CHAT_USER_HEADER" in message


def test_where_the_chat_is_mounted():
    from bot.server import chat_mounted

    assert chat_mounted(load_settings())  # loopback: the operator's chat
    assert chat_mounted(load_settings(host="0.0.0.0", chat_token=TOKEN))
    assert chat_mounted(load_settings(host="0.0.0.0", chat_user_header="X-Remote-User"))
    # Slack over HTTP is reached from outside: the chat only with an access control, wherever it listens
    http_slack = dict(slack_bot_token="xoxb-t", slack_signing_secret="s")
    assert not chat_mounted(load_settings(**http_slack))
    assert not chat_mounted(load_settings(host="0.0.0.0", **http_slack))
    assert chat_mounted(load_settings(host="0.0.0.0", chat_token=TOKEN, **http_slack))
    # Socket Mode opens no public endpoint: the chat as without Slack
    socket = dict(slack_bot_token="xoxb-t", slack_app_token="xapp-t")
    assert chat_mounted(load_settings(**socket))
    with pytest.raises(ConfigError, match="refusing"):
        chat_mounted(load_settings(host="0.0.0.0", **socket))


async def test_in_slack_http_mode_the_chat_is_served_only_with_access_control(store_copy):
    http_slack = dict(slack_bot_token="xoxb-t", slack_signing_secret="s", slack_api_url="http://127.0.0.1:9/api/")
    async with chat(**http_slack) as c:
        assert (await c.get("/"))[0] == 404
        assert (await c.get("/healthz"))[0] == 200
    async with chat(chat_token=TOKEN, **http_slack) as c:
        assert (await c.get("/"))[0] == 401
        assert (await c.get("/", auth=BEARER))[0] == 200


async def test_beyond_loopback_every_request_needs_the_token_and_a_known_host(store_copy):
    async with chat(host="0.0.0.0", chat_token=TOKEN, chat_hosts="chat.example.com") as c:
        status, _, headers = await c.get("/")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")  # the browser asks once
        assert (await c.get("/", auth=basic("wrong")))[0] == 401
        assert (await c.get("/", auth="Bearer wrong"))[0] == 401
        assert (await c.get("/", auth="Basic !!not-base64"))[0] == 401
        assert (await c.get("/", auth=basic(TOKEN)))[0] == 200
        assert (await c.get("/", auth=BEARER))[0] == 200
        # DNS rebinding: a name nobody configured is refused even with the token; addresses are fine
        assert (await c.get("/", auth=BEARER, headers={"Host": "attacker.example"}))[0] == 403
        assert (await c.get("/", auth=BEARER, headers={"Host": "chat.example.com"}))[0] == 200
        assert (await c.get("/", auth=BEARER, headers={"Host": "10.0.0.7:8765"}))[0] == 200
        # the API needs the token too, and the page's token on top
        assert (await c.post("/api/ask", {"question": QUESTION}))[0] == 401
        c.page_token, token = None, c.page_token
        assert (await c.post("/api/ask", {"question": QUESTION}, auth=BEARER))[0] == 403
        c.page_token = token
        status, answer = await c.post("/api/ask", {"question": QUESTION}, auth=BEARER, visitor="v1")
        assert status == 200 and answer["question_id"]
        assert (await c.get("/healthz"))[0] == 200  # says nothing: open
    user = c.runtime.feedback.questions()[0]["user_id"]
    assert re.fullmatch(r"web:anon:[0-9a-f]{16}:v1", user)  # unauthenticated: a client and a cookie


async def test_a_trusted_proxy_names_the_user_and_nobody_else_can(store_copy):
    async with chat(host="0.0.0.0", chat_user_header="X-Remote-User") as c:
        assert (await c.get("/"))[0] == 401
        assert (await c.get("/", headers={"X-Remote-User": "alice@example.com"}))[0] == 200
        status, _ = await c.post("/api/ask", {"question": QUESTION}, headers={"X-Remote-User": "alice@example.com"})
        assert status == 200
        assert (await c.get("/", headers={"X-Remote-User": "x" * 500}))[0] == 400
    assert c.runtime.feedback.questions()[0]["user_id"] == "web:user:alice@example.com"
    # the header is believed only from the proxy's address: here the proxy is elsewhere
    async with chat(host="0.0.0.0", chat_user_header="X-Remote-User", chat_trusted_proxies="10.9.9.9") as c:
        assert (await c.get("/", headers={"X-Remote-User": "alice@example.com"}))[0] == 401


async def test_on_loopback_only_this_machine_is_answered(store_copy):
    async with chat() as c:
        assert (await c.get("/"))[0] == 200
        assert (await c.get("/", headers={"Host": "attacker.example"}))[0] == 403  # DNS rebinding
        assert (await c.get("/", headers={"Host": "10.0.0.7"}))[0] == 403
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):  # came through a proxy
            status, text, _ = await c.get("/", headers={header: "203.0.113.7"})
            assert status == 403 and "DEEPMEM_CHAT_TOKEN" in text


async def test_each_client_is_rate_limited(store_copy):
    async with chat(host="0.0.0.0", chat_token=TOKEN, chat_rate=5) as c:
        one = {"X-Forwarded-For": "203.0.113.7"}  # a client behind the (trusted, loopback) proxy
        assert [(await c.get("/", auth=BEARER, headers=one, visitor=f"v{i}"))[0] for i in range(6)] == [200] * 5 + [429]
        assert (await c.get("/", auth=BEARER, headers={"X-Forwarded-For": "198.51.100.9"}))[0] == 200
        # a forged X-Forwarded-For from a client that is not a trusted proxy changes nothing
    async with chat(host="0.0.0.0", chat_token=TOKEN, chat_rate=3, chat_trusted_proxies="") as c:
        statuses = [(await c.get("/", auth=BEARER, headers={"X-Forwarded-For": f"198.51.100.{i}"}))[0]
                    for i in range(4)]
        assert statuses == [200, 200, 200, 429]


# -- finding 11: bad bodies are a 400 with a message ----------------------------------------------

async def test_malformed_chat_requests_are_400_with_a_message(store_copy):
    async with chat() as c:
        await c.get("/")
        bad = {
            b'{"question": "What is WAL?", "thread": 5}': "thread must be a list",
            b'{"question": "What is WAL?", "thread": [["user", "a"], ["system", "b"]]}': "role 'user' or 'assistant'",
            b'{"question": "What is WAL?", "thread": [["user", "' + b"x" * 9000 + b'"]]}': "at most 8000",
            b'{"question": "\\ud800 What is WAL?"}': "lone surrogate",
            b'{"question": "What is WAL?", "thread": [["user", "\\udfff"]]}': "thread must be",
            b'{"question": 5}': "the question is empty",
            b"[" * 100_000 + b"]" * 100_000: "the body must be JSON",
            b"\xff\xfe": "the body must be JSON",
        }
        for body, message in bad.items():
            status, data = await c.post("/api/ask", body)
            assert status == 400 and message in data["error"], (body[:40], data)
        for body, message in {b'{"question_id": [], "value": 1}': "question_id must be a string",
                              b'{"question_id": {"a": 1}, "value": 1}': "question_id must be a string",
                              b'{"question_id": "q", "value": true}': "value must be 1, -1 or 0",
                              b'{"question_id": "q", "value": 2}': "value must be 1, -1 or 0"}.items():
            status, data = await c.post("/api/vote", body)
            assert status == 400 and message in data["error"], (body, data)
        assert c.runtime.feedback.questions() == [] and c.runtime.feedback.events() == []


# -- finding 4: forged identities cannot steer retrieval -------------------------------------------

def rank_of(runtime, question: str, chunk_id: str) -> int | None:
    runtime.feedback.drain(5)
    runtime.memory.refresh()
    hits = runtime.qa.answerer.searcher.search(question, 20).hits
    return next((i + 1 for i, h in enumerate(hits) if h.chunk.id == chunk_id), None)


async def test_forged_clicks_from_many_cookies_of_one_client_do_not_move_a_chunk(store_copy):
    async with chat(host="0.0.0.0", chat_token=TOKEN) as c:
        attacker = {"X-Forwarded-For": "203.0.113.7"}
        await c.get("/", auth=BEARER, headers=attacker)
        status, answer = await c.post("/api/ask", {"question": QUESTION}, auth=BEARER, headers=attacker, visitor="v0")
        assert status == 200
        target = max(answer["more"], key=lambda s: s["rank"])  # the lowest-ranked section retrieved
        assert target["rank"] == 13 and target["href"]
        rephrased = "how can I make a column autoincrement"
        before = rank_of(c.runtime, QUESTION, target["chunk_id"])
        before_rephrased = rank_of(c.runtime, rephrased, target["chunk_id"])
        assert before is None or before > 10
        for i in range(1, 8):  # one person, seven made-up identities, seven clicks on it
            status, _, headers = await c.get(target["href"], auth=BEARER, headers=attacker, visitor=f"forged{i}")
            assert status == 302 and headers["Location"] == target["url"]
        assert rank_of(c.runtime, QUESTION, target["chunk_id"]) == before
        assert rank_of(c.runtime, rephrased, target["chunk_id"]) == before_rephrased
        clicks = [e for e in c.runtime.feedback.events() if e["kind"] == "source_click"]
        assert len(clicks) == 7  # recorded, all of them: they just count as one unauthenticated user
        # a second client agreeing is a quorum: then the label acts (weighting, not a switch-off)
        status, _, _ = await c.get(target["href"], auth=BEARER, headers={"X-Forwarded-For": "198.51.100.9"},
                                   visitor="w1")
        assert status == 302
        assert rank_of(c.runtime, QUESTION, target["chunk_id"]) == 1


def test_cookie_identities_of_one_client_count_as_one_user():
    def click(question, user, chunk="a", rank=5, at="2026-01-01"):
        return {"question_id": question, "question": f"text {question}", "chunk_id": chunk, "label": 1,
                "kind": "click", "user_id": user, "rank": rank, "occurred_at": at}

    row_of = {"a": 1, "b": 2}
    # one unauthenticated client with five cookies: below the quorum of two clients, nothing counts
    one_client = [click("q1", f"web:anon:c1:v{i}") for i in range(5)]
    assert labeled_questions(one_client, row_of) == []
    # two clients: each counts once (the mean of its cookies), whatever the number of cookies
    two = one_client + [click("q1", "web:anon:c2:w1")]
    (q,) = labeled_questions(two, row_of)
    assert q.positives == {1: 10.0} and q.users == {"web:anon:c1", "web:anon:c2"}
    # authenticated users are people: each counts, no quorum
    (q,) = labeled_questions([click("q1", "U1"), click("q1", "U2")], row_of)
    assert q.positives == {1: 10.0}
    assert labeled_questions([click("q1", "U1")], row_of)[0].positives == {1: 5.0}
    # the operator on loopback with many cookies is one user
    (q,) = labeled_questions([click("q1", f"local:root:v{i}") for i in range(5)], row_of)
    assert q.positives == {1: 5.0}
    # the per-user cap counts a client, not its cookies: 60 questions from 60 cookies, two clients
    many = [click(f"s{i:02d}", f"web:anon:{c}:v{i}", at=f"2026-01-01T00:{i:02d}") for c in ("c1", "c2")
            for i in range(60)]
    out = labeled_questions(many, row_of, FeedbackPolicy(per_user_cap=50))
    assert sorted(q.question_id for q in out) == [f"s{i:02d}" for i in range(10, 60)]  # each client's latest 50


# -- the banner says where it really listens ------------------------------------------------------

def test_serve_beyond_loopback_prints_the_real_address_and_asks_for_the_token(store_copy):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "OPENAI_", "DEEPMEM_"))}
    env |= {"DEEPMEM_HOME": str(store_copy.path.parent), "DEEPMEM_CHAT_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1",
            "DEEPMEM_RETRAIN_CRON": "off"}
    proc = subprocess.Popen([sys.executable, "-c", "from shared.cli import main; main()", "serve", "--host", "0.0.0.0",
                             "--port", "0"], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        lines = []
        deadline = time.time() + 120
        while time.time() < deadline and not any("answers requests with" in line for line in lines):
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise AssertionError("serve exited: " + "".join(lines))
            lines.append(line)
        url = next(line for line in lines if "local chat on" in line).strip().rsplit(" ", 1)[-1]
        assert re.fullmatch(r"http://0\.0\.0\.0:\d+/", url), lines
        assert any("the shared token DEEPMEM_CHAT_TOKEN" in line for line in lines)
        local = url.replace("0.0.0.0", "127.0.0.1")
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(local, timeout=30)
        assert denied.value.code == 401
        request = urllib.request.Request(local, headers={"Authorization": BEARER})
        with urllib.request.urlopen(request, timeout=30) as page:
            assert page.status == 200 and "deepmem-token" in page.read().decode()
        assert TOKEN not in "".join(lines)  # the token is never printed
    finally:
        proc.terminate()
        proc.wait(60)
