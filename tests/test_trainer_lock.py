"""One trainer across replicas: the nightly job's lock in the scale-out database (a Postgres advisory lock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from shared.deep_memory.nightly import TRAINER_LOCK, NightlyConfig, RunBusy, mark_interrupted, run_lock, run_nightly
from shared.deep_memory.trainer import TrainConfig
from shared.deep_memory.versions import open_registry
from shared.feedback import FeedbackStore, open_feedback
from shared.home import Home
from shared.migrate import migrate_home
from shared.settings import load_settings

FAST = TrainConfig(max_epochs=3, patience=1)


@pytest.fixture
def shared_corpus(store_copy, pg_url) -> str:
    """The small store, in the database every replica shares (copied with `deepmem migrate`'s code)."""
    assert migrate_home(Home.open(store_copy.path.parent), pg_url).ok
    return pg_url


def _replica_home(tmp_path, name: str) -> Home:
    """A replica's own data directory: empty, everything it shares is in the database."""
    return Home.open(tmp_path / name)


def _lock_held(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                            "((classid::bigint << 32) | objid::bigint) = %s", [TRAINER_LOCK]).fetchone()[0] > 0


def test_the_lock_is_taken_by_exactly_one_of_many(pg_url, tmp_path):
    settings = load_settings(home=str(tmp_path / "h"), database_url=pg_url)
    home = Home.open(tmp_path / "h")
    start, got, busy = threading.Barrier(6), [], []

    def contender(n):
        start.wait()
        try:
            with run_lock(home, settings):
                got.append(n)
                time.sleep(0.5)
        except RunBusy:
            busy.append(n)

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 1 and len(busy) == 5
    assert not _lock_held(pg_url)  # given back at the end of the block
    with run_lock(home, settings):
        assert _lock_held(pg_url)


def test_two_replicas_start_the_nightly_job_at_once_and_exactly_one_runs(shared_corpus, tmp_path, embedder):
    pg_url = shared_corpus
    homes = [_replica_home(tmp_path, f"replica-{n}") for n in (1, 2)]
    settings = [load_settings(home=str(h.root), database_url=pg_url) for h in homes]
    records = [None, None]

    def replica(n):
        records[n] = run_nightly(homes[n], settings[n], NightlyConfig(train=FAST, trigger="schedule"),
                                 embedder=embedder, log=lambda *a: None)

    threads = [threading.Thread(target=replica, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r["status"] for r in records)
    assert statuses[1] == "skipped" and statuses[0] in ("kept", "promoted"), records
    runs = open_feedback(homes[0], settings[0]).runs()
    assert sorted(r["status"] for r in runs) == statuses  # both replicas' records, in the one log
    trained = next(r for r in records if r["status"] != "skipped")
    if trained["status"] == "promoted":  # the adapter is in the database: the other replica serves it too
        assert open_registry(homes[1], settings[1]).active_name() == trained["version"]


SLOW_RUN = """
import sys
from shared.home import Home
from shared.migrate import migrate_home
from shared.settings import load_settings
from shared.deep_memory.nightly import NightlyConfig, run_nightly
from shared.deep_memory.trainer import TrainConfig
run_nightly(Home.open(sys.argv[1]), load_settings(), NightlyConfig(train=TrainConfig(max_epochs=10000, patience=10000)),
            log=lambda m: print(m, file=sys.stderr, flush=True))
"""


def test_a_replica_killed_mid_run_gives_the_lock_back_and_its_run_is_marked_interrupted(shared_corpus, tmp_path,
                                                                                        embedder):
    pg_url = shared_corpus
    dying, next_one = _replica_home(tmp_path, "dying"), _replica_home(tmp_path, "next")
    env = dict(os.environ, DEEPMEM_HOME=str(dying.root), DEEPMEM_DATABASE_URL=pg_url, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(dying.root)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until it is training
        line = proc.stderr.readline()
        if "training on" in line or not line:
            break
    assert _lock_held(pg_url), proc.stderr.read() if proc.poll() is not None else "the run holds no lock"
    settings = load_settings(home=str(next_one.root), database_url=pg_url)
    feedback = open_feedback(next_one, settings)
    assert [r["status"] for r in feedback.runs()] == ["running"]
    mark_interrupted(next_one, feedback, settings)  # `deepmem runs` on another replica: the run is alive
    assert [r["status"] for r in feedback.runs()] == ["running"]

    killed_at = time.perf_counter()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    while _lock_held(pg_url) and time.perf_counter() - killed_at < 10:
        time.sleep(0.01)
    released = time.perf_counter() - killed_at
    print(f"\nthe dead replica's lock was released {released * 1000:.0f} ms after kill -9")
    assert released < 10

    record = run_nightly(next_one, settings, NightlyConfig(train=FAST), embedder=embedder, log=lambda *a: None)
    assert record["status"] in ("kept", "promoted"), record
    runs = feedback.runs()
    assert [r["status"] for r in runs] == ["interrupted", record["status"]]
    assert runs[0]["decision"] == "the process ended before the run finished"


def test_a_stale_running_row_is_marked_only_when_nobody_holds_the_lock(pg_url, tmp_path):
    home = Home.open(tmp_path / "h")
    settings = load_settings(home=str(home.root), database_url=pg_url)
    feedback = open_feedback(home, settings)
    feedback.record([FeedbackStore.run_op(id="r1", started_at="2026-01-01T03:00:00Z", status="running", pid=1)])
    with run_lock(Home.open(tmp_path / "other-replica"), settings):  # a run in progress on another replica
        mark_interrupted(home, feedback, settings)
        assert [r["status"] for r in feedback.runs()] == ["running"]
    mark_interrupted(home, feedback, settings)
    assert [r["status"] for r in feedback.runs()] == ["interrupted"]


def test_a_run_whose_lock_connection_drops_saves_nothing_and_another_replica_can_train(shared_corpus, tmp_path,
                                                                                       embedder):
    """A network drop ends the lock's session: another replica may start training at once. The run that lost
    the lock finds out before it saves anything every replica serves, and says so."""
    pg_url = shared_corpus
    home, other = _replica_home(tmp_path, "losing"), _replica_home(tmp_path, "other")
    settings = load_settings(home=str(home.root), database_url=pg_url)
    taken_over = []

    def log(message):
        if "training on" in message:  # mid-run: the administrator ends the trainer's session
            with psycopg.connect(pg_url, autocommit=True) as admin:
                ended = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                      "WHERE application_name = 'deepmem trainer'").fetchall()
            assert ended == [(True,)]
            deadline = time.monotonic() + 10
            while _lock_held(pg_url) and time.monotonic() < deadline:
                time.sleep(0.01)
            with run_lock(other, load_settings(home=str(other.root), database_url=pg_url)):
                taken_over.append(True)  # another replica's run could start now

    record = run_nightly(home, settings, NightlyConfig(train=FAST), embedder=embedder, log=log)
    assert taken_over == [True]
    assert record["status"] == "failed", record
    assert record["error"].startswith("LostLock: the trainer lock was lost before saving the run's results")
    registry = open_registry(home, settings)
    assert registry.versions() == [] and registry.active_name() is None  # nothing saved, nothing promoted
    assert not (home.root / "memory.json").exists()
    assert [r["status"] for r in open_feedback(home, settings).runs()] == ["failed"]
