"""Channels with their own doc sets: the configuration (`deepmem channels`, channels.json, `/deepmem`),
how each channel answers (mode, collections, ephemeral), "Ask an expert" tagging the experts once,
and Yes / No feedback. Against a real store of three collections and the loopback Slack server."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.blocks import answer_blocks, answer_text
from shared.answer import Answer, Citation
from shared.channels import ChannelConfig, ChannelSettings
from shared.cli import cli
from shared.errors import ConfigError

from .helpers.slack_api import BOT_USER, SlackAPI, serving_bot
from .test_channel_config_backends import ConfigBackend
from .test_feedback_backends import backend  # noqa: F401  (the fixture: DuckDB and PostgreSQL)

SECRET = "test-signing-secret"
RUNBOOKS = "CRUNBOOKS1"
API = "CAPIDOCS01"
FAQ = "CFAQDOCS01"
EXPERT, GROUP = "UEXPERT001", "SDOCSTEAM1"
ADMIN, MEMBER = "UADMIN0001", "UMEMBER001"

DOCS = {
    "runbooks": ("https://wiki.example.com/runbooks/", {
        "restart-payments.md": "# Restarting the payments service\n\nWhen the payments service stops answering, "
                               "drain its queue with `payctl drain`, then restart it with `systemctl restart "
                               "payments`. Check the health endpoint before you page anyone.\n",
        "certificates.md": "# Rotating TLS certificates\n\nCertificates expire every 90 days. Run `certbot renew` "
                           "on the load balancer, then reload nginx. The on-call engineer owns the rotation.\n",
        "handover.md": "# On-call handover\n\nEvery Monday at 10:00 the on-call engineer hands over the pager. "
                       "Write open incidents into the handover document.\n",
    }),
    "api": ("https://docs.example.com/api/", {
        "authentication.md": "# Authentication\n\nEvery request carries an API key in the `Authorization: Bearer` "
                             "header. Create and revoke keys in the dashboard under Settings > API keys.\n",
        "rate-limits.md": "# Rate limits\n\nThe API allows 600 requests per minute per key. Above that it answers "
                          "429 Too Many Requests with a Retry-After header saying how long to wait.\n",
        "pagination.md": "# Pagination\n\nList endpoints return 50 items and a `next_cursor`; pass it as `cursor` "
                         "to get the next page.\n",
    }),
    "faq": ("https://docs.example.com/faq/", {
        "lunch.md": "# Lunch\n\nThe canteen serves lunch from noon to two.\n",
    }),
}


@pytest.fixture(scope="module")
def docs_store(tmp_path_factory, embedder) -> Path:
    """A store with three collections (runbooks, api, faq), built once for this module."""
    from shared.ingest import ingest
    from shared.settings import load_settings
    from shared.store import Store

    root = tmp_path_factory.mktemp("channel-docs")
    home = root / "home"
    home.mkdir()
    with Store.open(home / "store.db") as store:
        for collection, (base_url, pages) in DOCS.items():
            folder = root / collection
            folder.mkdir()
            for name, text in pages.items():
                (folder / name).write_text(text)
            ingest(store, embedder, load_settings(home=str(home)), str(folder), base_url=base_url,
                   collection=collection, progress=False)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return home / "store.db"


@pytest.fixture
def home(docs_store, tmp_path) -> Path:
    """This test's DEEPMEM_HOME, holding a copy of the three-collection store."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    shutil.copy(docs_store, home / "store.db")
    return home


@pytest.fixture(params=["file", "postgres"])
def stored(request, home, monkeypatch):
    """Where this test's channel configuration lives: channels.json in ``home``, or the shared database
    (DEEPMEM_DATABASE_URL; the three-collection store copied there by `deepmem migrate`)."""
    from shared.home import Home
    from shared.migrate import migrate_home

    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        migrate_home(Home.open(home), url)
        monkeypatch.setenv("DEEPMEM_DATABASE_URL", url)
    b = ConfigBackend(request.param, Home.open(home), url)
    yield b
    b.close()


def configure(home: Path, channel: str | None = None, **settings) -> None:
    def change(config: ChannelConfig) -> ChannelConfig:
        s = ChannelSettings(**settings)
        return config.with_default(s) if channel is None else config.with_channel(channel, s)

    ChannelConfig.update(home, change)


def run_cli(*args: str):
    from bot.channel_commands import channels

    if "channels" not in cli.commands:  # what the deepmem.commands entry point does once installed
        cli.add_command(channels, "channels")
    return CliRunner().invoke(cli, ["channels", *args])


def mention(text, ts, channel, user="U_ALICE", thread_ts=None):
    event = {"type": "app_mention", "user": user, "text": f"<@{BOT_USER}> {text}", "ts": ts, "channel": channel,
             "event_ts": ts}
    return event | ({"thread_ts": thread_ts} if thread_ts else {})


def message(text, ts, channel, user="U_BOB", thread_ts=None, channel_type="channel"):
    event = {"type": "message", "user": user, "text": text, "ts": ts, "channel": channel,
             "channel_type": channel_type, "event_ts": ts}
    return event | ({"thread_ts": thread_ts} if thread_ts else {})


def source_urls(post) -> list[str]:
    return [e["url"] for b in post.get("blocks") or [] if b.get("block_id") == "sources" for e in b["elements"]]


async def settle(slack, seconds=0.6):
    await asyncio.sleep(seconds)
    return slack.api.posts()


# -- the configuration ------------------------------------------------------------------------------

def test_cli_set_list_unset_and_json(stored):
    r = run_cli("set", RUNBOOKS, "--collections", "runbooks", "--mode", "all", "--ephemeral",
                "--experts", f"{EXPERT},{GROUP}")
    assert r.exit_code == 0, r.output
    assert "all" in r.output and "ephemeral" in r.output and "runbooks" in r.output
    assert run_cli("set", "--default", "--collections", "api,faq", "--mode", "mention").exit_code == 0
    r = run_cli("list", "--json")
    assert r.exit_code == 0
    data = json.loads(r.output)
    assert data["default"] == {"collections": ["api", "faq"], "mode": "mention", "ephemeral": False, "experts": []}
    assert data["channels"] == {RUNBOOKS: {"collections": ["runbooks"], "mode": "all", "ephemeral": True,
                                           "experts": [EXPERT, GROUP]}}
    # unset options keep their value; a new channel starts from the default
    assert run_cli("set", RUNBOOKS, "--no-ephemeral").exit_code == 0
    assert run_cli("set", API, "--mode", "off").exit_code == 0
    config = stored.replica().load()
    assert config.for_channel(RUNBOOKS) == ChannelSettings(("runbooks",), "all", False, (EXPERT, GROUP))
    assert config.for_channel(API) == ChannelSettings(("api", "faq"), "off", False, ())
    assert config.for_channel("CNOTSET001") == config.default
    listed = run_cli("list")
    assert listed.exit_code == 0 and RUNBOOKS in listed.output and API in listed.output
    assert listed.output.splitlines()[0].startswith("default")
    r = run_cli("unset", API, "--json")
    assert r.exit_code == 0 and json.loads(r.output) == {"channel": API, "removed": True}
    assert set(stored.replica().load().channels()) == {RUNBOOKS}
    assert run_cli("set", RUNBOOKS, "--all-collections").exit_code == 0
    assert stored.replica().load().for_channel(RUNBOOKS).collections == ()


def test_cli_refuses_bad_input_with_the_name_and_changes_nothing(stored):
    assert run_cli("set", RUNBOOKS, "--collections", "runbooks").exit_code == 0
    before = stored.raw()
    cases = [
        (("set", RUNBOOKS, "--collections", "runbooks,nope"), "unknown collection nope"),
        (("set", RUNBOOKS, "--collections", "Bad Name"), "'Bad Name' is not a collection name"),
        (("set", "general", "--mode", "all"), "unknown Slack channel 'general'"),
        (("set", "D0DIRECT01", "--mode", "all"), "D0DIRECT01 is a direct message"),
        (("set", RUNBOOKS, "--experts", "alice"), "'alice' is not a Slack user"),
        (("set", RUNBOOKS, "--mode", "sometimes"), "'sometimes' is not one of"),
        (("set", "--mode", "all"), "give a CHANNEL id or --default"),
        (("unset", API), f"channel '{API}' is not configured"),
    ]
    for args, expected in cases:
        r = run_cli(*args)
        assert r.exit_code != 0 and expected in r.output, (args, r.output)
        assert r.output.strip().splitlines()[-1].startswith("Error: ")  # one line, not a traceback
    assert stored.raw() == before
    # a damaged document is reported with where it lives, never overwritten
    stored.damage('{"channels": {"general": {}}}')
    r = run_cli("set", RUNBOOKS, "--mode", "all")
    where = "channels.json" if stored.name == "file" else "the channel configuration in "
    assert r.exit_code == 1 and where in r.output and "unknown Slack channel 'general'" in r.output
    assert stored.raw() == '{"channels": {"general": {}}}'
    stored.damage('{"default": {"mode": "all", "colour": "red"}}')
    with pytest.raises(ConfigError, match="unknown fields colour"):
        stored.replica().load()


async def test_cli_check_asks_slack_whether_the_channel_exists(stored, monkeypatch):
    api = await SlackAPI().start()
    try:
        api.channels[RUNBOOKS] = {"name": "runbooks"}
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token")
        monkeypatch.setenv("SLACK_API_URL", api.base_url)
        ok = await asyncio.to_thread(run_cli, "set", RUNBOOKS, "--mode", "all", "--check")
        assert ok.exit_code == 0, ok.output
        missing = await asyncio.to_thread(run_cli, "set", "CGONE00001", "--mode", "all", "--check")
        assert missing.exit_code == 1 and "unknown Slack channel CGONE00001 (channel_not_found" in missing.output
        assert [c["args"]["channel"] for c in api.calls if c["method"] == "conversations.info"] == \
            [RUNBOOKS, "CGONE00001"]
        assert set(stored.replica().load().channels()) == {RUNBOOKS}
    finally:
        await api.stop()


# -- answering per channel ----------------------------------------------------------------------------

async def test_a_channel_scoped_to_a_collection_never_cites_another(home):
    configure(home, RUNBOOKS, collections=("runbooks",))
    configure(home, API, collections=("api",))
    question = "How many requests per minute does the API allow before it answers 429?"
    async with serving_bot(SECRET) as slack:
        await slack.event(mention(question, "1700001000.000001", RUNBOOKS))
        await slack.event(mention(question, "1700001000.000002", API))
        await slack.event(mention(question, "1700001000.000003", "CNOTSET001"))  # the default: every collection
        posts = await slack.wait_posts(3)
        await asyncio.sleep(0.3)
        by_channel = {p["channel"]: p for p in posts}
        assert source_urls(by_channel[RUNBOOKS]) and all(
            u.startswith("https://wiki.example.com/runbooks/") for u in source_urls(by_channel[RUNBOOKS]))
        assert source_urls(by_channel[API])[0].startswith("https://docs.example.com/api/rate-limits")
        assert source_urls(by_channel["CNOTSET001"])[0].startswith("https://docs.example.com/api/rate-limits")
        # everything retrieved for the scoped channel (also what a No would offer) is in its collection
        for q in slack.feedback().questions():
            urls = [r["url"] for r in slack.feedback().rows("SELECT url FROM retrievals WHERE question_id = ?",
                                                            [q["id"]])]
            prefix = {RUNBOOKS: "https://wiki.example.com/runbooks/", API: "https://docs.example.com/api/"}.get(
                q["channel_id"], "https://")
            assert urls and all(u.startswith(prefix) for u in urls), q["channel_id"]
        wider = {u.split("/")[2] + "/" + u.split("/")[3] for u in [
            r["url"] for r in slack.feedback().rows("SELECT r.url FROM retrievals r JOIN questions q ON "
                                                    "q.id = r.question_id WHERE q.channel_id = 'CNOTSET001'")]}
        assert len(wider) > 1  # the default answers from every collection


async def test_channel_modes_mention_all_and_off(home):
    configure(home, RUNBOOKS, mode="all")  # API: not configured, the default (mention)
    configure(home, FAQ, mode="off")
    async with serving_bot(SECRET) as slack:
        # mention mode: a question posted without a mention is left to people
        await slack.event(message("How do I restart the payments service?", "1700002000.000001", API))
        assert await settle(slack) == []
        # all: every question-like message in the channel, not chatter, not replies in people's threads
        await slack.event(message("lunch is here", "1700002000.000002", RUNBOOKS))
        await slack.event(message("How do I restart the payments service?", "1700002000.000003", RUNBOOKS))
        await slack.event(message("why does the queue need draining first?", "1700002000.000004", RUNBOOKS,
                                  thread_ts="1700002000.000002"))
        posts = await slack.wait_posts(1)
        assert await settle(slack) == posts and len(posts) == 1
        assert posts[0]["channel"] == RUNBOOKS and posts[0]["thread_ts"] == "1700002000.000003"
        assert source_urls(posts[0])[0].startswith("https://wiki.example.com/runbooks/restart-payments")
        # a mention in an all-mode channel is answered once (the message event leaves it to app_mention)
        text = "How do I rotate the TLS certificates?"
        await slack.event(mention(text, "1700002000.000005", RUNBOOKS))
        await slack.event(message(f"<@{BOT_USER}> {text}", "1700002000.000005", RUNBOOKS, user="U_ALICE"))
        assert len(await slack.wait_posts(2)) == 2 and len(await settle(slack)) == 2
        # mention mode answers a mention; off answers nothing, and tells the person privately
        await slack.event(mention("How do I restart the payments service?", "1700002000.000006", API))
        assert (await slack.wait_posts(3))[2]["channel"] == API
        await slack.event(mention("When is lunch?", "1700002000.000007", FAQ))
        await slack.event(message("When is lunch served?", "1700002000.000008", FAQ))
        note = (await slack.wait_posts(1, "chat.postEphemeral"))[0]
        assert note["channel"] == FAQ and note["user"] == "U_ALICE" and "do not answer in this channel" in note["text"]
        assert len(await settle(slack)) == 3 and len(slack.api.posts("chat.postEphemeral")) == 1


async def test_the_default_governs_direct_messages_and_slash_ask(home):
    configure(home, None, mode="off")
    async with serving_bot(SECRET) as slack:
        await slack.event(message("How do I restart the payments service?", "1700003000.000001", "D0DIRECT01",
                                  channel_type="im"))
        note = (await slack.wait_posts(1))[0]
        assert "do not answer direct messages" in note["text"] and "blocks" not in note
        status, text, _ = await slack.command("How do I restart the payments service?", channel=API)
        assert status == 200
        deadline = time.monotonic() + 10
        while not slack.api.posts("response") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert "/ask is switched off" in slack.api.posts("response")[0]["text"]
        assert len(await settle(slack)) == 1
    configure(home, None, collections=("api",), ephemeral=True)
    async with serving_bot(SECRET) as slack:
        await slack.command("How do I restart the payments service?", channel=API, trigger_id="trig-2")
        deadline = time.monotonic() + 20
        while not slack.api.posts("response") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        private = slack.api.posts("response")[0]
        assert private["response_type"] == "ephemeral"
        urls = source_urls(private)
        assert urls and all(u.startswith("https://docs.example.com/api/") for u in urls)
        assert slack.api.posts() == []  # nothing in the channel


async def test_ephemeral_answers_are_shown_only_to_the_asker(home):
    configure(home, API, collections=("api",), ephemeral=True)
    async with serving_bot(SECRET) as slack:
        await slack.event(mention("Which header carries the API key in every request?", "1700004000.000001", API,
                                  user="U_DAVE"))
        answer = (await slack.wait_posts(1, "chat.postEphemeral"))[0]
        assert answer["user"] == "U_DAVE" and answer["channel"] == API and answer["thread_ts"] == "1700004000.000001"
        assert source_urls(answer)[0].startswith("https://docs.example.com/api/authentication")
        assert [e["action_id"] for b in answer["blocks"] if b.get("block_id") == "feedback"
                for e in b["elements"]] == ["answered_yes", "answered_no"]
        assert await settle(slack) == []  # nothing posted for everyone
        # Yes on an ephemeral answer is a vote like any other
        question = slack.feedback().questions()[0]
        assert question["message_ts"] is None
        await slack.action("answered_yes", question["id"], user="U_DAVE", action_ts="700.1", channel=API)
        await asyncio.sleep(0.5)
        assert [(l["user_id"], l["label"]) for l in slack.feedback().labels()][:1] == [("U_DAVE", 1)]


async def test_yes_and_no_are_recorded_as_labels_and_old_buttons_still_work(home):
    async with serving_bot(SECRET) as slack:
        await slack.event(mention("How do I rotate the TLS certificates?", "1700005000.000001", RUNBOOKS))
        post = (await slack.wait_posts(1))[0]
        feedback = next(b for b in post["blocks"] if b.get("block_id") == "feedback")
        assert [(e["text"]["text"], e["action_id"]) for e in feedback["elements"]] == \
            [("Yes", "answered_yes"), ("No", "answered_no")]
        assert any(e.get("text") == "Did this answer your question?" for b in post["blocks"]
                   if b["type"] == "context" for e in b["elements"])
        await asyncio.sleep(0.3)
        question = slack.feedback().questions()[0]
        await slack.action("answered_yes", question["id"], user="U_ALICE", action_ts="800.1")
        await slack.action("answered_no", question["id"], user="U_BOB", action_ts="800.2", channel=RUNBOOKS,
                           message={"ts": question["message_ts"], "thread_ts": "1700005000.000001"})
        await slack.action("vote_up", question["id"], user="U_CAROL", action_ts="800.3")  # an answer from before
        await slack.event({"type": "reaction_added", "user": "U_ERIN", "reaction": "-1", "event_ts": "800.4",
                           "item": {"type": "message", "channel": RUNBOOKS, "ts": question["message_ts"]}})
        await asyncio.sleep(0.8)
        votes = {(l["user_id"], l["label"]) for l in slack.feedback().labels() if l["kind"] == "vote"}
        assert votes == {("U_ALICE", 1), ("U_BOB", -1), ("U_CAROL", 1), ("U_ERIN", -1)}
        details = {e["user_id"]: e["detail"] for e in slack.feedback().events()}
        assert details == {"U_ALICE": "answered", "U_BOB": "answered", "U_CAROL": "button", "U_ERIN": "reaction:-1"}
        # Bob's No is followed by the sections the answer did not show, and a way to an expert
        offers = await slack.wait_posts(2, "chat.postEphemeral")
        offer = next(o for o in offers if o["user"] == "U_BOB")
        assert [b.get("block_id") for b in offer["blocks"]] == [None, "more_sources", "escalate"]


# -- the docs do not cover it: an expert ----------------------------------------------------------------

def test_an_answer_the_docs_do_not_cover_offers_an_expert_instead():
    sources = [Citation(n=1, chunk_id="c1", url="https://docs.example.com/api/pagination.html#x", title="Pagination",
                        heading_path="", rank=1, score=0.1)]
    answer = Answer(question="What is the capital of Mongolia?", text="Ulaanbaatar [1]", sources=sources, cited=[1],
                    mode="llm", adapter=None, covered=False, coverage=0.12)
    blocks = answer_blocks("q1", answer)
    assert answer_text(answer).startswith("*The docs do not seem to cover this.*")
    assert blocks[0]["text"]["text"] == answer_text(answer) and "Ulaanbaatar" not in json.dumps(blocks)
    assert [b.get("block_id") for b in blocks if b["type"] == "actions"] == ["sources", "escalate"]
    button = blocks[-2]["elements"][0] if blocks[-1]["type"] == "context" else blocks[-1]["elements"][0]
    assert (button["text"]["text"], button["action_id"], button["value"]) == ("Ask an expert", "escalate", "q1")
    assert "feedback" not in [b.get("block_id") for b in blocks]


async def _answered(slack, text, thread, channel, **who) -> tuple[dict, dict]:
    """Mention the bot in a new thread; once answered and recorded: (the question, where its answer is)."""
    await slack.event(mention(text, thread, channel, **who))
    await slack.wait_posts(1)
    await asyncio.sleep(0.3)
    question = slack.feedback().questions()[0]
    return question, {"ts": question["message_ts"], "thread_ts": thread}


async def _escalations(slack):
    return [e for e in slack.feedback().events() if e["kind"] == "escalated"]


async def test_ask_an_expert_tags_the_experts_once_across_clicks_and_restarts(home):
    configure(home, RUNBOOKS, collections=("runbooks",), experts=(EXPERT, GROUP))
    thread = "1700006000.000001"
    async with serving_bot(SECRET) as slack:
        question, where = await _answered(slack, "Who approves a production database migration?", thread, RUNBOOKS,
                                          user="UASKER0001")
        await slack.action("escalate", question["id"], user="U_ALICE", action_ts="900.1", message=where,
                           channel=RUNBOOKS)
        tagged = (await slack.wait_posts(2))[1]
        assert tagged["channel"] == RUNBOOKS and tagged["thread_ts"] == thread
        assert tagged["text"].startswith(f"<@{EXPERT}> <!subteam^{GROUP}>: the docs do not seem to cover")
        assert "question from <@UASKER0001>: “Who approves a production database migration?”" in tagged["text"]
        # a second click, by someone else, at once and later: told privately, nobody tagged again
        await asyncio.gather(slack.action("escalate", question["id"], user="U_BOB", action_ts="900.2", message=where,
                                          channel=RUNBOOKS),
                             slack.action("escalate", question["id"], user="U_CAROL", action_ts="900.3",
                                          message=where, channel=RUNBOOKS))
        told = await slack.wait_posts(2, "chat.postEphemeral")
        assert {t["user"] for t in told} == {"U_BOB", "U_CAROL"} and "already asked" in told[0]["text"]
        assert len(await settle(slack)) == 2
        escalations = await _escalations(slack)
        assert [(e["question_id"], e["user_id"], e["value"], e["detail"]) for e in escalations] == \
            [(question["id"], "U_ALICE", 1, "button")]
    async with serving_bot(SECRET) as slack:  # a restart: nothing in memory
        await slack.action("escalate", question["id"], user="U_DAVE", action_ts="900.4", message=where,
                           channel=RUNBOOKS)
        # a button on this answer pressed from another channel (a forged payload) tags nobody there
        await slack.action("escalate", question["id"], user="U_DAVE", action_ts="900.5", message=where, channel=API)
        await slack.wait_posts(1, "chat.postEphemeral")
        assert await settle(slack) == [] and len(slack.api.posts("chat.postEphemeral")) == 1
        assert len(await _escalations(slack)) == 1
        # forgetting a user removes their escalation records
        slack.feedback().forget("U_ALICE")
        assert await _escalations(slack) == []


async def test_no_experts_configured_is_said_once_and_a_no_without_better_sources_escalates(home):
    configure(home, FAQ, collections=("faq",))  # one page, shown in full: nothing better to offer after a No
    thread = "1700007000.000001"
    async with serving_bot(SECRET) as slack:
        question, where = await _answered(slack, "When does the canteen serve lunch?", thread, FAQ)
        await slack.action("answered_no", question["id"], user="U_BOB", action_ts="950.1", message=where, channel=FAQ)
        note = (await slack.wait_posts(2))[1]
        assert note["thread_ts"] == thread and "who to ask is not configured" in note["text"]
        await slack.action("escalate", question["id"], user="U_BOB", action_ts="950.2", message=where, channel=FAQ)
        await slack.wait_posts(1, "chat.postEphemeral")
        assert len(await settle(slack)) == 2
        assert [(e["value"], e["detail"]) for e in await _escalations(slack)] == [(0, "no")]
    configure(home, FAQ, collections=("faq",), experts=(EXPERT,))  # configured later: the next click tags
    async with serving_bot(SECRET) as slack:
        await slack.action("escalate", question["id"], user="U_BOB", action_ts="950.3", message=where, channel=FAQ)
        tagged = (await slack.wait_posts(1))[0]
        assert tagged["text"].startswith(f"<@{EXPERT}>: the docs")
        assert sorted(e["value"] for e in await _escalations(slack)) == [0, 1]


# -- /deepmem ------------------------------------------------------------------------------------------

async def _response(slack, n: int, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while len(slack.api.posts("response")) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return slack.api.posts("response")[n - 1]["text"]


async def test_slash_deepmem_configures_a_channel_for_admins_only(home):
    async with serving_bot(SECRET) as slack:
        slack.api.users.update({ADMIN: {"is_admin": True}, MEMBER: {}})
        slack.api.channels[API] = {"name": "api"}
        n = 0

        async def deepmem(text, user=ADMIN, channel=RUNBOOKS):
            nonlocal n
            n += 1
            status, _, seconds = await slack.command(text, user=user, channel=channel, trigger_id=f"adm-{n}",
                                                     name="/deepmem")
            assert status == 200 and seconds < 1.0
            return await _response(slack, n)

        assert "not configured: the default applies" in await deepmem("channel show", user=MEMBER)  # anyone may look
        reply = await deepmem("channel collections runbooks,faq")
        assert reply.startswith(f"<#{RUNBOOKS}>: answers when mentioned") and "from faq, runbooks" in reply
        assert "answers every question" in await deepmem("channel mode all")
        reply = await deepmem(f"channel experts <@{EXPERT}|expert> <!subteam^{GROUP}|@docs>")
        assert f"experts: <@{EXPERT}> <!subteam^{GROUP}>" in reply
        assert "privately to the asker" in await deepmem("channel ephemeral on")
        assert "answers when mentioned" in await deepmem(f"channel <#{API}|api> mode mention")
        assert "The default" in await deepmem("default collections api")
        config = ChannelConfig.load(home)
        assert config.for_channel(RUNBOOKS) == ChannelSettings(("faq", "runbooks"), "all", True, (EXPERT, GROUP))
        assert config.for_channel(API).mode == "mention" and config.default.collections == ("api",)
        before = (home / "channels.json").read_bytes()
        # refused: a member who is not an admin, unknown collections and channels, nonsense
        assert "Only workspace admins" in await deepmem("channel mode off", user=MEMBER)
        assert "unknown collection nope" in await deepmem("channel collections runbooks,nope")
        assert "unknown Slack channel CGONE00001 (channel_not_found" in \
            await deepmem("channel <#CGONE00001|gone> mode all")
        assert "mode must be one of mention, all, off" in await deepmem("channel mode sometimes")
        assert "Usage: `/deepmem channel show`" in await deepmem("")
        assert "direct message" in await deepmem("channel mode all", channel="D0DIRECT01")
        assert (home / "channels.json").read_bytes() == before
        assert [c["args"]["user"] for c in slack.api.calls if c["method"] == "users.info"].count(MEMBER) == 1
        # the bot answers by the new settings at once: all mode, privately, from runbooks and faq
        await slack.event(message("How do I restart the payments service?", "1700008000.000001", RUNBOOKS))
        answer = (await slack.wait_posts(1, "chat.postEphemeral"))[0]
        assert answer["user"] == "U_BOB" and source_urls(answer)[0].startswith("https://wiki.example.com/runbooks/")
        assert "unknown collection" not in answer["text"]
        assert "not configured" in await deepmem("channel reset")
        assert set(ChannelConfig.load(home).channels()) == {API}


async def test_slash_deepmem_on_one_replica_changes_how_another_answers(home, tmp_path, pg_url):
    """Two replicas sharing DEEPMEM_DATABASE_URL, each with its own data directory (compose gives each
    container its own volume): an admin's /deepmem on one is in force on the other within a second."""
    from shared.home import Home
    from shared.migrate import migrate_home
    from shared.settings import load_settings

    from .helpers.slack_api import serving

    migrate_home(Home.open(home), pg_url)  # the three-collection store, in the shared database
    other_home = tmp_path / "other-replica"
    other_home.mkdir()
    api = await SlackAPI().start()
    api.users.update({ADMIN: {"is_admin": True}})

    def replica(root: Path):
        return serving(load_settings(home=str(root), database_url=pg_url, slack_bot_token="xoxb-test-token",
                                     slack_signing_secret=SECRET, port=0, retrain_cron="off"), SECRET, api)

    try:
        async with replica(home) as one, replica(other_home) as other:
            question = "How do I restart the payments service?"
            await other.event(message(question, "1700012000.000001", RUNBOOKS))  # mention mode: not answered
            assert await settle(other) == []
            status, _, _ = await one.command("channel mode all", user=ADMIN, channel=RUNBOOKS, trigger_id="adm-1",
                                             name="/deepmem")
            assert status == 200 and "answers every question" in await _response(one, 1)
            await asyncio.sleep(1.1)  # the other replica asks the database at most once a second
            await other.event(message(question, "1700012001.000001", RUNBOOKS))
            answer = (await other.wait_posts(1))[0]
            assert answer["channel"] == RUNBOOKS and answer["thread_ts"] == "1700012001.000001"
            assert not (home / "channels.json").exists() and not (other_home / "channels.json").exists()
    finally:
        await api.stop()


def test_the_manifest_has_the_deepmem_command_and_users_read():
    text = (Path(__file__).resolve().parent.parent / "bot" / "manifest.yml").read_text()
    assert "command: /deepmem" in text and "- users:read" in text


async def test_an_escalation_slack_refused_is_not_recorded_and_the_next_click_tags(home):
    configure(home, RUNBOOKS, collections=("runbooks",), experts=(EXPERT,))
    thread = "1700009000.000001"
    async with serving_bot(SECRET) as slack:
        question, where = await _answered(slack, "Who signs off a production database migration?", thread, RUNBOOKS)
        slack.api.errors["chat.postMessage"] = "ratelimited"
        await slack.action("escalate", question["id"], user="U_BOB", action_ts="990.1", message=where,
                           channel=RUNBOOKS)
        await asyncio.sleep(0.8)
        assert await _escalations(slack) == []
        del slack.api.errors["chat.postMessage"]
        await slack.action("escalate", question["id"], user="U_BOB", action_ts="990.2", message=where,
                           channel=RUNBOOKS)
        tagged = (await slack.wait_posts(3))[2]  # the answer, the refused attempt, the tagging
        assert tagged["text"].startswith(f"<@{EXPERT}>: the docs") and len(await _escalations(slack)) == 1


def test_an_escalation_is_recorded_once_seen_by_every_replica_and_forgotten(backend):  # noqa: F811
    """QAService's escalation records on both feedback backends (DuckDB spool, PostgreSQL)."""
    from shared.feedback import FeedbackStore
    from shared.qa import QAService

    one, other = QAService(None, backend.replica()), QAService(None, backend.replica())
    one.feedback.record([FeedbackStore.question_op(id="q1", asked_at="2026-01-01T09:00:00+00:00", source="slack",
                                                   user_id="UASKER0001", channel_id=RUNBOOKS, thread_ts="1.1",
                                                   text="who approves a migration?")])
    assert other.question("q1")["thread_ts"] == "1.1" and other.question("q2") is None
    assert not other.escalated(RUNBOOKS, "1.1", tagged=True)
    one.record_escalation("q1", "U_BOB", RUNBOOKS, "1.1", tagged=True, via="button")
    other.record_escalation("q1", "U_CAROL", RUNBOOKS, "1.1", tagged=True, via="button")  # a race: stored once
    assert other.escalated(RUNBOOKS, "1.1", tagged=True) and not other.escalated(RUNBOOKS, "1.1", tagged=False)
    rows = other.feedback.rows("SELECT user_id, value, detail FROM events WHERE kind = 'escalated'")
    assert rows == [{"user_id": "U_BOB", "value": 1, "detail": "button"}]
    other.feedback.forget("U_BOB")
    assert not one.escalated(RUNBOOKS, "1.1", tagged=True)


def test_a_running_bot_reads_changes_and_keeps_the_last_good_configuration(tmp_path):
    """The file; both stores: tests/test_channel_config_backends.py."""
    from shared.channels import ChannelConfigFile

    reports = []
    live = ChannelConfigFile(tmp_path, on_error=reports.append)
    assert live.current().for_channel(RUNBOOKS).mode == "mention"  # no file yet: the defaults
    configure(tmp_path, RUNBOOKS, mode="all")  # `deepmem channels set` while the bot runs
    assert live.current().for_channel(RUNBOOKS).mode == "all"
    (tmp_path / "channels.json").write_text("{not json")
    assert live.current().for_channel(RUNBOOKS).mode == "all" and live.current().channels()
    assert len(reports) == 1 and "channels.json is not valid JSON" in reports[0]
    with pytest.raises(ConfigError, match="not valid JSON"):  # a change on top of a damaged file: refused
        configure(tmp_path, API, mode="off")
    assert (tmp_path / "channels.json").read_text() == "{not json"
    (tmp_path / "channels.json").unlink()
    assert live.current().channels() == {}


async def test_a_question_the_docs_do_not_cover_gets_an_expert_button_and_all_mode_stays_quiet(home):
    pytest.importorskip("shared.coverage", reason="Answer.covered is decided by shared.coverage (the coverage helper)")
    configure(home, RUNBOOKS, mode="all", experts=(EXPERT,))
    async with serving_bot(SECRET) as slack:
        await slack.event(mention("What is the capital city of Mongolia?", "1700010000.000001", RUNBOOKS))
        post = (await slack.wait_posts(1))[0]
        assert post["text"].startswith("*The docs do not seem to cover this.*")
        ids = [b.get("block_id") for b in post["blocks"] if b["type"] == "actions"]
        assert "escalate" in ids and "feedback" not in ids
        # asked in the channel, not of the bot: recorded, not answered when the docs do not cover it
        await slack.event(message("Which football team won the 1998 world cup final?", "1700010000.000002", RUNBOOKS))
        await slack.event(message("How do I restart the payments service?", "1700010000.000003", RUNBOOKS))
        posts = await slack.wait_posts(2)
        assert len(await settle(slack, 1.0)) == 2 and posts[1]["thread_ts"] == "1700010000.000003"
        assert len(slack.feedback().questions()) == 3


async def test_serve_says_at_start_which_configured_channels_the_bot_cannot_work_in(home, caplog):
    """At start-up each configured channel (not `off`) is asked of Slack once: one deleted or never seen, one
    archived, one the bot is not a member of (it would hear no mention there) are logged, with what to do."""
    import logging

    from shared.settings import load_settings

    from .helpers.slack_api import serving
    from .helpers.waiting import until

    api = await SlackAPI().start()
    api.channels.update({RUNBOOKS: {"name": "runbooks", "is_member": True},
                         API: {"name": "api-docs", "is_member": False},
                         "CARCHIVED1": {"name": "old-docs", "is_archived": True, "is_member": True}})
    configure(home, RUNBOOKS, mode="all")
    configure(home, API, mode="mention")
    configure(home, "CARCHIVED1", mode="mention")
    configure(home, "CDELETED01", mode="mention")
    configure(home, FAQ, mode="off")  # unknown to Slack, but off: nothing to check
    caplog.set_level(logging.WARNING, logger="deepmem.slack")

    def said():
        lines = [r.getMessage() for r in caplog.records if "channel configuration:" in r.getMessage()]
        return lines if len(lines) >= 3 else None

    try:
        settings = load_settings(slack_bot_token="xoxb-test-token", slack_signing_secret=SECRET, port=0,
                                 retrain_cron="off")
        async with serving(settings, SECRET, api) as slack:
            lines = sorted(await until(said, timeout=30, what="the start-up channel check"))
            await slack.event(mention("How do I restart the payments service?", "1700009000.000001", RUNBOOKS))
            assert len(await slack.wait_posts(1)) == 1  # the bot serves meanwhile
        assert lines == [
            "channel configuration: CARCHIVED1 is archived: nobody can ask there "
            "(or `deepmem channels unset CARCHIVED1`)",
            "channel configuration: the bot is not a member of CAPIDOCS01, so it hears nothing there: /invite it "
            "(or `deepmem channels unset CAPIDOCS01`)",
            "channel configuration: unknown Slack channel CDELETED01 (channel_not_found: no such channel, or the "
            "bot cannot see it) (or `deepmem channels unset CDELETED01`)"]
        asked = [c["args"].get("channel") for c in api.calls if c["method"] == "conversations.info"]
        assert sorted(asked) == sorted([RUNBOOKS, API, "CARCHIVED1", "CDELETED01"])  # each once, not FAQ
    finally:
        await api.stop()
