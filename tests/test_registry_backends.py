"""The adapter registry, one suite run against both backends: files in the data directory and PostgreSQL."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import psycopg
import pytest

from shared.deep_memory.adapter import LinearAdapter
from shared.deep_memory.versions import ActiveStatus, AdapterError, open_registry
from shared.retrieval import ActiveAdapter
from .helpers.deployments import Deployment, deployment

DIM = 8
EMBEDDER = SimpleNamespace(name="test-embedder", dim=DIM)  # what ActiveAdapter reads of an embedder


def _adapter(seed: int) -> LinearAdapter:
    rng = np.random.default_rng(seed)
    return LinearAdapter(np.eye(DIM, dtype=np.float32) + 0.1 * rng.standard_normal((DIM, DIM)).astype(np.float32),
                         0.01 * rng.standard_normal(DIM).astype(np.float32))


def _meta() -> dict:
    return {"embedder": EMBEDDER.name, "dim": DIM, "config": {"dim": DIM, "kind": "linear"}}


class Backend(Deployment):
    open = staticmethod(open_registry)

    def damage_meta(self, version: str) -> None:
        if self.url:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute("UPDATE adapters.versions SET meta = '{not json' WHERE name = %s", [version])
        else:
            (self.home.adapters_dir / version / "meta.json").write_text("{not json")

    def damage_weights(self, version: str) -> None:
        if self.url:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute("UPDATE adapters.versions SET weights = 'garbage' WHERE name = %s", [version])
        else:
            (self.home.adapters_dir / version / "weights.npz").write_bytes(b"garbage")



@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    b = deployment(Backend, request, tmp_path)
    yield b
    b.close()


def test_save_activate_rollback_and_off(backend):
    reg = backend.replica()
    assert reg.versions() == [] and reg.load_active() is None and reg.active_status() == ActiveStatus(None)
    first, second = _adapter(1), _adapter(2)
    v1 = reg.save(first, _meta()).name
    v2 = reg.save(second, _meta() | {"decision": "better"}).name
    assert (v1, v2) == ("v0001", "v0002")
    assert [v.name for v in reg.versions()] == ["v0001", "v0002"]
    assert reg.versions()[1].meta["decision"] == "better" and reg.versions()[1].meta["version"] == "v0002"
    loaded, meta = reg.load("v0002")
    assert np.allclose(loaded.weight, second.weight) and np.allclose(loaded.bias, second.bias)
    assert meta["embedder"] == EMBEDDER.name

    before = reg.signature()
    reg.activate("v0001")
    reg.activate("v0002")
    assert reg.signature() != before
    name, adapter, _ = reg.load_active()
    assert name == "v0002" and np.allclose(adapter.weight, second.weight)
    assert reg.rollback() == "v0001" and reg.active_name() == "v0001"
    reg.deactivate()
    assert reg.load_active() is None
    assert reg.rollback() == "v0001"  # off is undone by a rollback
    with pytest.raises(AdapterError, match="no adapter version 'v0009'"):
        reg.activate("v0009")


def test_nothing_to_roll_back_to_is_one_line(backend):
    with pytest.raises(AdapterError, match="nothing to roll back to"):
        backend.replica().rollback()


def test_a_damaged_version_is_reported_never_served(backend):
    reg = backend.replica()
    reg.save(_adapter(1), _meta())
    reg.save(_adapter(2), _meta())
    reg.activate("v0001")
    reg.activate("v0002")
    backend.damage_weights("v0002")
    status = reg.active_status()
    assert status.name == "v0002" and "cannot be loaded" in status.problem and "\n" not in status.problem
    with pytest.raises(AdapterError):
        reg.activate("v0002")
    assert reg.rollback() == "v0001"
    backend.damage_meta("v0001")
    assert [name for name, _ in reg.damaged()] == ["v0001"]
    assert [v.name for v in reg.versions()] == ["v0002"]
    assert reg.save(_adapter(3), _meta()).name == "v0003"  # never lands on a damaged version's number


def test_every_replica_switches_to_a_promoted_adapter(backend):
    """A promotion on one replica is served by another's searcher; with Postgres without a single question
    asked in between (LISTEN/NOTIFY), and the time it takes is measured."""
    trainer, server = backend.replica(), backend.replica()
    trainer.save(_adapter(1), _meta())
    trainer.save(_adapter(2), _meta())
    trainer.activate("v0001")
    active = ActiveAdapter(backend.home, EMBEDDER, registry=server)
    try:
        assert active.current()[0] == "v0001"
        if active.listener is not None:
            assert active.listener.ready.wait(10)
        started = time.perf_counter()
        trainer.activate("v0002")
        if backend.url:  # heard, not asked: the searcher's state changes with no call to current()
            while active._current[0] != "v0002" and time.perf_counter() - started < 5:
                time.sleep(0.005)
            seconds = time.perf_counter() - started
            assert active._current[0] == "v0002", "the promotion was not heard within 5 s"
            print(f"\npromotion heard by the other replica in {seconds * 1000:.1f} ms")
            assert seconds < 2.0
        assert active.current()[0] == "v0002"
        trainer.rollback()
        deadline = time.monotonic() + 3
        while active.current()[0] != "v0001" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert active.current()[0] == "v0001"
    finally:
        active.close()


def test_an_adapter_for_another_embedder_is_ignored(backend):
    reg = backend.replica()
    reg.save(_adapter(1), _meta() | {"embedder": "another-model"})
    reg.activate("v0001")
    errors = []
    active = ActiveAdapter(backend.home, EMBEDDER, errors.append, registry=reg)
    try:
        assert active.current() == (None, None)
        assert "another-model" in json.dumps(errors)
    finally:
        active.close()
