"""`deepmem migrate --to postgresql://…`: a data directory copied into Postgres, verified, idempotent."""

from __future__ import annotations

import json

import numpy as np
import psycopg
from click.testing import CliRunner

from shared.cli import cli
from shared.deep_memory.adapter import LinearAdapter
from shared.deep_memory.versions import AdapterRegistry, open_registry
from shared.feedback import FeedbackStore, open_feedback
from shared.home import Home
from shared.settings import load_settings

from .test_feedback_backends import _conversation, _plain


def _small_home(home: Home) -> None:
    """Feedback (with a run) and two adapter versions, the second active, as a single machine has them."""
    feedback = FeedbackStore(home)
    _conversation(feedback)
    feedback.record([FeedbackStore.run_op(id="r1", started_at="2026-01-02T03:00:00Z", status="promoted",
                                          trigger="schedule", version="v0002", counts={"train": 10},
                                          finished_at="2026-01-02T03:05:00Z", seconds=300.0)])
    feedback.drain()
    registry = AdapterRegistry(home.adapters_dir)
    rng = np.random.default_rng(0)
    for _ in range(2):
        adapter = LinearAdapter(np.eye(8, dtype=np.float32) + 0.1 * rng.standard_normal((8, 8)).astype(np.float32),
                                np.zeros(8, dtype=np.float32))
        registry.save(adapter, {"embedder": "e", "dim": 8, "config": {"dim": 8, "kind": "linear"}})
    registry.activate("v0001")
    registry.activate("v0002")


def _txids(url: str) -> list:
    with psycopg.connect(url) as conn:
        return [conn.execute(f"SELECT array_agg(txid::text ORDER BY txid::text) FROM feedback.{t}").fetchone()[0]
                for t in ("questions", "retrievals", "events", "runs")] + \
            [conn.execute("SELECT generation FROM adapters.active").fetchone()[0]]


def test_migrate_copies_verifies_and_is_idempotent(store_copy, pg_url):
    home = Home.open(store_copy.path.parent)
    _small_home(home)
    run = CliRunner().invoke(cli, ["--home", str(home.root), "migrate", "--to", pg_url, "--json"],
                             catch_exceptions=False)
    assert run.exit_code == 0, run.output
    report = json.loads(run.output)
    counts = {t["name"]: t for t in report["tables"]}
    assert report["ok"]
    assert {n: (t["source"], t["copied"], t["target"], t["missing"]) for n, t in counts.items()
            if not n.startswith("store.")} == {
        "feedback.questions": (2, 2, 2, 0), "feedback.retrievals": (4, 4, 4, 0), "feedback.events": (6, 6, 6, 0),
        "feedback.runs": (1, 1, 1, 0), "adapters.versions": (2, 2, 2, 0), "adapters.active": (1, 1, 1, 0)}
    stats = store_copy.stats()
    links = len(store_copy.all_links())
    assert {n: (t["source"], t["copied"], t["target"], t["missing"]) for n, t in counts.items()
            if n.startswith("store.")} == {
        "store.sources": (stats["sources"], stats["sources"], stats["sources"], 0),
        "store.pages": (stats["pages"], stats["pages"], stats["pages"], 0),
        "store.chunks": (stats["chunks"], stats["chunks"], stats["chunks"], 0),
        "store.vectors": (stats["chunks"], stats["chunks"], stats["chunks"], 0),
        "store.links": (links, links, links, 0)}

    # the copy answers like the original: same chunks, same vectors, same nearest neighbours
    from shared.store import open_store

    with open_store(home, load_settings(home=str(home.root), database_url=pg_url), create=False) as there:
        assert there.stats()["tokens"] == stats["tokens"] and there.embedder_name == store_copy.embedder_name
        here_ids, there_ids = store_copy.chunk_rowids(), there.chunk_rowids()
        rowids, matrix = store_copy.all_vectors()
        by_rowid = {r: cid for cid, r in here_ids.items()}
        there_by_rowid = {r: cid for cid, r in there_ids.items()}
        for row in (0, len(rowids) // 2, len(rowids) - 1):
            query = matrix[row]
            near_here = [by_rowid[r] for r, _ in store_copy.vector_search(query, 5)]
            near_there = [there_by_rowid[r] for r, _ in there.vector_search(query, 5)]
            assert near_here == near_there

    local = FeedbackStore(home)
    settings = load_settings(home=str(home.root), database_url=pg_url)
    shared = open_feedback(home, settings)
    try:
        for what in ("labels", "events", "questions", "runs"):
            assert _plain(getattr(local, what)()) == _plain(getattr(shared, what)()), what
    finally:
        shared.close()
    registry = open_registry(home, settings)
    assert registry.active_name() == "v0002" and [v.name for v in registry.versions()] == ["v0001", "v0002"]
    there, _ = registry.load("v0002")
    here, _ = AdapterRegistry(home.adapters_dir).load("v0002")
    assert np.allclose(there.weight, here.weight)
    assert registry.rollback() == "v0001"  # the history came along
    registry.activate("v0002")

    before = _txids(pg_url)
    again = CliRunner().invoke(cli, ["--home", str(home.root), "migrate", "--to", pg_url], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "verified" in again.output
    table = [line.split() for line in again.output.splitlines()
             if line.startswith(("feedback.", "adapters.", "store.")) and ":" not in line]
    assert len(table) == 11
    assert all(row[2] == "0" for row in table), again.output  # nothing copied the second time
    assert _txids(pg_url) == before  # and nothing was touched


def test_a_version_trained_elsewhere_is_a_mismatch_not_an_overwrite(store_copy, pg_url):
    home = Home.open(store_copy.path.parent)
    _small_home(home)
    other = open_registry(home, load_settings(home=str(home.root), database_url=pg_url))
    other.save(LinearAdapter.identity(8), {"embedder": "e", "dim": 8, "config": {"dim": 8, "kind": "linear"}})
    run = CliRunner().invoke(cli, ["--home", str(home.root), "migrate", "--to", pg_url])
    assert run.exit_code == 1
    assert run.output.strip().splitlines() == [run.output.strip()]  # checked first: one line, nothing copied
    assert "adapter v0001 in the database differs" in run.output
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('feedback.questions')").fetchone()[0] is None


def test_migrate_needs_a_postgres_url(tmp_path):
    home = Home.open(tmp_path / "home")
    run = CliRunner().invoke(cli, ["--home", str(home.root), "migrate", "--to", "mysql://x/y"])
    assert run.exit_code == 2 and "postgresql://" in run.output


def test_migrate_copies_the_history_import_progress_and_keeps_a_newer_one(store_copy, pg_url):
    """Where the Slack history import stands per channel goes along, so the replicas do not read the
    channels again from the start; a channel a replica has read since keeps the database's progress."""
    from shared.history_progress import FileProgress, PostgresProgress

    home = Home.open(store_copy.path.parent)
    here = FileProgress(home)
    mine = {"complete_through": "1700000900.000100", "pass": None, "threads": {"1700000500.000100": "1700000600.1"}}
    here.save("C0HELPDOCS", mine)
    here.save("C0RUNBOOKS", mine | {"complete_through": "1700000100.000100"})
    there = PostgresProgress(pg_url)
    newer = mine | {"complete_through": "1700009999.000100"}
    there.save("C0RUNBOOKS", newer)  # a replica read #runbooks further already
    try:
        run = CliRunner().invoke(cli, ["--home", str(home.root), "migrate", "--to", pg_url, "--json"],
                                 catch_exceptions=False)
        assert run.exit_code == 0, run.output
        counts = {t["name"]: t for t in json.loads(run.output)["tables"]}
        assert counts["history_progress"] == {"name": "history_progress", "source": 2, "copied": 1, "target": 2,
                                              "missing": 0}
        assert there.load("C0HELPDOCS") == mine and there.load("C0RUNBOOKS") == newer
        again = CliRunner().invoke(cli, ["--home", str(home.root), "migrate", "--to", pg_url, "--json"],
                                   catch_exceptions=False)
        assert {t["name"]: t["copied"] for t in json.loads(again.output)["tables"]}["history_progress"] == 0
    finally:
        there.close()
