"""The Slack side of the fault suite: forged, empty-secret, malformed and replayed requests; text that
tries to ping, link or format in Slack; work in flight at shutdown. Real slack-bolt and slack_sdk
against the loopback Slack Web API, real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
from urllib.parse import urlencode

import pytest
from aiohttp import web

from bot.server import build_runtime, build_web_app
from shared.errors import ConfigError
from shared.settings import load_settings

from .helpers.slack_api import BOT_USER, SlackAPI, action_request, event_body, serving, signed_headers

pytestmark = pytest.mark.fault

SECRET = "test-signing-secret"
PAYLOAD = ("<!channel>", "<!everyone>", "<@U123>", "<https://evil.example/x|docs>")
ASKER = "UCAROL01"


def mention(text, ts="1700000000.000100", user="U_ALICE", channel="C1"):
    return {"type": "app_mention", "user": user, "text": f"<@{BOT_USER}> {text}", "ts": ts, "channel": channel,
            "event_ts": ts}


def settings(**kw):
    return load_settings(slack_bot_token="xoxb-test-token", slack_signing_secret=SECRET, port=0, retrain_cron="off",
                         **kw)


@pytest.fixture
async def slack(store_copy):
    async with serving(settings(), SECRET) as harness:
        yield harness


# -- finding 1: an empty secret is an error; nothing forged gets in ------------------------------

@pytest.mark.parametrize("name", ["SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "OPENAI_API_KEY",
                                  "DEEPMEM_CHAT_TOKEN"])
@pytest.mark.parametrize("value", ["", "   ", "\n"])
def test_an_empty_or_blank_secret_is_a_one_line_error_naming_it(name, value, monkeypatch):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert name in str(err.value) and "empty" in str(err.value) and "\n" not in str(err.value)


def test_the_bot_token_only_travels_over_tls():
    for url in ("http://slack.example/api/", "ftp://slack.example/", "https:///api/", "http://user:pw@10.0.0.1/api/"):
        with pytest.raises(ConfigError) as err:
            load_settings(slack_api_url=url)
        assert "SLACK_API_URL must be an https:// URL" in str(err.value) and "pw" not in str(err.value)
    assert load_settings(slack_api_url="https://slack-gov.com/api").slack_api_url == "https://slack-gov.com/api/"
    assert load_settings(slack_api_url="http://127.0.0.1:8080/api/").slack_api_url == "http://127.0.0.1:8080/api/"


def test_serve_with_an_empty_signing_secret_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "OPENAI_", "DEEPMEM_"))}
    env |= {"DEEPMEM_HOME": str(tmp_path), "SLACK_BOT_TOKEN": "xoxb-real-looking", "SLACK_SIGNING_SECRET": "",
            "DEEPMEM_PORT": "0"}
    proc = subprocess.run([sys.executable, "-c", "from shared.cli import main; main()", "serve"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "SLACK_SIGNING_SECRET is set but empty" in proc.stderr
    assert "xoxb-real-looking" not in proc.stderr + proc.stdout  # the token is never printed


def test_there_is_no_way_to_build_the_http_app_without_a_secret():
    from bot.slack_app import signing_secret

    with pytest.raises(ConfigError, match="Slack over HTTP needs SLACK_SIGNING_SECRET"):
        signing_secret(load_settings(slack_bot_token="xoxb-t"))
    assert signing_secret(load_settings(slack_bot_token="xoxb-t", slack_signing_secret=" s3cret\n")) == "s3cret"
    socket = load_settings(slack_bot_token="xoxb-t", slack_app_token="xapp-t")
    first, second = signing_secret(socket), signing_secret(socket)
    assert len(first) == 64 and first != second  # Socket Mode: a random secret nobody can sign with


async def test_forged_unsigned_and_malformed_requests_get_401_and_change_nothing(slack):
    body = event_body(mention("How do I create an AUTOINCREMENT column?"), "EvFORGED")
    now = str(int(time.time()))
    empty_key = "v0=" + hmac.new(b"", f"v0:{now}:{body}".encode(), hashlib.sha256).hexdigest()
    attempts = {
        "unsigned": dict(sign=False),
        "a wrong signature": dict(headers={"X-Slack-Signature": "v0=" + "0" * 64}),
        "an empty signature": dict(headers={"X-Slack-Signature": ""}),
        "signed with an empty secret": dict(headers={"X-Slack-Signature": empty_key}),
        "a non-numeric timestamp": dict(headers={"X-Slack-Request-Timestamp": "yesterday"}),
        "a 5,000-digit timestamp": dict(headers={"X-Slack-Request-Timestamp": "9" * 5000}),
        "no timestamp": dict(sign=False, headers={"X-Slack-Signature": empty_key}),
        "a stale timestamp": dict(timestamp=int(time.time()) - 3600),
    }
    for what, kw in attempts.items():
        status, _, _ = await slack.post(body, **kw)
        assert status == 401, what
    vote = action_request("vote_up", "q-forged")
    assert (await slack.post(**vote, sign=False))[0] == 401
    assert (await slack.post(**vote, headers={"X-Slack-Request-Timestamp": "1e9"}))[0] == 401
    command = urlencode({"command": "/ask", "text": "hello", "user_id": "U1", "channel_id": "C1", "team_id": "T0001",
                         "trigger_id": "t-forged", "response_url": f"{slack.api.base_url}response"})
    assert (await slack.post(command, content_type="application/x-www-form-urlencoded", sign=False))[0] == 401
    await asyncio.sleep(1.0)
    assert slack.api.posts() == [] and slack.api.posts("chat.postEphemeral") == []
    assert slack.feedback().questions() == [] and slack.feedback().events() == []
    # the same request, signed with the real secret, is answered: the 401s were the signatures
    assert (await slack.post(body))[0] == 200
    await slack.wait_posts(1)


async def test_a_socket_mode_app_still_verifies_requests_over_http(store_copy):
    """Socket Mode needs no signing secret, but the app never turns verification off: a request that
    reaches it over HTTP (unsigned, or signed with an empty key) is refused."""
    from slack_bolt.request.async_request import AsyncBoltRequest

    from bot.slack_app import build_slack_app

    api = await SlackAPI().start()
    try:
        s = load_settings(slack_bot_token="xoxb-test-token", slack_app_token="xapp-1-test",
                          slack_api_url=api.base_url, retrain_cron="off")
        runtime = build_runtime(s)
        app = build_slack_app(s, runtime.qa)
        body = event_body(mention("How do I create an AUTOINCREMENT column?"), "EvSOCKETHTTP")
        now = str(int(time.time()))
        empty_key = "v0=" + hmac.new(b"", f"v0:{now}:{body}".encode(), hashlib.sha256).hexdigest()
        for headers in ({"content-type": "application/json"},
                        {"content-type": "application/json", "x-slack-request-timestamp": now,
                         "x-slack-signature": empty_key}):
            response = await app.async_dispatch(AsyncBoltRequest(body=body, headers=headers))
            assert response.status == 401
        await asyncio.sleep(0.5)
        assert api.posts() == [] and runtime.feedback.questions() == []
    finally:
        await api.stop()


async def test_a_forged_rank_in_a_source_click_is_dropped_and_feedback_keeps_flowing(slack):
    """A click's value comes back from Slack as we wrote it, but is still checked: a rank that is not an
    integer (which DuckDB would refuse, blocking the spool) is stored as unknown."""
    await slack.event(mention("How do I create an AUTOINCREMENT column?", ts="1700000600.000001"))
    post = (await slack.wait_posts(1))[0]
    await asyncio.sleep(0.3)
    question = slack.feedback().questions()[0]
    button = next(b for b in post["blocks"] if b.get("block_id") == "sources")["elements"][0]
    value = json.loads(button["value"])
    for forged in ({"r": "last tuesday"}, {"r": 1.5}, {"r": True}, {"q": ["x"]}, {"c": {"a": 1}}):
        await slack.action("source_1", json.dumps(value | forged), user="U_MALLORY")
    await slack.action("source_1", "not json", user="U_MALLORY")
    await slack.action("vote_up", question["id"], user="U_ALICE")
    await slack.action("vote_up", json.dumps(["not", "an", "id"]) * 20, user="U_ALICE")
    await asyncio.sleep(0.5)
    events = slack.feedback().events()
    clicks = [e for e in events if e["kind"] == "source_click"]
    assert len(clicks) == 3 and all(e["rank"] is None and e["chunk_id"] == value["c"] for e in clicks)
    assert [e["user_id"] for e in events if e["kind"] == "vote"] == ["U_ALICE"]  # later feedback still lands
    assert slack.feedback().pending() == 0


async def test_a_huge_or_broken_slack_question_is_bounded_and_answered(slack):
    await slack.event(mention("How do I create an AUTOINCREMENT column? " + "padding " * 10_000,
                              ts="1700000700.000001"))
    await slack.event(mention("How do I create an AUTOINCREMENT column \ud800?", ts="1700000700.000002"))
    posts = await slack.wait_posts(2)
    assert all("something went wrong" not in p["text"] for p in posts)
    await asyncio.sleep(0.3)
    texts_ = sorted(q["text"] for q in slack.feedback().questions())
    assert len(texts_) == 2 and all(len(t) <= 2000 for t in texts_)
    assert any("\ufffd" in t for t in texts_)


# -- finding 3: nothing the bot sends can ping, link or format by itself ----------------------------

def texts(node):
    """Every string sent as text: a message's text, block texts, button labels."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "text" and isinstance(value, str):
                yield value
            else:
                yield from texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from texts(item)


def assert_escaped(calls: list[dict], asker: str | None = None) -> list[str]:
    """No Slack control sequence in anything sent, except a mention of the asker; returns the texts."""
    sent = [t for call in calls for t in texts(call)]
    assert sent
    for text in sent:
        rest = text.replace(f"<@{asker}>", "") if asker else text
        assert "<" not in rest and ">" not in rest, text
        assert not re.search(r"&(?!amp;|lt;|gt;)", rest), text  # every & starts an escape
    return sent


@pytest.fixture
def evil_docs(store_copy, embedder, tmp_path):
    """Six pages whose titles, headings and text try to ping the channel and disguise a link."""
    from shared.ingest import ingest

    docs = tmp_path / "evil"
    docs.mkdir()
    for i in range(6):
        (docs / f"frob{i}.html").write_text(
            f"<html><head><title>Frobnicator manual {i} &lt;!channel&gt; &amp; &lt;@U123&gt;</title></head><body>"
            f"<h2 id='reset{i}'>Resetting frobnicator {i} &lt;!everyone&gt;</h2>"
            f"<p>To reset frobnicator number {i}, ping &lt;!channel&gt; and &lt;!everyone&gt;, then ask "
            f"&lt;@U123&gt; to open &lt;https://evil.example/x|docs&gt; and press the red frobnicator button.</p>"
            "</body></html>")
    ingest(store_copy, embedder, load_settings(home=str(tmp_path)), str(docs), base_url="https://evil-docs.example/",
           progress=False)
    return store_copy


EVIL_QUESTION = "How do I reset the frobnicator? <!channel> <!everyone> <https://evil.example/q|docs>"


async def test_an_answer_posted_in_a_thread_is_escaped(evil_docs):
    async with serving(settings(), SECRET) as slack:
        await slack.event(mention(EVIL_QUESTION + " <@U123>"))
        post = (await slack.wait_posts(1))[0]
        sent = assert_escaped([post])
    assert "&lt;!channel&gt;" in post["text"] and "&lt;https://evil.example/x|docs&gt;" in post["text"]
    labels = [e["text"]["text"] for b in post["blocks"] if b.get("block_id") == "sources" for e in b["elements"]]
    assert any("&lt;!channel&gt;" in label for label in labels) and all(len(label) <= 75 for label in labels)
    assert any("&lt;!everyone&gt;" in t for t in sent)


async def test_the_ask_echo_mentions_only_the_asker(evil_docs):
    async with serving(settings(), SECRET) as slack:
        await slack.command(EVIL_QUESTION, user=ASKER)
        posts = await slack.wait_posts(2)
        assert_escaped(posts, asker=ASKER)
    assert posts[0]["text"].startswith(f"<@{ASKER}> asked: How do I reset the frobnicator? &lt;!channel&gt;")
    assert "&lt;https://evil.example/q|docs&gt;" in posts[0]["text"]
    assert all(f"<@{ASKER}>" not in t for t in texts(posts[1]))  # the answer mentions nobody


async def test_the_private_answer_to_ask_outside_the_bots_channels_is_escaped(evil_docs):
    async with serving(settings(), SECRET) as slack:
        slack.api.refuse_channels.add("CPRIVATE")
        await slack.command(EVIL_QUESTION, user=ASKER, channel="CPRIVATE")
        response = (await slack.wait_posts(1, "response"))[0]
        assert_escaped([response])
    assert response["response_type"] == "ephemeral" and "&lt;!channel&gt;" in response["text"]


async def test_the_sections_offered_after_a_thumbs_down_are_escaped(evil_docs):
    async with serving(settings(), SECRET) as slack:
        await slack.event(mention(EVIL_QUESTION, ts="1700000300.000001"))
        await slack.wait_posts(1)
        await asyncio.sleep(0.3)
        question = slack.feedback().questions()[0]
        await slack.action("vote_down", question["id"], user="U_DAVE", action_ts="444.4",
                           message={"ts": question["message_ts"], "thread_ts": "1700000300.000001"})
        offer = (await slack.wait_posts(1, "chat.postEphemeral"))[0]
        assert_escaped([offer])
    labels = [e["text"]["text"] for b in offer["blocks"] if b.get("block_id") == "more_sources" for e in b["elements"]]
    assert any("&lt;!channel&gt; &amp; &lt;@U123&gt;" in label for label in labels)


async def test_a_model_answer_that_pings_the_channel_is_escaped(evil_docs, openai_server):
    openai_server.responder = lambda messages: ("<!channel> <!everyone> Reset it as <@U123> says at "
                                                "<https://evil.example/x|docs> [1] & done.")
    s = settings(openai_base_url=openai_server.base_url, openai_api_key="sk-loopback")
    async with serving(s, SECRET) as slack:
        await slack.event(mention(EVIL_QUESTION))
        post = (await slack.wait_posts(1))[0]
        assert_escaped([post])
    assert post["text"].startswith("&lt;!channel&gt; &lt;!everyone&gt; Reset it as &lt;@U123&gt;")
    assert "&amp; done." in post["blocks"][0]["text"]["text"]


def test_every_send_goes_through_the_one_escaping_module():
    """The listeners never call Slack's send methods themselves: bot.outgoing does, and escapes."""
    from pathlib import Path

    bot = Path(__file__).resolve().parent.parent / "bot"
    for path in bot.glob("*.py"):
        if path.name == "outgoing.py":
            continue
        source = path.read_text()
        assert not re.search(r"\.chat_(postMessage|postEphemeral|update)\(|\brespond\(text=", source), path.name


def test_escaped_text_is_fitted_to_slacks_limits_without_splitting_an_escape():
    from bot import outgoing

    label = "[1] " + "&" * 200
    message = outgoing.message("x", [{"type": "actions", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": label}, "url": "https://a.example/?a=1&b=2"}]}])
    fitted = message["blocks"][0]["elements"][0]["text"]["text"]
    assert len(fitted) <= 75 and fitted.endswith("&amp;…") and "&amp;&amp;" in fitted
    assert message["blocks"][0]["elements"][0]["url"] == "https://a.example/?a=1&b=2"  # a URL is not text
    long = outgoing.message("<" * 5000)["text"]
    assert len(long) <= 3000 and long.endswith("&lt;…")
    assert outgoing.mention("U123ABC") == "<@U123ABC>"
    assert outgoing.mention("U1> <!channel") == "U1&gt; &lt;!channel"  # not a user id: shown, not parsed
    assert outgoing.markup(outgoing.mention("U1AB"), " asked: <!here>") == "<@U1AB> asked: &lt;!here&gt;"


# -- finding 13: work in flight at shutdown lands ------------------------------------------------

async def test_shutdown_waits_for_an_answer_in_flight_and_records_where_it_was_posted(store_copy):
    api = await SlackAPI().start()
    api.delay = 2.0  # Slack is slow to answer chat.postMessage
    runtime = build_runtime(settings(slack_api_url=api.base_url))
    runner = web.AppRunner(build_web_app(runtime))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        import aiohttp

        body = event_body(mention("How do I create an AUTOINCREMENT column?", ts="1700000500.000001"), "EvSHUT")
        async with aiohttp.ClientSession() as session, session.post(
                f"http://127.0.0.1:{port}/slack/events", data=body.encode(), headers=signed_headers(SECRET, body)) as r:
            assert r.status == 200
        deadline = time.monotonic() + 30
        while not api.posts() and time.monotonic() < deadline:  # the answer is on its way to Slack
            await asyncio.sleep(0.02)
        assert api.posts()
    finally:
        await runner.cleanup()  # the server stops while chat.postMessage is still in flight
        await api.stop()
    # nothing awaited since: whatever shutdown did not wait for is missing here
    questions = runtime.feedback.questions()
    assert len(questions) == 1 and questions[0]["message_ts"], "the posted answer's ts was dropped at shutdown"
    assert runtime.feedback.pending() == 0
