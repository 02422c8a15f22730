"""The feedback log, one suite run against both backends: DuckDB in the data directory and PostgreSQL."""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner

from shared.cli import cli
from shared.feedback import FeedbackStore, open_feedback
from shared.feedback.ops import InvalidFeedback
from shared.home import Home
from shared.settings import load_settings
from .helpers.deployments import Deployment, deployment

T0 = "2026-01-01T09:00:00+00:00"


class Backend(Deployment):
    """A deployment's feedback log; ``replica()`` opens another store on it, as another bot process would."""
    open = staticmethod(open_feedback)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path, monkeypatch):
    b = deployment(Backend, request, tmp_path, monkeypatch)
    yield b
    b.close()


def _conversation(store) -> None:
    """Two questions, votes (one changed, one reaction withdrawn), a click and an imported label."""
    ops = [FeedbackStore.question_op(id="q1", asked_at=T0, source="slack", user_id="alice", text="how do I vacuum?"),
           FeedbackStore.retrievals_op("q1", "answer", [
               {"rank": 1, "chunk_id": "c1", "url": "https://x/a#1", "score": 0.9, "cited": True},
               {"rank": 2, "chunk_id": "c2", "url": "https://x/a#2", "score": 0.8, "cited": True},
               {"rank": 3, "chunk_id": "c3", "url": "https://x/b", "score": 0.7, "cited": False}]),
           FeedbackStore.question_op(id="q2", asked_at=T0, source="web", user_id="bob", text="what is WAL?"),
           FeedbackStore.retrievals_op("q2", "answer", [
               {"rank": 1, "chunk_id": "c9", "url": "https://x/wal", "score": 0.5, "cited": True}])]
    store.record(ops)
    store.record([FeedbackStore.event_op(question_id="q1", kind="vote", user_id="bob", value=1, id="e1",
                                         at="2026-01-01T09:01:00+00:00"),
                  FeedbackStore.event_op(question_id="q1", kind="vote", user_id="bob", value=-1, id="e2",
                                         at="2026-01-01T09:02:00+00:00"),
                  FeedbackStore.event_op(question_id="q2", kind="reaction", user_id="carol", value=1, id="e3",
                                         detail="reaction:+1", at="2026-01-01T09:01:00+00:00"),
                  FeedbackStore.event_op(question_id="q2", kind="reaction", user_id="carol", value=0, id="e4",
                                         detail="reaction:+1", at="2026-01-01T09:03:00+00:00"),
                  FeedbackStore.event_op(question_id="q1", kind="source_click", user_id="alice", value=1,
                                         chunk_id="c3", rank=3, id="e5", at="2026-01-01T09:04:00+00:00")])
    store.record([FeedbackStore.labels_op("q2", "history", [{"target": "https://x/wal", "value": 2, "user_id": "dan",
                                                             "at": "2026-01-01T10:00:00+00:00"}])])
    store.record([FeedbackStore.question_op(id="q1", message_ts="1700000000.000100")])  # where it was posted
    store.drain()


def _plain(rows: list[dict]) -> list[dict]:
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()} for r in rows]


EXPECTED_LABELS = [
    # bob changed his vote to 👎: both cited chunks are not relevant
    ("q1", "c1", -1, "vote", "bob"), ("q1", "c2", -1, "vote", "bob"),
    ("q1", "c3", 1, "click", "alice"),
    ("q2", None, 2, "label", "dan"),  # carol's reaction was withdrawn
]


def test_labels_are_derived_by_the_one_view(backend):
    store = backend.replica()
    _conversation(store)
    got = sorted((r["question_id"], r["chunk_id"], r["label"], r["kind"], r["user_id"]) for r in store.labels())
    assert got == sorted(EXPECTED_LABELS, key=lambda r: (r[0], r[1] or "", r[2]))
    assert store.pending() == 0
    assert [q["message_ts"] for q in store.questions()] == ["1700000000.000100", None]
    assert store.rows("SELECT id FROM questions WHERE message_ts = ?", ["1700000000.000100"]) == [{"id": "q1"}]


def test_both_backends_give_the_same_relations(tmp_path, pg_url):
    """The same writes give the same rows in every relation, the labels view included."""
    local = open_feedback(Home.open(tmp_path / "a"), load_settings(home=str(tmp_path / "a")))
    shared = open_feedback(Home.open(tmp_path / "b"), load_settings(home=str(tmp_path / "b"), database_url=pg_url))
    try:
        awkward = FeedbackStore.question_op(  # what the mirror's CSV copy must keep: quotes, commas, lines, ""
            id="q3", asked_at="2026-01-01T09:00:00.123456+00:00", source="web", user_id="erin",
            text='a "quoted", comma\nand a new line, ünïcode 🎉\\N', answer="", latency_ms=0, covered=False,
            coverage=0.1 + 0.2)
        for log in (local, shared):
            _conversation(log)
            log.record([awkward])
            log.drain()
        for what in ("labels", "events", "questions"):
            assert _plain(getattr(local, what)()) == _plain(getattr(shared, what)()), what
        assert next(q for q in shared.questions() if q["id"] == "q3")["answer"] == ""  # empty, not NULL
        query = "SELECT question_id, variant, rank, chunk_id, url, score, cited FROM retrievals ORDER BY ALL"
        assert local.rows(query) == shared.rows(query)
        # reads by key: the Postgres log answers them from its tables, with the same rows
        for log in (local, shared):
            assert log.question("q3") == {"id": "q3", "user_id": "erin", "channel_id": None, "thread_ts": None,
                                          "text": 'a "quoted", comma\nand a new line, ünïcode 🎉\\N'}
            assert log.question("nope") is None
            assert [(r["rank"], r["chunk_id"], r["cited"]) for r in log.answer_retrievals("q1")] == [
                (1, "c1", True), (2, "c2", True), (3, "c3", False)]
            assert log.has_event("e5") and not log.has_event("e6")
    finally:
        shared.close()


def test_votes_sent_to_two_replicas_all_land(backend):
    first, second = backend.replica(), backend.replica()
    first.record([FeedbackStore.question_op(id="q", asked_at=T0, source="slack", user_id="u", text="q?")])
    first.record([FeedbackStore.retrievals_op("q", "answer", [{"rank": 1, "chunk_id": "c", "cited": True}])])
    assert second.questions()[0]["id"] == "q"  # the other replica sees it (Postgres) / drains it (DuckDB)

    def vote(store, name):
        for i in range(40):
            store.record([FeedbackStore.event_op(question_id="q", kind="vote", user_id=f"{name}{i}", value=1,
                                                 id=f"{name}-{i}")])

    threads = [threading.Thread(target=vote, args=(s, n)) for s, n in ((first, "a"), (second, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first.drain()
    for store in (first, second):
        assert len(store.events()) == 80
        assert len(store.labels()) == 80  # one user, one vote, one cited chunk each


def test_forget_removes_a_user_everywhere(backend):
    first, second = backend.replica(), backend.replica()
    _conversation(first)
    assert {q["user_id"] for q in second.questions()} == {"alice", "bob"}  # the second replica's copy is warm
    counts = first.forget("alice")
    assert counts["questions"] == 1 and counts["events"] == 1
    for store in (first, second):
        assert "alice" not in json.dumps(_plain(store.questions() + store.events() + store.labels()))
        assert not store.rows("SELECT * FROM retrievals WHERE question_id = 'q1'")
        assert [q["id"] for q in store.questions()] == ["q2"]


def test_bad_records_are_refused_in_one_line_and_block_nothing(backend):
    store = backend.replica()
    good = FeedbackStore.question_op(id="q", asked_at=T0, source="web", user_id="u", text="q?")
    for bad in ({"op": "event", "row": {"id": "e", "question_id": "q", "occurred_at": "last tuesday", "kind": "vote"}},
                {"op": "event", "row": {"id": "e", "question_id": "q", "occurred_at": T0, "kind": "vote",
                                        "rank": "first"}},
                {"op": "question", "row": {"id": "q\x00", "asked_at": T0, "source": "web", "text": "q?"}},
                {"op": "drop tables"}, "not an object"):
        with pytest.raises(InvalidFeedback) as refused:
            store.record([good, bad])
        assert "\n" not in str(refused.value)
    assert store.questions() == []  # nothing of a refused batch was written
    store.record([good, FeedbackStore.event_op(question_id="q", kind="vote", user_id="u", value=1, id="e")])
    store.record([FeedbackStore.question_op(id="q-nul", asked_at=T0, source="web", text="a \x00 b", answer="c\x00")])
    store.drain()
    assert [e["id"] for e in store.events()] == ["e"]
    nul = store.rows("SELECT text, answer FROM questions WHERE id = 'q-nul'")  # kept, the NUL made visible
    assert nul == [{"text": "a \ufffd b", "answer": "c\ufffd"}]


def test_export_and_import_round_trip_through_the_cli(backend, store_copy, tmp_path):
    chunk = store_copy.conn.execute("SELECT id FROM chunks ORDER BY id LIMIT 1").fetchone()[0]
    page = store_copy.conn.execute("SELECT url FROM pages ORDER BY url LIMIT 1").fetchone()[0]
    lines = [{"query": "how do I vacuum?", "relevant": [chunk], "user": "importer"},
             {"query": "what is a page?", "relevant": [page], "not_relevant": [chunk], "user": "importer"}]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    if backend.url:  # the store is in the database too: entries are resolved against it
        from shared.migrate import migrate_home

        assert migrate_home(backend.home, backend.url).ok
    home = ["--home", str(backend.home.root)]
    result = CliRunner().invoke(cli, [*home, "feedback", "import", str(path)], catch_exceptions=False)
    assert result.exit_code == 0 and "imported 2 questions, 3 labels" in result.output
    exported = CliRunner().invoke(cli, [*home, "feedback", "export", "--what", "labels"], catch_exceptions=False)
    labels = [json.loads(line) for line in exported.output.splitlines()]
    assert sorted((r["question"], r["chunk_id"] or r["target"], r["label"]) for r in labels) == sorted(
        [("how do I vacuum?", chunk, 1), ("what is a page?", page, 1), ("what is a page?", chunk, -1)])
    # what was exported goes back in: the export's questions and labels as an import file
    again = tmp_path / "again.jsonl"
    by_question: dict[str, dict] = {}
    for r in labels:
        entry = by_question.setdefault(r["question"], {"query": r["question"], "relevant": [], "not_relevant": [],
                                                       "user": r["user_id"]})
        entry["relevant" if r["label"] > 0 else "not_relevant"].append(r["chunk_id"] or r["target"])
    again.write_text("".join(json.dumps(e) + "\n" for e in by_question.values()))
    result = CliRunner().invoke(cli, [*home, "feedback", "import", str(again)], catch_exceptions=False)
    assert "imported 2 questions, 3 labels" in result.output
    twice = CliRunner().invoke(cli, [*home, "feedback", "export", "--what", "labels", "--json"],
                               catch_exceptions=False)
    assert len(json.loads(twice.output)) == 6  # another file: its questions are new ones, with the same labels
    forgot = CliRunner().invoke(cli, [*home, "feedback", "forget", "importer"], catch_exceptions=False)
    assert "forgot importer: 4 questions" in forgot.output
    empty = CliRunner().invoke(cli, [*home, "feedback", "export", "--what", "questions", "--json"],
                               catch_exceptions=False)
    assert json.loads(empty.output) == []


def test_forget_removes_the_users_thread_state_too(tmp_path, pg_url):
    """With several replicas the threads the bot answered are in the database (shared.coordination): the
    threads where a forgotten user asked go with the user."""
    from shared.coordination import open_coordination

    settings = load_settings(home=str(tmp_path / "home"), database_url=pg_url)
    coordination = open_coordination(settings)
    store = open_feedback(Home.open(tmp_path / "home"), settings)
    try:
        for qid, user, ts in (("qa", "alice", "1700000000.000100"), ("qb", "bob", "1700000000.000200")):
            store.record([FeedbackStore.question_op(id=qid, asked_at=T0, source="slack", user_id=user, text="q?",
                                                    channel_id="C1", thread_ts=ts)])
            coordination.remember_thread("C1", ts, question_id=qid, message_ts=ts + "1")
        store.forget("alice")
        assert coordination.thread_of("qa") is None and not coordination.is_bot_thread("C1", "1700000000.000100")
        assert coordination.thread_of("qb") == "1700000000.000200" and coordination.is_bot_thread("C1",
                                                                                                "1700000000.000200")
    finally:
        store.close()
        coordination.close()


MIRROR_USER = """
import sys, time
from shared.feedback.postgres import PostgresFeedback
log = PostgresFeedback(sys.argv[1])
log.labels()
print(log._folder, flush=True)
if sys.argv[2] == "close":
    log.close()
    print("closed", flush=True)
else:
    time.sleep(600)
"""


def test_a_replicas_mirror_is_a_file_removed_on_close_or_by_the_next_one_after_a_kill(tmp_path, pg_url):
    """The Postgres log's mirror is a DuckDB file in its own temporary folder (bounded memory); a replica
    killed with SIGKILL cannot remove it, so the next one on the machine does."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    shared = open_feedback(Home.open(tmp_path / "h"), load_settings(home=str(tmp_path / "h"), database_url=pg_url))
    _conversation(shared)
    shared.close()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    killed = subprocess.Popen([sys.executable, "-c", MIRROR_USER, pg_url, "sleep"], env=env, stdout=subprocess.PIPE,
                              text=True)
    folder = Path(killed.stdout.readline().strip())
    assert folder.parent == tmp and (folder / "mirror.duckdb").stat().st_size > 0
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert folder.exists()  # nobody removed it
    run = subprocess.run([sys.executable, "-c", MIRROR_USER, pg_url, "close"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    own = Path(run.stdout.splitlines()[0])
    assert run.stdout.splitlines()[1] == "closed"
    assert not folder.exists() and not own.exists() and list(tmp.iterdir()) == []
