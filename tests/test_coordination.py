"""shared.coordination: the same suite against the in-memory and the Postgres implementation.

A second instance opened on the same database stands for another replica; in memory there is
only one process, so "another replica" is the same instance there."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from shared.coordination import (MAX_ID, CoordinationError, MemoryCoordination, PostgresCoordination,
                                 open_coordination)
from shared.settings import load_settings


@pytest.fixture(params=["memory", "postgres"])
def backend(request):
    """A factory of coordination instances that share state (other replicas), closed afterwards."""
    opened = []
    if request.param == "memory":
        shared = {}

        def make(**kw):
            key = tuple(sorted(kw.items()))
            if key not in shared:
                shared[key] = MemoryCoordination(**kw)
            return shared[key]
    else:
        url = request.getfixturevalue("pg_url")

        def make(**kw):
            opened.append(PostgresCoordination(url, **kw))
            return opened[-1]
    make.kind = request.param
    yield make
    for coordination in opened:
        coordination.close()


def test_the_first_claim_wins(backend):
    one, other = backend(), backend()
    assert one.claim_event("Ev0001") is True
    assert one.claim_event("Ev0001") is False
    assert other.claim_event("Ev0001") is False  # another replica gets the retry: not answered again
    assert other.claim_event("Ev0002") is True and one.claim_event("Ev0002") is False


def test_a_released_claim_can_be_claimed_again(backend):
    one, other = backend(), backend()
    assert one.claim_event("resolved:C1:1.1:1.2")
    one.release_event("resolved:C1:1.1:1.2")  # the work failed: the next try may do it
    assert other.claim_event("resolved:C1:1.1:1.2") and not one.claim_event("resolved:C1:1.1:1.2")
    other.release_event("never-claimed")


def test_concurrent_claims_have_exactly_one_winner(backend):
    replicas = [backend() for _ in range(3)]
    keys = [f"EvRACE{i}" for i in range(20)]
    wins: list[str] = []
    start = threading.Barrier(12)

    def claim(coordination):
        start.wait()
        for key in keys:
            if coordination.claim_event(key):
                wins.append(key)

    threads = [threading.Thread(target=claim, args=(replicas[i % 3],)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == sorted(keys)  # every key won once, by one thread


def test_a_claim_expires_after_its_ttl(backend):
    coordination = backend(event_ttl=0.3)
    assert coordination.claim_event("EvTTL")
    assert coordination.claim_event("EvSHORT", ttl=0.1)
    assert not coordination.claim_event("EvTTL")
    time.sleep(0.5)
    assert coordination.claim_event("EvTTL")  # long after Slack's last retry: a new delivery
    assert coordination.claim_event("EvSHORT")
    assert not coordination.claim_event("EvTTL")


def test_thread_state_is_seen_by_another_replica(backend):
    one, other = backend(), backend()
    assert not other.is_bot_thread("C1", "1700000000.000100")
    one.remember_thread("C1", "1700000000.000100", question_id="q-1", message_ts="1700000001.000001")
    assert other.is_bot_thread("C1", "1700000000.000100")
    assert not other.is_bot_thread("C2", "1700000000.000100")  # a ts is unique per channel only
    assert other.thread_of("q-1") == "1700000000.000100"
    assert other.question_of("1700000001.000001") == "q-1"
    assert other.thread_of("q-unknown") is None and other.question_of("1.2") is None
    # remembered again (a second answer in the thread): still there, the first message still found
    other.remember_thread("C1", "1700000000.000100", question_id="q-2", message_ts="1700000002.000001")
    assert one.question_of("1700000001.000001") == "q-1" and one.question_of("1700000002.000001") == "q-2"
    one.remember_thread("D1", "1700000003.000001")  # a thread without an answer posted yet
    assert other.is_bot_thread("D1", "1700000003.000001")


def test_thread_state_expires(backend):
    coordination = backend(thread_ttl=0.2)
    coordination.remember_thread("C1", "1.1", question_id="q-old", message_ts="1.2")
    time.sleep(0.4)
    assert not coordination.is_bot_thread("C1", "1.1")
    assert coordination.thread_of("q-old") is None and coordination.question_of("1.2") is None


def test_keys_of_any_length_are_stored_bounded(backend, request):
    coordination = backend()
    huge = "E" * 1_000_000
    assert coordination.claim_event(huge) and not coordination.claim_event(huge)
    assert coordination.claim_event(huge[:-1] + "F")  # differs in the last character: another key
    assert coordination.claim_event("\ud800 a lone surrogate") and coordination.claim_event("ünïcødé 🎉")
    with pytest.raises(ValueError, match="non-empty"):
        coordination.claim_event("")
    for bad in ("x" * (MAX_ID + 1), "", "tab\tin it"):
        with pytest.raises(ValueError, match="a thread ts must be 1 to 128 printable characters"):
            coordination.remember_thread("C1", bad)
    with pytest.raises(ValueError, match="a question id"):
        coordination.remember_thread("C1", "1.1", question_id="q" * 500)
    assert not coordination.is_bot_thread("C1", "x" * 10_000) and coordination.thread_of("q" * 10_000) is None
    if backend.kind == "postgres":
        with psycopg.connect(request.getfixturevalue("pg_url")) as conn:
            lengths = conn.execute("SELECT DISTINCT length(key) FROM coordination_claims").fetchall()
        assert lengths == [(32,)]


def test_the_memory_implementation_is_bounded():
    coordination = MemoryCoordination(limit=100, threads=10)
    for i in range(1000):
        assert coordination.claim_event(f"Ev{i}")
        coordination.remember_thread("C1", f"{i}.1", question_id=f"q{i}", message_ts=f"{i}.2")
    assert len(coordination._claims.items) <= 101 and len(coordination._threads.items) <= 11
    assert coordination.is_bot_thread("C1", "999.1") and not coordination.is_bot_thread("C1", "1.1")


def test_expired_rows_are_pruned_in_postgres(pg_url):
    with PostgresCoordination(pg_url, event_ttl=0.1, thread_ttl=0.1) as coordination:
        for i in range(50):
            coordination.claim_event(f"Ev{i}")
        coordination.remember_thread("C1", "1.1", question_id="q", message_ts="1.2")
        time.sleep(0.3)
        assert coordination.prune() == 52
        with psycopg.connect(pg_url) as conn:
            counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                      for t in ("coordination_claims", "coordination_threads", "coordination_answers")]
        assert counts == [0, 0, 0]


def test_connections_the_server_dropped_are_replaced(pg_url):
    with PostgresCoordination(pg_url) as coordination:
        assert coordination.claim_event("Ev1")
        with psycopg.connect(pg_url, autocommit=True) as admin:
            dropped = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                    "WHERE application_name = 'deepmem coordination'").fetchone()[0]
        assert dropped >= 1
        assert not coordination.claim_event("Ev1") and coordination.claim_event("Ev2")


def test_replicas_starting_together_create_the_tables_once(pg_url):
    opened, errors = [], []

    def start():
        try:
            opened.append(PostgresCoordination(pg_url))
        except Exception as exc:  # noqa: BLE001 - the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(opened) == 4
    assert opened[0].claim_event("Ev1") and not opened[3].claim_event("Ev1")
    for coordination in opened:
        coordination.close()


def test_open_coordination_follows_the_database_url(pg_url, postgres_server):
    assert isinstance(open_coordination(load_settings()), MemoryCoordination)
    with open_coordination(load_settings(database_url=pg_url)) as coordination:
        assert isinstance(coordination, PostgresCoordination)
    unreachable = "postgresql://deepmem:s3cret-pw@127.0.0.1:1/none?connect_timeout=1"
    with pytest.raises(CoordinationError) as err:
        open_coordination(load_settings(database_url=unreachable), timeout=2.0)
    assert "s3cret-pw" not in str(err.value) and "\n" not in str(err.value)
