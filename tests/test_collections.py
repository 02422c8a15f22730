"""Collections: sources belong to named collections, and every search path can be limited to some."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from shared.cli import cli
from shared.collections import DEFAULT, UnknownCollection, check_name
from shared.errors import ConfigError
from shared.search import Searcher
from shared.store import Store
from shared.vector_index import MemoryIndex


def _same_ranking(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    """Same scores in the same order and the same chunks, up to the order of ties (the runbooks hold
    copies of pages in default: identical vectors) and which tie the cut at k kept."""
    if len(a) != len(b) or any(abs(x - y) > 1e-4 for (_, x), (_, y) in zip(a, b)):
        return False
    last = min(a[-1][1], b[-1][1]) + 1e-4 if a else 0
    return {r for r, s in a if s > last} == {r for r, s in b if s > last}


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def two_collections(store_copy, small_docs, tmp_path):
    """The small store (collection ``default``, pages at https://sqlite.org/) plus a folder of three of
    its pages ingested again, without a base URL, into ``runbooks`` (pages at relative URLs)."""
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    for name in ("wal.html", "autoinc.html", "lang_vacuum.html"):
        shutil.copy(small_docs / name, runbooks / name)
    result = run("ingest", str(runbooks), "--collection", "runbooks", "-q", "--json")
    assert result.exit_code == 0, result.output
    return store_copy, runbooks


def test_check_name():
    assert check_name("api-docs_2") == "api-docs_2"
    for bad in ("", "Runbooks", "-x", "a b", "x" * 65, "ünï", "a/b"):
        with pytest.raises(ConfigError, match="not a collection name"):
            check_name(bad)


def test_ingest_into_collections_and_list_them(two_collections):
    store, runbooks = two_collections
    assert store.collections() == ["default", "runbooks"]
    by_uri = {s.uri: s.collection for s in store.sources()}
    assert sorted(by_uri.values()) == ["default", "runbooks"]
    listed = json.loads(run("sources", "--json").output)
    assert {r["collection"] for r in listed} == {"default", "runbooks"}
    assert " in runbooks: 3 pages" in run("sources").output
    status = json.loads(run("status", "--json").output)
    assert status["collections"] == ["default", "runbooks"]
    assert {s["collection"] for s in status["sources"]} == {"default", "runbooks"}
    # a re-ingest keeps the collection; a new one given moves the source
    assert run("ingest", str(runbooks), "-q").exit_code == 0
    assert {s.uri: s.collection for s in store.sources()} == by_uri
    assert run("ingest", str(runbooks), "-q", "--collection", "ops").exit_code == 0
    assert store.collections() == ["default", "ops"]


def test_bad_collection_names_are_refused_with_the_name(store_copy, small_docs):
    result = CliRunner().invoke(cli, ["ingest", str(small_docs), "--collection", "Run Books"])
    assert result.exit_code == 1 and "'Run Books' is not a collection name" in result.output
    result = CliRunner().invoke(cli, ["ingest", "--collection", "runbooks"])
    assert result.exit_code == 2 and "--collection applies to one TARGET" in result.output
    assert store_copy.collections() == [DEFAULT]


@pytest.mark.parametrize("with_index", [False, True], ids=["sqlite-vec", "memory-index"])
def test_search_is_limited_to_the_collections_asked(two_collections, embedder, with_index):
    store, _ = two_collections
    index = MemoryIndex(store) if with_index else None
    searcher = Searcher(store, embedder, index=index)
    question = "how does the write-ahead log checkpoint work"
    both = searcher.search(question, 10).hits
    assert {h.chunk.collection for h in both} == {"default", "runbooks"}
    for mode in ("vector", "hybrid"):
        mine = searcher.search(question, 10, collections=["runbooks"], mode=mode).hits
        assert mine and all(h.chunk.collection == "runbooks" and not h.chunk.url.startswith("https://")
                            for h in mine)
        assert mine[0].chunk.url.startswith("wal.html")
        theirs = searcher.search(question, 10, collections={"default"}, mode=mode).hits
        assert len(theirs) == 10 and all(h.chunk.url.startswith("https://sqlite.org/") for h in theirs)
        assert [h.chunk.rowid for h in searcher.search(question, 10, collections=["default", "runbooks"],
                                                       mode=mode).hits] == \
            [h.chunk.rowid for h in searcher.search(question, 10, mode=mode).hits]
    # a collection smaller than k: every section it has, nothing from the others
    small = searcher.search("anything at all", 500, collections=["runbooks"]).hits
    assert 0 < len(small) < 500 and {h.chunk.collection for h in small} == {"runbooks"}
    assert len(small) == len({c.url for c in store.iter_chunks() if c.collection == "runbooks"})
    # the full-text alternatives too
    vector = embedder.embed_query(question)
    alternatives = searcher.text_alternatives(question, vector, set(), 5, first_rank=1, collections=["runbooks"])
    assert alternatives and all(h.chunk.collection == "runbooks" for h in alternatives)
    with pytest.raises(UnknownCollection, match="unknown collections nada, nope .the store has: default, runbooks"):
        searcher.search(question, 10, collections=["runbooks", "nope", "nada"])
    assert searcher.search(question, 10, collections=[]).hits == []


def test_memory_index_and_sqlite_vec_agree_when_filtered(two_collections, embedder):
    store, _ = two_collections
    index = MemoryIndex(store)
    for question in ("autoincrement keyword", "write-ahead log checkpoint", "VACUUM INTO a file"):
        q = embedder.embed_query(question)
        for collections in (["runbooks"], ["default"], ["default", "runbooks"]):
            exact = store.vector_search(q, 20, collections=collections)
            fast = index.search(q, 20, collapse=False, collections=collections)
            assert _same_ranking(fast, exact)
        text = store.text_search(question, 20, collections=["runbooks"])
        assert text and {c.collection for c in store.chunks_by_rowid([r for r, _ in text]).values()} == {"runbooks"}


def test_feedback_memory_rerank_respects_collections(two_collections, embedder):
    """Labeled chunks of a near question join the candidates only when they are in the collections searched."""
    from shared.feedback_memory import FeedbackMemory, MemoryParams

    store, _ = two_collections
    index = MemoryIndex(store)
    question = "how does the write-ahead log checkpoint work"
    outside = next(c for c in store.iter_chunks() if c.collection == "default" and "vacuum" in c.url)
    memory = FeedbackMemory(MemoryParams(threshold=0.5, boost=5.0, penalty=0.0))
    memory.set(embedder.embed_query(question)[None, :], [{outside.rowid: 1.0}], [{}])
    searcher = Searcher(store, embedder, index=index, memory=memory)
    assert searcher.search(question, 5).hits[0].chunk.rowid == outside.rowid  # the label acts at once
    hits = searcher.search(question, 5, collections=["runbooks"]).hits
    assert hits and all(h.chunk.collection == "runbooks" for h in hits)


def test_stores_from_before_collections_put_every_source_in_default(store_copy, tmp_path):
    path = store_copy.path
    store_copy.conn.execute("DROP INDEX sources_collection")
    store_copy.conn.execute("ALTER TABLE sources DROP COLUMN collection")
    store_copy.conn.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    store_copy.close()
    with Store.open(path) as store:
        assert store.collections() == [DEFAULT] and store.sources()[0].collection == DEFAULT
        assert store.meta("schema_version") == "4"
