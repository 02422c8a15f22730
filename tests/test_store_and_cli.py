"""The store refuses what it cannot read; the CLI ingests, searches and reports."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from shared.cli import cli
from shared.errors import ConfigError, StoreError
from shared.home import Home
from shared.store import Store


def run(*args, **kw):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kw)


def test_search_finds_the_exact_section(store_copy):
    result = run("search", "how do I create an autoincrement column", "-k", "5", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    urls = [r["url"] for r in data["results"]]
    assert urls[0].startswith("https://sqlite.org/autoinc.html#")
    first = data["results"][0]
    assert set(first) >= {"id", "url", "title", "headings", "score", "text", "rank"}
    assert first["title"] == "SQLite Autoincrement" and first["score"] > 0.4
    assert data["timings"]["search_ms"] < 1000


def test_search_table_for_people(store_copy):
    result = run("search", "busy timeout when the database is locked", "-k", "3")
    assert result.exit_code == 0
    assert "  1. " in result.output and "https://sqlite.org/c3ref/busy" in result.output


def test_hybrid_search_runs_and_keeps_untrusted_text_out_of_fts_syntax(store_copy):
    for query in ['"unbalanced quote', "NEAR(a b) OR * ^col:x", "AND OR NOT", "((("]:
        result = run("search", query, "--hybrid", "--json")
        assert result.exit_code == 0, result.output
    data = json.loads(run("search", "WAL mode checkpoint", "--hybrid", "--json").output)
    assert any("wal.html" in r["url"] for r in data["results"][:3])


def test_status_reports_the_store(store_copy):
    data = json.loads(run("status", "--json").output)
    assert data["pages"] == 22 and data["chunks"] > 500 and data["embedder"].endswith("all-MiniLM-L6-v2")
    assert data["sources"][0]["pages"] == 22 and data["bytes"] > 1_000_000
    assert "22 pages" in run("status").output


def test_search_without_a_store_is_a_clear_error():
    result = CliRunner().invoke(cli, ["search", "anything"])
    assert result.exit_code == 1 and "no store" in result.output and "deepmem ingest" in result.output


def test_store_from_a_newer_version_is_refused(store_copy, tmp_path):
    store_copy.conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="newer deepmem"):
        Store.open(store_copy.path)


def test_files_that_are_not_stores_are_refused(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match="not an SQLite file"):
        Store.open(junk)
    from shared.store import connect

    other = tmp_path / "other.db"
    conn = connect(other)
    conn.execute("CREATE TABLE customers(id INTEGER)")
    conn.close()
    with pytest.raises(StoreError, match="not a deepmem store"):
        Store.open(other)


def test_bad_home_is_a_clear_error(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        Home.open(a_file)
    monkeypatch.setenv("DEEPMEM_HOME", str(a_file))
    result = CliRunner().invoke(cli, ["status"])
    assert result.exit_code == 1 and "not a directory" in result.output


def test_config_file_typos_fail_loudly(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text("chunk_tokenz = 100\n")
    result = CliRunner().invoke(cli, ["status"])
    assert result.exit_code == 1 and "chunk_tokenz" in result.output


def test_openai_compatible_embedder_and_mismatch_refusal(tmp_path, small_docs, openai_server, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("autoinc.html", "wal.html"):
        shutil.copy(small_docs / name, docs / name)
    monkeypatch.setenv("DEEPMEM_EMBEDDER", "openai")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    monkeypatch.setenv("DEEPMEM_EMBEDDING_MODEL", "test-embed")
    result = run("ingest", str(docs), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)[0]
    assert report["pages_new"] == 2 and report["chunks_embedded"] > 10
    assert "sk-test-secret" not in result.output
    embed_calls = [r for r in openai_server.requests if r["path"] == "embeddings"]
    assert embed_calls and embed_calls[0]["auth"] == "Bearer sk-test-secret"
    hits = json.loads(run("search", "AUTOINCREMENT keyword", "--json").output)["results"]
    assert hits and hits[0]["url"].startswith("autoinc.html")
    status = json.loads(run("status", "--json").output)
    assert status["embedder"] == "openai:test-embed" and status["dim"] == 64

    # the same store searched with another embedder: refused, not garbage
    monkeypatch.setenv("DEEPMEM_EMBEDDER", "local")
    result = CliRunner().invoke(cli, ["search", "AUTOINCREMENT keyword"])
    assert result.exit_code == 1
    assert "built with the embedder openai:test-embed (dimension 64)" in result.output


def test_embedding_endpoint_failure_is_retried_then_reported(tmp_path, small_docs, openai_server, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(small_docs / "autoinc.html", docs / "autoinc.html")
    monkeypatch.setenv("DEEPMEM_EMBEDDER", "openai")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("DEEPMEM_EMBEDDING_MODEL", "test-embed")
    openai_server.fail_next = [500]  # one transient failure: the client retries
    assert run("ingest", str(docs), "-q").exit_code == 0
    openai_server.fail_next = [401] * 10  # a bad key is not retried forever; the error is reported
    (docs / "autoinc.html").write_text((docs / "autoinc.html").read_text().replace("AUTOINCREMENT", "AUTO INC"))
    result = CliRunner().invoke(cli, ["ingest", str(docs), "-q"])
    assert result.exit_code == 1 and "embedding request" in result.output and "failed" in result.output


def test_memory_index_matches_sqlite_vec_and_follows_changes(store_copy, embedder):
    from shared.vector_index import MemoryIndex

    index = MemoryIndex(store_copy)
    assert len(index) == store_copy.stats()["chunks"]
    for question in ("autoincrement keyword", "write-ahead log checkpoint", "JSON functions"):
        q = embedder.embed_query(question)
        exact = store_copy.vector_search(q, 10)
        fast = index.search(q, 10, collapse=False)
        assert [r for r, _ in fast] == [r for r, _ in exact]
        assert all(abs(a - b) < 1e-4 for (_, a), (_, b) in zip(fast, exact))
        # by default one chunk per section: the best chunk of each, in order
        deep = store_copy.vector_search(q, 60)
        urls = {r: c.url for r, c in store_copy.chunks_by_rowid([r for r, _ in deep]).items()}
        firsts = [r for i, (r, _) in enumerate(deep) if urls[r] not in {urls[p] for p, _ in deep[:i]}][:10]
        assert [r for r, _ in index.search(q, 10)] == firsts
        assert len(firsts) == 10 and len({urls[r] for r in firsts}) == 10
    page = store_copy.conn.execute("SELECT id FROM pages WHERE url LIKE '%autoinc.html'").fetchone()[0]
    store_copy.delete_pages([page])  # as an ingest in another process would
    hits = index.search(embedder.embed_query("AUTOINCREMENT keyword"), 10)
    assert len(index) == store_copy.stats()["chunks"]
    chunks = store_copy.chunks_by_rowid([r for r, _ in hits])
    assert len(chunks) == 10 and not any("autoinc.html" in c.url for c in chunks.values())


def test_full_text_alternatives_bring_in_what_the_vectors_missed(store_copy, embedder):
    from shared.search import Searcher
    from shared.vector_index import MemoryIndex

    question = "What happens when the largest possible ROWID has been used and a new row is inserted?"
    for searcher in (Searcher(store_copy, embedder), Searcher(store_copy, embedder, index=MemoryIndex(store_copy))):
        vector = embedder.embed_query(question)
        nearest = searcher.search(question, 10, vector=vector).hits
        exclude = {h.chunk.rowid for h in nearest}
        alternatives = searcher.text_alternatives(question, vector, exclude, 3, first_rank=11)
        assert [h.rank for h in alternatives] == [11, 12, 13]
        assert not exclude & {h.chunk.rowid for h in alternatives}
        # they are what BM25 ranks first among the sections not already retrieved, one chunk each
        shown = {h.chunk.url for h in nearest}
        ranked = [r for r, _ in store_copy.text_search(question, 100)]
        urls = {r: c.url for r, c in store_copy.chunks_by_rowid(ranked).items()}
        bm25 = [r for i, r in enumerate(ranked)
                if urls[r] not in shown and urls[r] not in {urls[p] for p in ranked[:i]}]
        assert [h.chunk.rowid for h in alternatives] == bm25[:3]
        # scored like the nearest: the cosine to the question vector (from the index or from the store)
        for h in alternatives:
            stored = store_copy.similarities(vector, [h.chunk.rowid])[0]
            assert abs(h.score - stored) < 1e-4 and h.score < nearest[-1].score + 1e-6
    assert store_copy.similarities(vector, [10**9]) == [-1.0]
    assert searcher.text_alternatives("the", vector, set(), 3, first_rank=1) == []  # nothing but stop words


def test_read_only_commands_create_nothing_where_there_is_nothing(tmp_path):
    typo = tmp_path / "hmoe"
    for args in (["status"], ["search", "anything"], ["status", "--json"], ["feedback", "export"], ["runs"],
                 ["adapters"], ["train"], ["evaluate"], ["feedback", "quarantine"]):
        result = CliRunner().invoke(cli, ["--home", str(typo), *args])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert f"no store: the data directory {typo} does not exist" in result.output
        assert not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (["status"], ["search", "anything"], ["train"]):
        result = CliRunner().invoke(cli, ["--home", str(empty), *args])
        assert result.exit_code == 1 and "no store" in result.output, result.output
    for args, says in ((["feedback", "export"], ""), (["runs"], "no retraining runs yet\n"),
                       (["adapters"], "no adapters yet: run `deepmem train`\n"),
                       (["feedback", "quarantine"], "nothing quarantined\n")):
        result = CliRunner().invoke(cli, ["--home", str(empty), *args])
        assert result.exit_code == 0 and result.output == says, (args, result.output)
    assert list(empty.iterdir()) == []  # no empty store.db, no spool, no feedback database, no locks


def test_search_refuses_a_question_that_is_not_text(store_copy):
    # a shell passes bytes; Python hands undecodable ones to click as lone surrogates
    for question, message in (("\udcff\udcfe abc", "not valid UTF-8"), ("x" * 10_001, "at most 10,000")):
        result = CliRunner().invoke(cli, ["search", question])
        assert result.exit_code == 1 and result.output.count("\n") == 1 and message in result.output, result.output
        assert result.exception.__class__ is SystemExit


def test_status_shows_the_active_adapter_the_spool_and_damage(store_copy, embedder):
    from shared.deep_memory import AdapterRegistry, LinearAdapter

    home = Home.open(store_copy.path.parent)
    assert "adapter:   none (plain search)" in run("status").output
    registry = AdapterRegistry(home.adapters_dir)
    registry.save(LinearAdapter.identity(embedder.dim), {"embedder": embedder.name, "config": {"dim": embedder.dim}})
    registry.activate("v0001")
    assert "adapter:   v0001\n" in run("status").output
    (registry.root / "v0001" / "weights.npz").write_bytes(b"\x00" * 100)
    (home.root / "memory.json").write_text("{broken")
    quarantine = home.root / "feedback-spool" / "quarantine"
    quarantine.mkdir(parents=True)
    (quarantine / "1-2-3.jsonl").write_text("x\n")
    text = run("status").output
    assert "adapter:   v0001: adapter v0001 cannot be loaded" in text
    assert "memory.json is damaged" in text and "1 quarantined" in text
    data = json.loads(run("status", "--json").output)
    assert data["adapter"] == "v0001" and "cannot be loaded" in data["adapter_problem"]
    assert data["feedback_spool"]["quarantined"] == 1
    registry.save(LinearAdapter.identity(embedder.dim), {"embedder": "some/other-model",
                                                         "config": {"dim": embedder.dim}})
    registry.activate("v0002")
    assert "adapter:   v0002: adapter v0002 was trained for some/other-model" in run("status").output
