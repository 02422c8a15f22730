"""Fault suite, training and promotion: kill -9 at every stage of `deepmem retrain --now`, and
damaged adapter, settings and store files. The last good adapter serves, search works, the killed
run is marked, and nothing else is lost.

The kill tests run the real command in a child process. To kill it at an exact stage the child
wraps one deepmem function so that it announces the stage on stderr (and, for the stages that
last microseconds, stays there until killed); the wrapped function itself runs unchanged.

Run alone with ``pytest -m fault``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from shared.cli import cli
from shared.deep_memory import AdapterRegistry, LinearAdapter
from shared.deep_memory.versions import ActiveStatus
from shared.feedback.store import FeedbackStore
from shared.home import Home

pytestmark = pytest.mark.fault

CHILD = r"""
import sys, time

import shared.questions
from shared.deep_memory import adapter, versions

home, stage = sys.argv[1], sys.argv[2]


def announce(name):
    print(f"STAGE {name}", file=sys.stderr, flush=True)


def hold(name):  # stay at this point until killed
    announce(name)
    time.sleep(3600)


def wrap(owner, attr, before=None, after=None):
    real = getattr(owner, attr)

    def wrapper(*args, **kwargs):
        if before:
            before()
        result = real(*args, **kwargs)
        if after:
            after()
        return result

    setattr(owner, attr, wrapper)


if stage == "questions":  # made, not yet stored in the question cache
    wrap(shared.questions, "generate_offline", after=lambda: hold("questions"))
elif stage == "training":  # killed in the middle of training: after the first epoch's steps
    from shared.deep_memory import trainer

    calls = []

    def after_validation():  # validation runs before the first epoch and after each one
        calls.append(1)
        if len(calls) == 2:
            hold("training")

    wrap(trainer, "_val_mrr", after=after_validation)
elif stage == "saving":  # the version's files are written under their temporary name
    wrap(adapter.LinearAdapter, "save", after=lambda: hold("saving"))
elif stage == "saved":  # the version has its name; the pointer is not switched yet
    wrap(versions.AdapterRegistry, "save", after=lambda: hold("saved"))

from shared.cli import main

sys.argv = ["deepmem", "--home", home, "retrain", "--now"]
main()
"""


def _cli(home: Home, *args):
    return CliRunner().invoke(cli, ["--home", str(home.root), *args])


def _retrain(home: Home) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from shared.cli import main; main()", "--home", str(home.root),
                           "retrain", "--now", "--json"], env=dict(os.environ), capture_output=True, text=True,
                          timeout=900)


@pytest.fixture
def home(store_copy, embedder):
    """A copy of the small store with a good active adapter, v0001."""
    home = Home.open(store_copy.path.parent)
    registry = AdapterRegistry(home.adapters_dir)
    rng = np.random.default_rng(0)
    weight = np.eye(embedder.dim) + 0.01 * rng.standard_normal((embedder.dim, embedder.dim))
    registry.save(LinearAdapter(weight, np.zeros(embedder.dim)),
                  {"embedder": embedder.name, "dim": embedder.dim, "config": {"dim": embedder.dim}})
    registry.activate("v0001")
    return home


def _kill_at(home: Home, stage: str) -> list[str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(home.root), stage], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, deadline = [], time.time() + 600
    try:
        while time.time() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"the run ended before reaching {stage}: {''.join(seen)[-2000:]}")
            seen.append(line)
            if line.strip() == f"STAGE {stage}":
                break
        else:
            pytest.fail(f"the run did not reach {stage} in time")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return seen


@pytest.mark.parametrize("stage", ["questions", "training", "saving", "saved"])
def test_kill_9_at_every_stage_of_training_and_promotion(home, store_copy, stage):
    if stage == "questions":  # make the run generate its questions rather than read them from the cache
        store_copy.conn.execute("DELETE FROM questions")
    _kill_at(home, stage)

    registry = AdapterRegistry(home.adapters_dir)
    assert registry.active_status() == ActiveStatus("v0001", None)  # the last good adapter still serves
    names = [v.name for v in registry.versions()]
    assert names == (["v0001", "v0002"] if stage == "saved" else ["v0001"])  # nothing half-written has a name
    if stage == "saving":
        assert [p.name.split("-")[0] for p in home.adapters_dir.glob("v*.partial-*")] == ["v0002.partial"]
    if stage == "questions":
        assert store_copy.conn.execute("SELECT count(*) FROM questions").fetchone()[0] == 0  # no half cache

    found = _cli(home, "search", "how do I make an id column that counts up", "--json")
    assert found.exit_code == 0, found.output
    data = json.loads(found.output)
    assert data["adapter"] == "v0001" and data["adapter_problem"] is None and data["results"]

    runs = _cli(home, "runs", "--json")
    assert runs.exit_code == 0, runs.output
    assert [r["status"] for r in json.loads(runs.output)] == ["interrupted"]  # marked without waiting for a run

    if stage == "saving":  # the next run finishes the job: a new version, the debris gone
        again = _retrain(home)
        assert again.returncode == 0, again.stderr
        record = json.loads(again.stdout)
        assert record["version"] == "v0002" and not list(home.adapters_dir.glob("v*.partial-*"))
        assert [r["status"] for r in FeedbackStore(home).runs()] == ["interrupted", record["status"]]


# -- damaged files -------------------------------------------------------------------------------

def _digest(*paths) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


DAMAGE = {
    "weights.npz": ("adapters/v0001/weights.npz", b"PK\x03\x04 half a zip"),
    "active.json": ("adapters/active.json", b'{"version": "v0001", "hist'),
}


@pytest.mark.parametrize("damaged", sorted(DAMAGE))
def test_a_damaged_adapter_is_reported_everywhere_and_search_goes_on(home, damaged, caplog):
    from bot.server import build_runtime
    from shared.settings import load_settings

    FeedbackStore(home).record([FeedbackStore.question_op(id="q", asked_at="2026-01-01T00:00:00Z", source="web",
                                                          text="kept?")])
    FeedbackStore(home).drain()
    others = _digest(home.store_path, home.feedback_path)
    relative, data = DAMAGE[damaged]
    (home.root / relative).write_bytes(data)
    why = "cannot be loaded" if damaged == "weights.npz" else "active.json is damaged"

    found = _cli(home, "search", "how do I make an id column that counts up")
    assert found.exit_code == 0 and "https://sqlite.org/" in found.output
    assert "(deep memory: off: " in found.output and why in found.output  # not a silent "off"
    listing = _cli(home, "adapters")
    assert listing.exit_code == 0 and "cannot serve" in listing.output and why in listing.output
    status = _cli(home, "status")
    assert status.exit_code == 0 and why in status.output

    caplog.set_level(logging.WARNING)
    runtime = build_runtime(load_settings(home=str(home.root)))
    try:
        for _ in range(3):
            assert runtime.qa.answerer.searcher.search("autoincrement", 5).hits
    finally:
        runtime.store.close()
    assert len([r for r in caplog.records if why in r.getMessage()]) == 1  # logged once by the bot

    assert _digest(home.store_path, home.feedback_path) == others  # nothing else touched
    assert [q["id"] for q in FeedbackStore(home).questions()] == ["q"]
    if damaged == "active.json":  # repaired by choosing a version
        assert _cli(home, "adapters", "activate", "v0001").exit_code == 0
        assert AdapterRegistry(home.adapters_dir).active_status() == ActiveStatus("v0001", None)
    else:  # a retraining run replaces a damaged champion instead of failing on it
        result = _retrain(home)
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout)
        assert record["status"] in ("promoted", "kept") and record["version"] == "v0002"


def test_damaged_settings_and_store_files_are_one_line_errors(home, store_copy):
    (home.root / "memory.json").write_text('{"threshold": ')
    status = _cli(home, "status")
    assert status.exit_code == 0 and "memory.json is damaged" in status.output
    assert _cli(home, "search", "autoincrement", "--json").exit_code == 0

    store_copy.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store_copy.close()
    adapters = _digest(*home.adapters_dir.rglob("*"))
    data = bytearray(home.store_path.read_bytes())
    for offset in range(len(data) // 10, len(data) * 9 // 10, 4096):  # scribble over most pages (whatever the layout)
        data[offset:offset + 64] = b"\xff" * 64
    home.store_path.write_bytes(bytes(data))
    for args in (["search", "autoincrement"], ["search", "autoincrement", "--hybrid"]):
        result = _cli(home, *args)
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert "cannot be read" in result.output and "Traceback" not in result.output
    home.store_path.write_bytes(bytes(data[: len(data) // 2]))  # and cut in half
    result = _cli(home, "status")
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "store" in result.output, result.output
    assert _digest(*home.adapters_dir.rglob("*")) == adapters  # adapters untouched
    assert _cli(home, "adapters").exit_code == 0 and _cli(home, "feedback", "export").exit_code == 0
