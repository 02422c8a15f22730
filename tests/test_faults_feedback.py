"""Fault suite, feedback: a poisoned spool, concurrent writers, damaged files. Nothing is lost.

Run alone with ``pytest -m fault``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from shared.cli import cli
from shared.feedback.store import FeedbackStore, InvalidFeedback
from shared.home import Home

pytestmark = pytest.mark.fault

WRITER = r"""
import sys
from shared.home import Home
from shared.feedback.store import FeedbackStore, InvalidFeedback
store = FeedbackStore(Home.open(sys.argv[1]), lock_timeout=60)
name, n = sys.argv[2], int(sys.argv[3])
store.record([FeedbackStore.question_op(id=f"q-{name}", asked_at="2026-01-01T00:00:00+00:00", source="web",
                                        user_id=name, text=f"question from {name}")])
refused = 0
for i in range(n):
    if i % 25 == 0:  # a forged click among the good ones: refused at the door, the writer goes on
        try:
            store.record([FeedbackStore.event_op(question_id=f"q-{name}", kind="source_click", user_id=name,
                                                 value=1, chunk_id="c", rank="3; DROP TABLE events")])
        except InvalidFeedback:
            refused += 1
    store.record([FeedbackStore.event_op(question_id=f"q-{name}", kind="vote", user_id=name, value=1,
                                         id=f"{name}-{i}")])
    if i % 10 == 0:
        store.drain(timeout=0.05)
print(refused)
"""

# what reached spools before operations were checked (or what a hand, a disk or another version writes)
POISON = {
    "00000000000000000001-1-import.jsonl":
        b'{"op": "question", "row": {"id": "imp", "asked_at": "last tuesday", "source": "import", "text": "x"}}\n',
    "00000000000000000002-1-click.jsonl":
        b'{"op": "event", "row": {"id": "click", "question_id": "q", "occurred_at": "2026-01-01T00:00:00Z", '
        b'"user_id": "U", "kind": "source_click", "value": 1, "chunk_id": "c", "rank": "first"}}\n',
    "00000000000000000003-1-torn.jsonl": b'{"op": "event", "row": {"id": "to\n',
    "00000000000000000004-1-bytes.jsonl": b'\xff\xfe{"op": "forget"}\n',
}


def test_a_poisoned_spool_blocks_nothing_and_concurrent_writers_lose_no_event(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="deepmem.feedback")
    home = Home.open(tmp_path / "home")
    store = FeedbackStore(home)
    for name, data in POISON.items():
        (store.spool / name).write_bytes(data)
    stop = threading.Event()
    errors = []

    def server_like_drainer():  # `deepmem serve` drains every second; here as fast as it can
        while not stop.is_set():
            try:
                store.drain(timeout=0.2)
            except Exception as exc:  # before the fix: the first poison file raised here for ever
                errors.append(exc)
            time.sleep(0.01)

    drainer = threading.Thread(target=server_like_drainer)
    drainer.start()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(home.root), f"w{i}", "250"], env=dict(os.environ),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    readers = 0
    while any(w.poll() is None for w in writers):  # readers keep working meanwhile
        for args in (["feedback", "export", "--what", "events", "--json"], ["runs", "--json"]):
            result = CliRunner().invoke(cli, ["--home", str(home.root), *args])
            assert result.exit_code == 0, result.output
        readers += 1
    for w in writers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
        assert int(out) == 10  # every forged click refused, one line, no traceback
    stop.set()
    drainer.join()
    store.drain()
    assert errors == [] and readers > 0
    events = store.events()
    assert len(events) == 1000 and len({e["id"] for e in events}) == 1000
    assert {q["id"] for q in store.questions()} == {"q-w0", "q-w1", "q-w2", "q-w3"}
    assert store.pending() == 0 and store.quarantined() == len(POISON)
    warnings = [r.getMessage() for r in caplog.records if "could not be applied" in r.getMessage()]
    assert len(warnings) == len(POISON)  # each logged once, not at every drain
    for name in POISON:
        assert (store.quarantine / f"{name}.reason").read_text().strip()
    status = CliRunner().invoke(cli, ["--home", str(home.root), "feedback", "quarantine"])
    assert status.output.count("\n") == len(POISON) and "rank must be an integer" in status.output


def test_refused_operations_leave_the_spool_as_it_was(tmp_path):
    store = FeedbackStore(Home.open(tmp_path / "home"))
    with pytest.raises(InvalidFeedback, match='"at" must be|asked_at must be'):
        store.record([FeedbackStore.question_op(id="a", asked_at="yesterday", source="import", text="x")])
    assert list(store.spool.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_feedback_database_costs_no_new_feedback(tmp_path, damage):
    home = Home.open(tmp_path / "home")
    store = FeedbackStore(home)
    store.record([FeedbackStore.question_op(id="old", asked_at="2026-01-01T00:00:00Z", source="web", text="old")])
    assert len(store.questions()) == 1
    data = home.feedback_path.read_bytes()
    home.feedback_path.write_bytes({"truncated": data[: len(data) * 2 // 3], "garbage": os.urandom(len(data)),
                                    "empty": b""}[damage])
    writer = FeedbackStore(home)
    writer.record([FeedbackStore.question_op(id="new", asked_at="2026-01-02T00:00:00Z", source="web", text="new")])
    assert writer.drain() == 0
    result = CliRunner().invoke(cli, ["--home", str(home.root), "feedback", "export", "--what", "questions"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "cannot read the feedback database" in result.output and "Traceback" not in result.output
    assert writer.pending() == 1  # the new question waits in the spool
    home.feedback_path.rename(home.root / "feedback.duckdb.damaged")  # what the message tells the operator
    assert "new" in {q["id"] for q in FeedbackStore(home).questions()}
    runs = CliRunner().invoke(cli, ["--home", str(home.root), "runs", "--json"])
    assert runs.exit_code == 0 and json.loads(runs.output) == []
