"""Resolved threads, end to end over a loopback Slack: the bot answers, a colleague answers better
with a link into the docs, the asker marks it resolved; the labels land on the bot's question and
the thread becomes a page that later questions find, with a link back to the thread."""

from __future__ import annotations

import asyncio
import time

import pytest
from click.testing import CliRunner

from shared.cli import cli
from shared.settings import load_settings
from shared.thread_documents import THREAD_KIND, THREADS_SOURCE

from .helpers.slack_api import BOT_USER, serving_bot
from .helpers.waiting import until

SECRET = "test-signing-secret"
ASKED = "1700000000.000100"
QUESTION = "How do I add a column to an existing table?"
DOCS_LINK = "https://sqlite.org/lang_altertable.html#altertabaddcol"
PERMALINK = f"https://test.slack.com/archives/C1/p{ASKED.replace('.', '')}"


@pytest.fixture
async def slack(store_copy):
    async with serving_bot() as harness:
        yield harness


def mention(text, ts, user="U_ALICE", channel="C1"):
    return {"type": "app_mention", "user": user, "text": f"<@{BOT_USER}> {text}", "ts": ts, "channel": channel,
            "event_ts": ts}


def reacted(user: str, channel: str, ts: str, name="white_check_mark", item_user="U_BOB"):
    return {"type": "reaction_added", "user": user, "reaction": name, "item_user": item_user,
            "item": {"type": "message", "channel": channel, "ts": ts}, "event_ts": f"{time.time():.6f}"}


async def answered(slack, text, ts, user="U_ALICE", channel="C1", posts=1) -> dict:
    """Ask the bot; returns its recorded question once the feedback store has it."""
    await slack.event(mention(text, ts, user, channel))
    await slack.wait_posts(posts)
    return await until(lambda: next((q for q in slack.feedback().questions() if q["thread_ts"] == ts), None),
                       what="the question in the feedback store")


def seed_thread(slack, ts: str, question: str, asker: str, channel: str, replies: list[dict]) -> None:
    """The thread as Slack now shows it: the question, the bot's answer(s), then the people's replies."""
    parent = {"type": "message", "ts": ts, "thread_ts": ts, "user": asker, "text": f"<@{BOT_USER}> {question}",
              "channel": channel}
    bot = [m for m in slack.api.threads.get(ts, []) if m.get("user") == BOT_USER]
    slack.api.threads[ts] = [parent, *bot, *({"type": "message", "thread_ts": ts} | r for r in replies)]


def marked_thread(ts: str, asker: str, question: str, link: str) -> list[dict]:
    """A thread the bot took no part in: a question, U_BOB's reply a minute later linking into the
    docs, and the asker's ✅ on it."""
    reply = f"{int(ts.split('.')[0]) + 60}.000100"
    return [{"type": "message", "ts": ts, "thread_ts": ts, "user": asker, "text": question},
            {"type": "message", "ts": reply, "thread_ts": ts, "user": "U_BOB", "text": f"<{link}>",
             "reactions": [{"name": "white_check_mark", "users": [asker], "count": 1}]}]


def labels_of(slack, question_id: str) -> list[tuple]:
    return sorted((r["target"], r["label"], r["user_id"], r["kind"])
                  for r in slack.feedback().labels() if r["question_id"] == question_id)


def thread_pages(store) -> list[tuple]:
    return store.conn.execute("SELECT p.url, p.title, p.path, count(c.rowid) FROM pages p JOIN sources s "
                              "ON s.id = p.source_id LEFT JOIN chunks c ON c.page_id = p.id WHERE s.uri = ? "
                              "GROUP BY p.id ORDER BY p.id", (THREADS_SOURCE,)).fetchall()


async def test_a_reply_the_asker_marks_resolved_becomes_labels_and_a_citable_thread(slack):
    question = await answered(slack, QUESTION, ASKED)
    store = slack.runtime.store
    seed_thread(slack, ASKED, QUESTION, "U_ALICE", "C1", [
        {"ts": "1700000100.000100", "user": "U_BOB",
         "text": f"<{DOCS_LINK}|ALTER TABLE ADD COLUMN> does it: ALTER TABLE t ADD COLUMN c, the new column "
                 "goes at the end and may not be PRIMARY KEY or UNIQUE",
         "reactions": [{"name": "white_check_mark", "users": ["U_ALICE"], "count": 1}]}])

    status, _, seconds = await slack.event(reacted("U_ALICE", "C1", "1700000100.000100"))
    assert status == 200 and seconds < 1.0  # acknowledged before the thread is read

    # (a) the colleague's link is a strong label on the bot's question, given by the colleague
    await until(lambda: labels_of(slack, question["id"]), what="the thread's labels")
    assert labels_of(slack, question["id"]) == [(DOCS_LINK, 2, "U_BOB", "label")]
    events = slack.feedback().rows("SELECT detail FROM events WHERE question_id = ? AND kind = 'label'",
                                   [question["id"]])
    assert [e["detail"] for e in events] == ["thread"]

    # (b) the thread is a page of the "chat-threads" source, at the thread's permalink
    pages = await until(lambda: thread_pages(store), what="the thread's page")
    assert len(pages) == 1
    url, title, path, chunks = pages[0]
    assert url == PERMALINK and title == f"Resolved in #help-docs: {QUESTION}" and chunks >= 1
    assert path == f"C1/{ASKED}/U_ALICE,U_BOB"
    assert store.source(THREADS_SOURCE).kind == THREAD_KIND
    assert [c["method"] for c in slack.api.calls if c["method"] == "chat.getPermalink"] == ["chat.getPermalink"]

    # a later, close question finds it, with the thread as the source's address
    searcher = slack.runtime.qa.answerer.searcher
    hits = (await asyncio.to_thread(searcher.search, "is there a way to add a new column to a table that exists", 5,
                                    mode="vector")).hits
    assert hits[0].chunk.url == PERMALINK
    await slack.event(mention("is there a way to add a new column to a table that already exists?",
                              "1700000500.000100", user="U_CAROL"))
    post = (await slack.wait_posts(2))[1]
    sources = next(b for b in post["blocks"] if b.get("block_id") == "sources")["elements"]
    assert PERMALINK in [e["url"] for e in sources]

    # (c) a second ✅ (another mark, another delivery) records nothing twice
    replies_read = len(slack.api.posts("conversations.replies"))
    await slack.event(reacted("U_ALICE", "C1", "1700000100.000100", name="heavy_check_mark"))
    await until(lambda: len(slack.api.posts("conversations.replies")) > replies_read, what="the second check")
    await asyncio.sleep(1.5)  # a spool drain
    assert labels_of(slack, question["id"]) == [(DOCS_LINK, 2, "U_BOB", "label")]
    assert thread_pages(store) == pages
    assert len(slack.api.posts("chat.getPermalink")) == 1


async def test_threads_the_bot_did_not_answer_and_other_peoples_marks_record_nothing(slack):
    question = await answered(slack, QUESTION, ASKED)
    seed_thread(slack, ASKED, QUESTION, "U_ALICE", "C1", [
        {"ts": "1700000100.000100", "user": "U_BOB", "text": f"<{DOCS_LINK}>",
         "reactions": [{"name": "white_check_mark", "users": ["U_DAVE"], "count": 1}]}])
    # a thread the bot never answered, in the same channel, with a docs link marked by its asker
    slack.api.threads["1700000300.000100"] = marked_thread("1700000300.000100", "U_ALICE", "How do I drop a column?",
                                                           "https://sqlite.org/lang_altertable.html#altertabdropcol")
    slack.api.threads["1700000400.000100"] = marked_thread("1700000400.000100", "U_CAROL", "How do I rename a table?",
                                                           "https://sqlite.org/lang_altertable.html#altertabrename")

    await slack.event(reacted("U_DAVE", "C1", "1700000100.000100"))  # not the asker: nothing is read
    await slack.event(reacted("U_CAROL", "C1", "1700000460.000100"))  # never asked the bot here: nothing is read
    await asyncio.sleep(1.0)
    assert not slack.api.posts("conversations.replies")
    await slack.event(reacted("U_ALICE", "C1", "1700000360.000100"))  # asked the bot, but in another thread
    await until(lambda: slack.api.posts("conversations.replies"), what="the thread's lookup")
    await asyncio.sleep(1.5)  # a spool drain
    assert [r for r in slack.feedback().labels() if r["kind"] == "label"] == []
    assert thread_pages(slack.runtime.store) == []
    assert not slack.api.posts("chat.getPermalink")
    assert len(slack.feedback().questions()) == 1 and question["text"] == QUESTION


async def test_thanks_in_a_private_channel_records_labels_but_no_document(slack):
    slack.api.channels["G1"] = {"name": "team-private", "is_private": True}
    question = await answered(slack, QUESTION, ASKED, channel="G1")
    seed_thread(slack, ASKED, QUESTION, "U_ALICE", "G1", [
        {"ts": "1700000100.000100", "user": "U_BOB", "text": f"see <{DOCS_LINK}|the docs>"},
        {"ts": "1700000200.000100", "user": "U_ALICE", "text": "thanks, that worked!"}])
    slack.api.calls.clear()
    status, _, _ = await slack.event({"type": "message", "channel": "G1", "channel_type": "group", "user": "U_ALICE",
                                      "text": "thanks, that worked!", "ts": "1700000200.000100",
                                      "thread_ts": ASKED})
    assert status == 200
    await until(lambda: labels_of(slack, question["id"]), what="the thread's labels")
    assert labels_of(slack, question["id"]) == [(DOCS_LINK, 2, "U_BOB", "label")]
    await asyncio.sleep(0.5)
    assert thread_pages(slack.runtime.store) == []  # said in a private channel: never shown to others
    assert not slack.api.posts("chat.getPermalink")
    assert not slack.api.posts()  # thanks that asks nothing is not answered


async def test_a_failing_slack_is_logged_and_the_bot_goes_on(slack, caplog):
    await answered(slack, QUESTION, ASKED)
    slack.api.errors["conversations.replies"] = "internal_error"
    await slack.event(reacted("U_ALICE", "C1", ASKED, item_user="U_ALICE"))
    await until(lambda: "could not check a resolved thread" in caplog.text, what="the warning")
    await slack.event(mention("Does SQLite support foreign keys?", "1700000900.000100"))
    await slack.wait_posts(2)  # still answering


def test_forget_removes_the_thread_documents_a_user_took_part_in(store_copy, embedder, tmp_path):
    from shared.thread_documents import add_thread_document

    settings = load_settings()
    for ts, users in (("1700000000.000100", ["U_ALICE", "U_BOB"]), ("1700000500.000100", ["U_CAROL", "U_DAVE"])):
        add_thread_document(store_copy, embedder, settings, url=f"https://test.slack.com/archives/C1/p{ts}",
                            channel="C1", thread_ts=ts, question=QUESTION, answer="ALTER TABLE ADD COLUMN",
                            users=users, where="#help-docs")
    before = store_copy.stats()["chunks"]
    result = CliRunner().invoke(cli, ["feedback", "forget", "U_BOB"])
    assert result.exit_code == 0, result.output
    assert "1 resolved-thread document" in result.output
    assert [p[0] for p in thread_pages(store_copy)] == ["https://test.slack.com/archives/C1/p1700000500.000100"]
    assert store_copy.stats()["chunks"] < before
    result = CliRunner().invoke(cli, ["feedback", "forget", "U_NOBODY"])
    assert result.exit_code == 0 and "resolved-thread" not in result.output
    assert len(thread_pages(store_copy)) == 1


def test_plain_reingest_keeps_the_threads_and_sources_lists_them(store_copy, embedder, small_docs):
    from shared.thread_documents import add_thread_document

    add_thread_document(store_copy, embedder, load_settings(), url=PERMALINK, channel="C1", thread_ts=ASKED,
                        question=QUESTION, answer="ALTER TABLE ADD COLUMN", users=["U_ALICE", "U_BOB"],
                        where="#help-docs")
    from shared.sources import source_key

    docs = source_key(str(small_docs))  # the cached test store may have been built from another copy of them
    with store_copy.transaction():
        store_copy.conn.execute("UPDATE sources SET uri = ? WHERE id = ?", (docs, store_copy.sources()[0].id))
    result = CliRunner().invoke(cli, ["ingest", "--json"])
    assert result.exit_code == 0, result.output
    assert THREADS_SOURCE not in result.output and docs in result.output
    assert len(thread_pages(store_copy)) == 1
    result = CliRunner().invoke(cli, ["ingest", THREADS_SOURCE])
    assert result.exit_code != 0 and "resolved threads" in result.output
    assert len(thread_pages(store_copy)) == 1
    listed = CliRunner().invoke(cli, ["sources"])
    assert listed.exit_code == 0
    line = next(line for line in listed.output.splitlines() if line.startswith(THREADS_SOURCE))
    assert "resolved Slack threads" in line and "1 pages" in line and "never" not in line
