"""`deepmem history import`: real questions from a Slack workspace's history, over a loopback Slack."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from click.testing import CliRunner

from shared.cli import cli
from shared.feedback.store import FeedbackStore
from shared.home import Home
from shared.store import Store

from .helpers.waiting import until
from .helpers.slack_history import DM, HELP, SlackHistory, check, msg


@pytest.fixture
def slack():
    """The loopback Slack with a realistic #help-docs, served from its own thread."""
    server = SlackHistory()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    yield server
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture
def workspace(slack, store_copy, monkeypatch, tmp_path):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_API_URL", slack.base_url)
    return Home.open(tmp_path / "home")


def run_import(*args: str):
    return CliRunner().invoke(cli, ["history", "import", *args])


def labels_by_question(home: Home) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in FeedbackStore(home).labels():
        out.setdefault(row["question"], []).append(row)
    return out


def test_threads_answered_with_docs_links_become_labels(workspace, slack):
    result = run_import("--channel", "#help-docs")
    assert result.exit_code == 0, result.output
    assert "labeled 4 questions (2 marked resolved or thanked)" in result.output
    labels = labels_by_question(workspace)
    assert {q: [(r["target"], r["label"], r["user_id"]) for r in rows] for q, rows in labels.items()} == {
        "How do I make a column autoincrement in SQLite?": [("https://sqlite.org/autoinc.html", 2, "U02HELPER")],
        "hey all, is there a way to add a column to an existing table":
            [("https://sqlite.org/lang_altertable.html#altertabaddcol", 2, "U04HELPER")],
        "why is my database locked when two processes write at once?":
            [("https://sqlite.org/wal.html", 1, "U06HELPER")],
        "What is the maximum length of a string or BLOB?":
            [("https://sqlite.org/limits.html#max_length", 1, "U02HELPER")],
    }  # not: the bot's answer, the self-answer, the announcement, the outside link, the deleted question
    assert all(r["source"] == "history" for rows in labels.values() for r in rows)
    questions = {q["text"]: q for q in FeedbackStore(workspace).questions()}
    assert questions["How do I make a column autoincrement in SQLite?"]["user_id"] == "U01ASKER1"
    assert questions["How do I make a column autoincrement in SQLite?"]["channel_id"] == HELP
    # answers' text is not kept, only their links
    dump = repr(FeedbackStore(workspace).rows("SELECT * FROM questions")) + repr(FeedbackStore(workspace).events())
    assert "You probably don't need it" not in dump and "WAL mode" not in dump
    # pagination: parents and a three-message thread came in pages of two
    assert len(slack.calls_of("conversations.history")) >= 6
    assert any(c.get("cursor") for c in slack.calls_of("conversations.replies"))


def test_direct_messages_and_unknown_channels_are_refused_in_one_line(workspace, slack):
    result = run_import("--channel", DM)
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {DM} is a direct message: only channels are read, never DMs"
    result = run_import("--channel", "#no-such-channel")
    assert result.output.strip() == "Error: no channel named #no-such-channel that the bot can see"
    assert not slack.calls_of("conversations.history")  # nothing was read


def test_rate_limits_are_waited_out(workspace, slack):
    slack.rate_limit["conversations.history"] = 1
    slack.rate_limit["conversations.replies"] = 1
    started = time.monotonic()
    result = run_import("--channel", "help-docs")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 2.0  # Retry-After: 1, twice
    assert len(labels_by_question(workspace)) == 4


def test_an_interrupted_import_goes_on_where_it_stopped(workspace, slack):
    slack.fail[("conversations.history", 3)] = "internal_error"  # the third page of parents fails once
    first = run_import("--channel", "help-docs")
    assert first.exit_code == 1 and first.output.strip().startswith(f"Error: cannot read {HELP}: internal_error")
    read_before = {c["ts"] for c in slack.calls_of("conversations.replies")}
    assert read_before and len(labels_by_question(workspace)) >= 1  # what was read is kept
    slack.calls.clear()
    second = run_import("--channel", "help-docs")
    assert second.exit_code == 0 and "(resumed)" in second.output
    assert slack.calls_of("conversations.history")[0].get("cursor")  # from the saved page, not from the start
    assert not read_before & {c["ts"] for c in slack.calls_of("conversations.replies")}  # no thread read twice
    assert len(labels_by_question(workspace)) == 4


def test_a_later_import_reads_only_new_threads_and_new_replies(workspace, slack):
    assert run_import("--channel", "help-docs").exit_code == 0
    slack.calls.clear()
    again = run_import("--channel", "help-docs")
    assert "read 0 threads" in again.output and not slack.calls_of("conversations.replies")
    # someone answers the self-answered question properly; a new question is answered and resolved
    slack.add_reply(HELP, "1700000500.000100", msg("1700001000.000100", "U02HELPER",
                                                   "<https://sqlite.org/foreignkeys.html#fk_enable|enable them first>"))
    slack.add_thread(HELP, [msg("1700001100.000100", "U14ASKER7", "Does VACUUM need twice the disk space?"),
                            msg("1700001160.000100", "U02HELPER", "<https://sqlite.org/lang_vacuum.html>",
                                reactions=check("U14ASKER7", name="heavy_check_mark"))])
    slack.calls.clear()
    third = run_import("--channel", "help-docs")
    assert third.exit_code == 0, third.output
    assert {c["ts"] for c in slack.calls_of("conversations.replies")} == {"1700000500.000100", "1700001100.000100"}
    labels = labels_by_question(workspace)
    assert [(r["target"], r["label"]) for r in labels["How do foreign keys work in SQLite?"]] == \
        [("https://sqlite.org/foreignkeys.html#fk_enable", 1)]
    assert [(r["target"], r["label"]) for r in labels["Does VACUUM need twice the disk space?"]] == \
        [("https://sqlite.org/lang_vacuum.html", 2)]


def test_forget_removes_what_an_asker_or_an_answerer_gave(workspace, slack):
    assert run_import("--channel", "help-docs").exit_code == 0
    assert CliRunner().invoke(cli, ["feedback", "forget", "U01ASKER1"]).exit_code == 0
    labels = labels_by_question(workspace)
    assert "How do I make a column autoincrement in SQLite?" not in labels
    assert not FeedbackStore(workspace).rows("SELECT * FROM questions WHERE user_id = 'U01ASKER1'")
    assert CliRunner().invoke(cli, ["feedback", "forget", "U02HELPER"]).exit_code == 0
    assert set(labels_by_question(workspace)) == {"hey all, is there a way to add a column to an existing table",
                                                  "why is my database locked when two processes write at once?"}


def test_the_docs_own_questions_point_where_their_answers_link(store_copy, embedder, small_docs, tmp_path):
    """A FAQ page among real SQLite pages: each question whose answer links into the docs is a real
    question with those targets; its own answer is left out of scoring; a question without links is not."""
    from shared.deep_memory.real_questions import docs_questions
    from shared.ingest import ingest
    from shared.queries import Resolver
    from shared.settings import load_settings

    docs = tmp_path / "faq-docs"
    docs.mkdir()
    (docs / "faq.md").write_text(
        "# Frequently asked questions\n\n"
        "## How do I get a column that numbers rows by itself?\n\n"
        "Declare it INTEGER PRIMARY KEY; the [AUTOINCREMENT keyword](https://sqlite.org/autoinc.html) "
        "is rarely needed.\n\n"
        "## Why does a second writer get SQLITE_BUSY?\n\n"
        "Only one connection writes at a time. Set a [busy timeout](https://sqlite.org/c3ref/busy_timeout.html) "
        "or switch to [write-ahead logging](https://sqlite.org/wal.html).\n\n"
        "## Is SQLite fast?\n\nYes, for most workloads.\n\n"
        "## Installation\n\nSee the [download page](https://sqlite.org/amalgamation.html).\n")
    ingest(store_copy, embedder, load_settings(home=str(tmp_path)), str(docs), base_url="https://example.org/",
           progress=False)
    resolver = Resolver(store_copy)
    questions = {q.text: q for q in docs_questions(store_copy, resolver)}
    assert set(questions) == {"How do I get a column that numbers rows by itself?",
                              "Why does a second writer get SQLITE_BUSY?"}
    busy = questions["Why does a second writer get SQLITE_BUSY?"]
    assert busy.origin == "docs" and len(busy.targets) == 2
    assert set().union(*busy.targets) == resolver.resolve_entry("https://sqlite.org/c3ref/busy_timeout.html") \
        | resolver.resolve_entry("https://sqlite.org/wal.html")
    own = resolver.resolve_entry("https://example.org/faq.md#why-does-a-second-writer-get-sqlite_busy")
    assert own and busy.exclude == own


# -- serve: the history of DEEPMEM_HISTORY_CHANNELS, at start and then every DEEPMEM_HISTORY_INTERVAL --------------

SECRET = "test-signing-secret"


def serve_settings(**more):
    from shared.settings import load_settings

    return load_settings(slack_bot_token="xoxb-test", slack_signing_secret=SECRET, port=0, retrain_cron="off",
                         history_channels="help-docs", **more)


def history_questions(feedback: FeedbackStore) -> set[str]:
    return {r["question"] for r in feedback.labels() if r["source"] == "history"}


async def test_serve_imports_the_channels_history_in_the_background_at_start(store_copy):
    from .helpers.slack_api import serving

    api = await SlackHistory().start()
    api.rate_limit["conversations.history"] = 2  # a slow first page: readiness must not wait for it
    try:
        async with serving(serve_settings(), SECRET, api=api) as slack:
            async with slack.session.get(f"{slack.url}/healthz") as r:
                assert r.status == 200
            assert not history_questions(slack.runtime.feedback)  # still waiting out the 429s
            assert any(s.startswith("history import (help-docs, every 24 h)") for s in slack.runtime.services)
            labeled = await until(lambda: len(history_questions(slack.runtime.feedback)) == 4 and
                                     history_questions(slack.runtime.feedback))
            assert "How do I make a column autoincrement in SQLite?" in labeled
            assert {c["channel"] for c in api.calls_of("conversations.history")} == {HELP}
    finally:
        await api.stop()


async def test_serve_imports_again_every_interval_reading_only_what_is_new(store_copy):
    from .helpers.slack_api import serving

    api = await SlackHistory().start()
    settings = serve_settings().model_copy(update={"history_interval": 1.0})  # a minute at least, in production
    try:
        async with serving(settings, SECRET, api=api) as slack:
            await until(lambda: len(history_questions(slack.runtime.feedback)) == 4)
            await asyncio.sleep(0.5)
            api.calls.clear()
            api.add_thread(HELP, [msg("1700001100.000100", "U14ASKER7", "Does VACUUM need twice the disk space?"),
                                  msg("1700001160.000100", "U02HELPER", "<https://sqlite.org/lang_vacuum.html>",
                                      reactions=check("U14ASKER7"))])
            await until(lambda: "Does VACUUM need twice the disk space?" in
                           history_questions(slack.runtime.feedback))
            assert {c["ts"] for c in api.calls_of("conversations.replies")} == {"1700001100.000100"}
    finally:
        await api.stop()


async def test_serve_reads_no_history_when_the_interval_is_off(store_copy):
    from .helpers.slack_api import serving

    api = await SlackHistory().start()
    try:
        async with serving(serve_settings(history_interval="off"), SECRET, api=api) as slack:
            await asyncio.sleep(1.5)
            assert not api.calls_of("conversations.history") and not api.calls_of("conversations.list")
            assert not any(s.startswith("history import") for s in slack.runtime.services)
    finally:
        await api.stop()


def test_the_history_interval_setting():
    from shared.errors import ConfigError
    from shared.settings import load_settings

    assert load_settings().history_interval == 86400
    assert load_settings(history_interval="6h").history_interval == 6 * 3600
    assert load_settings(history_interval="30m").history_interval == 1800
    assert load_settings(history_interval="off").history_interval is None
    for bad, said in (("10s", "at least a minute"), ("soon", "not a duration")):
        with pytest.raises(ConfigError, match=said):
            load_settings(history_interval=bad)


async def test_shutdown_stops_an_import_between_threads_and_the_next_goes_on(store_copy, tmp_path):
    import json

    from slack_sdk import WebClient

    from bot.history import import_history

    from .helpers.slack_api import serving

    api = await SlackHistory().start()
    api.rate_limit["conversations.replies"] = 1  # the first thread takes a second to read
    try:
        async with serving(serve_settings(), SECRET, api=api):
            await until(lambda: api.calls_of("conversations.replies"))
            started = time.monotonic()
        assert time.monotonic() - started < 10  # the thread being read, then it stopped
        home = Home.open(tmp_path / "home")
        state = json.loads((home.root / "history" / f"{HELP}.json").read_text())
        assert state["pass"] is not None and state["complete_through"] is None  # interrupted, saved
        assert len(labels_by_question(home)) < 4
        client = WebClient(token="xoxb-test", base_url=api.base_url)
        with Store.open(home.store_path) as store:
            report = await asyncio.to_thread(import_history, client, home, store, ["help-docs"])
        assert report.resumed and len(labels_by_question(home)) == 4
    finally:
        await api.stop()


def test_history_labels_act_at_once_through_the_feedback_memory(workspace, slack, store_copy, embedder):
    """A question like one the history answered finds the section its answer linked, before any
    retraining: history labels name places (pages, sections), and every chunk of the place counts."""
    from shared.feedback_memory import FeedbackMemory, MemoryLoader
    from shared.retrieval import open_searcher
    from shared.vector_index import MemoryIndex

    assert run_import("--channel", "#help-docs").exit_code == 0
    memory = FeedbackMemory()
    searcher = open_searcher(store_copy, embedder, workspace, index=MemoryIndex(store_copy), memory=memory)
    loader = MemoryLoader(memory, FeedbackStore(workspace), store_copy, embedder, workspace.root / "memory.json")
    asked = {"why is my database locked when two processes write at the same time": "https://sqlite.org/wal.html",
             "is there a way to add a column to an existing table?": "https://sqlite.org/lang_altertable.html"}
    before = {q: [h.chunk.url for h in searcher.search(q, 10).hits] for q in asked}
    assert loader.refresh() and len(memory) == 4
    locked = "why is my database locked when two processes write at the same time"
    assert "https://sqlite.org/wal.html" not in [u.split("#")[0] for u in before[locked][:3]]  # plain search
    for question, place in asked.items():  # the linked place first (and what was first stays first)
        after = [h.chunk.url for h in searcher.search(question, 10).hits]
        assert after[0].startswith(place), (question, before[question][:3], after[:3])


@pytest.fixture(params=["files", "postgres"])
def replicas(request, slack, store_copy, tmp_path, monkeypatch):
    """Two processes importing history: on one machine (one data directory, files), or two replicas with
    data directories of their own and one database (the small store copied into it)."""
    from shared.settings import load_settings
    from shared.store import open_store

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_API_URL", slack.base_url)
    if request.param == "files":
        home = Home.open(store_copy.path.parent)
        settings = load_settings(home=str(home.root))
        yield [(home, settings, store_copy), (home, settings, store_copy)]
        return
    from shared.migrate import migrate_home

    pg_url = request.getfixturevalue("pg_url")
    assert migrate_home(Home.open(store_copy.path.parent), pg_url).ok
    out = []
    for name in ("replica-1", "replica-2"):
        home = Home.open(tmp_path / name)
        settings = load_settings(home=str(home.root), database_url=pg_url)
        out.append((home, settings, open_store(home, settings, create=False)))
    yield out
    for _, _, store in out:
        store.close()


def test_replicas_share_the_import_progress_and_never_read_a_channel_at_once(replicas, slack):
    from bot.history import history_client, import_history
    from shared.history_progress import open_progress
    from shared.feedback import open_feedback

    def run(n, **kw):
        home, settings, store = replicas[n]
        return import_history(history_client(settings), home, store, ["help-docs"], settings=settings, **kw)

    first = run(0, max_threads=2)  # stopped after two threads (a replica restarted mid-import)
    assert first.threads_read == 2
    read_first = {c["ts"] for c in slack.calls_of("conversations.replies")}
    slack.calls.clear()
    second = run(1)  # the other one goes on from where the first stopped
    assert second.resumed and second.threads_read > 0
    assert not read_first & {c["ts"] for c in slack.calls_of("conversations.replies")}  # no thread read twice
    home, settings, _ = replicas[1]
    assert len({r["question"] for r in open_feedback(home, settings).labels()}) == 4  # the whole import's labels

    progress = open_progress(*replicas[0][:2])
    try:
        with progress.reading(HELP):  # the first replica is reading the channel now
            slack.calls.clear()
            third = run(1)
        assert third.busy == ["help-docs"] and third.channels == [] and third.threads_read == 0
        assert not slack.calls_of("conversations.history")  # nothing read from Slack meanwhile
        after = run(1)  # once it is done, the channel is read again (incrementally)
        assert after.busy == [] and after.channels == ["help-docs"] and after.threads_read == 0
    finally:
        progress.close()
