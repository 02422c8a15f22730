"""The feedback store: concurrent writers in several processes, export, import and forget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from click.testing import CliRunner

from shared.cli import cli
from shared.feedback.store import FeedbackStore
from shared.home import Home

WRITER = r"""
import sys, time
from shared.home import Home
from shared.feedback.store import FeedbackStore
store = FeedbackStore(Home.open(sys.argv[1]), lock_timeout=60)
name, n = sys.argv[2], int(sys.argv[3])
store.record([FeedbackStore.question_op(id=f"q-{name}", asked_at="2026-01-01T00:00:00+00:00", source="cli",
                                        user_id=name, text=f"question from {name}")])
for i in range(n):
    store.record([FeedbackStore.event_op(question_id=f"q-{name}", kind="vote", user_id=name, value=1,
                                         id=f"{name}-{i}")])
    if i % 10 == 0:
        store.drain(timeout=0.05)   # try to apply now; if the lock is taken, the spool keeps it
"""


def test_concurrent_writers_in_many_processes_lose_nothing(tmp_path):
    home = Home.open(tmp_path / "home")
    store = FeedbackStore(home)
    stop = threading.Event()
    drained = []

    def server_like_drainer():  # what `deepmem serve` does every second, here as fast as it can
        while not stop.is_set():
            drained.append(store.drain(timeout=0.2))
            time.sleep(0.01)

    drainer = threading.Thread(target=server_like_drainer)
    drainer.start()
    env = dict(os.environ)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(home.root), f"w{i}", "150"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    # a reader exporting while everybody writes
    exports = []
    while any(w.poll() is None for w in writers):
        result = CliRunner().invoke(cli, ["--home", str(home.root), "feedback", "export", "--what", "events", "--json"])
        assert result.exit_code == 0, result.output
        exports.append(len(json.loads(result.output)))
    for w in writers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        assert "lock" not in err.lower()
    stop.set()
    drainer.join()
    events = store.events()
    assert len(events) == 4 * 150 and len({e["id"] for e in events}) == 600
    assert len(store.questions()) == 4
    assert store.pending() == 0
    assert exports == sorted(exports)  # readers see a growing, consistent history


def test_drain_is_idempotent_after_a_crash(tmp_path):
    home = Home.open(tmp_path / "home")
    store = FeedbackStore(home)
    ops = [FeedbackStore.question_op(id="q1", asked_at="2026-01-01T00:00:00+00:00", source="web", user_id="u",
                                     text="q"),
           FeedbackStore.event_op(question_id="q1", kind="vote", user_id="u", value=1, id="e1")]
    path = store.record(ops)
    copy = path.read_text()
    store.drain()
    (store.spool / path.name).write_text(copy)  # as if a crash came between import and delete
    store.drain()
    assert len(store.events()) == 1 and len(store.questions()) == 1


def test_import_export_and_forget(store_copy, tmp_path):
    cid = store_copy.conn.execute("SELECT id FROM chunks WHERE url LIKE '%autoinc.html#summary' LIMIT 1").fetchone()[0]
    labels = tmp_path / "labels.jsonl"
    labels.write_text("\n".join(json.dumps(x) for x in [
        {"query": "how do I get ids that never repeat?", "relevant": [cid], "user": "U_ANN"},
        {"query": "is the db file locked while writing", "relevant": ["wal.html#overview"],
         "not_relevant": ["https://sqlite.org/json1.html"], "user": "U_BEN"},
        {"query": "nothing matches", "relevant": ["nowhere.html"], "user": "U_ANN"},
    ]))
    run = lambda *a: CliRunner().invoke(cli, list(a), catch_exceptions=False)  # noqa: E731
    out = run("feedback", "import", str(labels)).output
    assert out.startswith("imported 3 questions") and "1 entries matched no chunk" in out
    exported = [json.loads(line) for line in run("feedback", "export").output.splitlines()]
    assert {(r["user_id"], r["label"]) for r in exported} >= {("U_ANN", 1), ("U_BEN", 1), ("U_BEN", -1)}
    assert any(r["chunk_id"] == cid and r["kind"] == "label" for r in exported)
    # a section or a page stays one label, resolved to its chunks when it is used
    assert sorted((r["target"], r["label"]) for r in exported if r["user_id"] == "U_BEN") == \
        [("https://sqlite.org/json1.html", -1), ("wal.html#overview", 1)]
    assert run("feedback", "forget", "U_ANN").output.strip() == "forgot U_ANN: 2 questions, 1 events"
    remaining = [json.loads(line) for line in run("feedback", "export", "--what", "questions").output.splitlines()]
    assert {r["user_id"] for r in remaining} == {"U_BEN"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "x", "relevant": ["a"]}\n{"query": 3}\n')
    result = CliRunner().invoke(cli, ["feedback", "import", str(bad)])
    assert result.exit_code == 1 and "bad.jsonl:2" in result.output


# -- nothing the database would refuse reaches the spool ------------------------------------------

def _question(**row):
    return FeedbackStore.question_op(**({"id": "q1", "asked_at": "2026-01-01T00:00:00+00:00", "source": "web",
                                          "user_id": "u", "text": "q"} | row))


def test_operations_the_database_would_refuse_are_one_line_errors_and_never_spooled(tmp_path):
    import pytest

    from shared.feedback.store import InvalidFeedback

    store = FeedbackStore(Home.open(tmp_path / "home"))
    bad = {
        "last tuesday": lambda: _question(asked_at="last tuesday"),
        "2999": lambda: _question(asked_at="2999-01-01T00:00:00Z"),  # would win "latest vote" for ever
        "rank": lambda: FeedbackStore.event_op(question_id="q1", kind="source_click", user_id="u", value=1,
                                               chunk_id="c", rank="first"),
        "kind": lambda: FeedbackStore.event_op(question_id="q1", kind="like", user_id="u", value=1),
        "value": lambda: FeedbackStore.event_op(question_id="q1", kind="vote", user_id="u", value=7),
        "id": lambda: FeedbackStore.event_op(question_id="x" * 300, kind="vote", user_id="u", value=1),
        "surrogate": lambda: _question(text="caf\udce9"),
        "score": lambda: FeedbackStore.retrievals_op("q1", "answer", [{"rank": 1, "chunk_id": "c",
                                                                        "score": float("nan")}]),
        "run status": lambda: FeedbackStore.run_op(id="r", started_at="2026-01-01T00:00:00Z", status="great"),
    }
    for name, build in bad.items():
        with pytest.raises(InvalidFeedback) as caught:
            store.record([build()])
        assert "\n" not in str(caught.value), name
    with pytest.raises(InvalidFeedback, match="lone surrogate"):  # a hand-made op is checked by record itself
        store.record([{"op": "question", "row": {"id": "q2", "asked_at": "2026-01-01T00:00:00Z", "source": "web",
                                                 "text": "caf\udce9"}}])
    with pytest.raises(InvalidFeedback, match="unknown operation"):
        store.record([{"op": "drop table"}])
    assert list(store.spool.iterdir()) == []  # nothing queued, no temporary file left behind
    store.record([_question(asked_at="2026-01-01 09:30")])  # no zone: UTC
    assert store.questions()[0]["asked_at"].isoformat().startswith("2026-01-01T09:30:00")


def test_a_partial_update_for_a_question_that_is_gone_is_dropped_not_poison(tmp_path):
    """Where an answer was posted arrives after its user was forgotten: it updates nothing and blocks nothing."""
    store = FeedbackStore(Home.open(tmp_path / "home"))
    store.record([_question()])
    store.forget("u")
    store.record([FeedbackStore.question_op(id="q1", message_ts="1700000000.000100"),
                  FeedbackStore.run_op(id="gone", status="interrupted", decision="the process ended")])
    store.record([_question(id="q2", user_id="v")])
    assert store.drain() == 3
    assert [q["id"] for q in store.questions()] == ["q2"] and store.runs() == []
    assert store.pending() == 0 and store.quarantined() == 0
    store.record([FeedbackStore.question_op(id="q2", message_ts="1700000000.000200")])
    assert store.questions()[0]["message_ts"] == "1700000000.000200"


def test_a_file_the_database_still_refuses_is_quarantined_and_its_good_operations_land(tmp_path, caplog):
    home = Home.open(tmp_path / "home")
    store = FeedbackStore(home)
    with store.connect() as conn:  # a rule the checks before the spool do not know about
        conn.execute("CREATE UNIQUE INDEX one_text ON questions(text)")
    store.record([_question(id="q1", text="same"), FeedbackStore.event_op(question_id="q1", kind="vote",
                                                                           user_id="u", value=1, id="e1")])
    poisoned = store.record([_question(id="q2", text="same"),  # refused by the index
                             FeedbackStore.event_op(question_id="q2", kind="vote", user_id="u", value=-1, id="e2")])
    store.record([FeedbackStore.event_op(question_id="q1", kind="vote", user_id="w", value=1, id="e3")])
    for _ in range(5):  # the bot drains every second: the file is set aside once, and logged once
        store.drain()
    assert {e["id"] for e in store.events()} == {"e1", "e2", "e3"}  # e2 sat beside the bad line: applied
    assert store.pending() == 0 and store.quarantined() == 1
    reason = (store.quarantine / f"{poisoned.name}.reason").read_text()
    assert reason.startswith("line 1: ") and "constraint" in reason.lower() and reason.count("\n") == 1
    assert len([r for r in caplog.records if "quarantine" in r.getMessage()]) == 1
    assert (store.quarantine / poisoned.name).read_text().count("\n") == 1  # only the refused line is kept
    run = lambda *a: CliRunner().invoke(cli, ["--home", str(home.root), "feedback", "quarantine", *a])  # noqa: E731
    assert poisoned.name in run().output
    with store.connect() as conn:  # the cause is fixed: the quarantined line can go in
        conn.execute("DROP INDEX one_text")
    assert run("--requeue").output.startswith("requeued 1 files; 1 operations applied; 0 quarantined")
    assert {q["id"] for q in store.questions()} == {"q1", "q2"}


def test_import_errors_name_the_file_and_line_and_import_nothing(store_copy, tmp_path):
    home = Home.open(store_copy.path.parent)
    cases = {
        "latin1.jsonl": b'{"query": "ok", "relevant": ["wal.html"]}\n{"query": "caf\xe9", "relevant": ["wal.html"]}\n',
        "when.jsonl": b'{"query": "ok", "relevant": ["wal.html"], "at": "2026-01-02T10:00:00Z"}\n'
                      b'{"query": "when", "relevant": ["wal.html"], "at": "last tuesday"}\n',
        "user.jsonl": b'{"query": "ok", "relevant": ["wal.html"], "user": {"id": 1}}\n',
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        result = CliRunner().invoke(cli, ["feedback", "import", str(tmp_path / name)])
        assert result.exit_code == 1 and result.exception.__class__ is SystemExit, (name, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
        assert f"{name}:{2 if name != 'user.jsonl' else 1}" in lines[0], result.output
    assert "not UTF-8" in CliRunner().invoke(cli, ["feedback", "import", str(tmp_path / "latin1.jsonl")]).output
    store = FeedbackStore(home)
    assert store.pending() == 0 and store.questions() == []  # nothing half-imported
    good = tmp_path / "good.jsonl"
    good.write_bytes(b'\xef\xbb\xbf{"query": "caf\xc3\xa9 au lait", "relevant": ["wal.html"], "at": "2026-01-02"}\n')
    assert CliRunner().invoke(cli, ["feedback", "import", str(good)]).exit_code == 0  # UTF-8 with a BOM is fine
    assert store.questions()[0]["text"] == "café au lait"


def test_a_damaged_feedback_database_is_a_one_line_error_and_writes_wait_in_the_spool(tmp_path, caplog):
    home = Home.open(tmp_path / "home")
    store = FeedbackStore(home)
    store.record([FeedbackStore.run_op(id="r1", started_at="2026-01-01T00:00:00Z", status="kept")])
    assert len(store.runs()) == 1
    data = home.feedback_path.read_bytes()
    home.feedback_path.write_bytes(data[: len(data) // 2 + 37_000])  # cut mid-file: fails on reading, not opening
    for args in (["runs"], ["feedback", "export"], ["feedback", "forget", "U1"]):
        result = CliRunner().invoke(cli, ["--home", str(home.root), *args])
        assert result.exit_code == 1, (args, result.output)
        assert result.output.count("\n") == 1 and "cannot read the feedback database" in result.output, result.output
        assert "Traceback" not in result.output
    fresh = FeedbackStore(home)
    fresh.record([_question()])
    for _ in range(3):
        assert fresh.drain() == 0  # the bot's loop: no exception
    assert fresh.pending() >= 1  # kept for when the file is repaired or moved aside
    assert len([r for r in caplog.records if "cannot read the feedback database" in r.getMessage()]) == 1
    home.feedback_path.rename(home.root / "feedback.duckdb.damaged")
    assert [q["id"] for q in FeedbackStore(home).questions()] == ["q1"]


def test_forgetting_a_user_forgets_their_quarantined_operations_too(tmp_path):
    store = FeedbackStore(Home.open(tmp_path / "home"))
    (store.spool / "00000000000000000001-1-x.jsonl").write_text(
        '{"op": "event", "row": {"id": "a", "question_id": "q", "occurred_at": "2026-01-01T00:00:00Z", '
        '"user_id": "U_ANN", "kind": "source_click", "value": 1, "rank": "first"}}\n'
        '{"op": "event", "row": {"id": "b", "question_id": "q", "occurred_at": "2026-01-01T00:00:00Z", '
        '"user_id": "U_BEN", "kind": "source_click", "value": 1, "rank": "second"}}\n')
    (store.spool / "00000000000000000002-1-y.jsonl").write_bytes(b"\xff U_ANN was here\n")
    store.drain()
    assert store.quarantined() == 2
    result = CliRunner().invoke(cli, ["--home", str(store.spool.parent), "feedback", "forget", "U_ANN"])
    assert result.output.strip() == "forgot U_ANN: 0 questions, 0 events, 2 quarantined operations"
    left = [p.read_text() for p in store.quarantine.glob("*.jsonl")]
    assert len(left) == 1 and "U_BEN" in left[0] and "U_ANN" not in left[0]


def test_marking_a_run_interrupted_never_overrides_one_that_finished(tmp_path):
    store = FeedbackStore(Home.open(tmp_path / "home"))
    start = {"started_at": "2026-01-01T03:00:00Z", "status": "running"}
    store.record([FeedbackStore.run_op(id="done", **start), FeedbackStore.run_op(id="killed", **start),
                  FeedbackStore.run_op(id="done", **(start | {"status": "promoted"}))])
    store.record([FeedbackStore.run_op(id=r, status="interrupted", decision="ended") for r in ("done", "killed")])
    assert {r["id"]: r["status"] for r in store.runs()} == {"done": "promoted", "killed": "interrupted"}


def test_a_writer_killed_before_its_rename_leaves_no_lasting_debris(tmp_path):
    store = FeedbackStore(Home.open(tmp_path / "home"))
    old, fresh = store.spool / ".1-1-a.jsonl.tmp", store.spool / ".2-2-b.jsonl.tmp"
    for tmp in (old, fresh):
        tmp.write_text('{"op": "forget", "us')  # never renamed: never acknowledged to its caller
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    store.record([_question()])
    assert store.drain() == 1
    assert not old.exists() and fresh.exists()  # a fresh one may belong to a writer still at work
