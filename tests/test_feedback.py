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
    assert run("feedback", "forget", "U_ANN").output.strip() == "forgot U_ANN: 2 questions, 1 events"
    remaining = [json.loads(line) for line in run("feedback", "export", "--what", "questions").output.splitlines()]
    assert {r["user_id"] for r in remaining} == {"U_BEN"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "x", "relevant": ["a"]}\n{"query": 3}\n')
    result = CliRunner().invoke(cli, ["feedback", "import", str(bad)])
    assert result.exit_code == 1 and "bad.jsonl:2" in result.output
