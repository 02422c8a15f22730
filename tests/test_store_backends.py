"""The document store, one suite run against both backends: SQLite (sqlite-vec, FTS5) and PostgreSQL
(pgvector, tsvector). Real databases only: a file in tmp_path, and a fresh database per test on the
session's PostgreSQL (tests/helpers/postgres.py)."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from shared.chunking import Chunk
from shared.errors import EmbedderMismatch, StoreError
from shared.ingest import ingest
from shared.settings import load_settings
from shared.store import DocumentStore, Store, open_store
from shared.store.postgres import PostgresStore

DIM = 32


def _open(kind: str, tmp_path, pg_url: str | None, name: str = "store.db") -> DocumentStore:
    return Store.open(tmp_path / name) if kind == "sqlite" else PostgresStore.open(pg_url)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    """An opened, empty store of each kind (the Postgres one in a fresh database)."""
    pg_url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    store = _open(request.param, tmp_path, pg_url)
    store.kind, store.url = request.param, pg_url
    yield store
    store.close()


def _unit(rng, n: int, dim: int = DIM) -> np.ndarray:
    m = rng.standard_normal((n, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def _page(store, source_id: int, url: str, texts: list[str], vectors: np.ndarray, links=()) -> list[Chunk]:
    """Write one page of chunks (one section each) with the given vectors, in its own transaction."""
    chunks = [Chunk(id=f"{url}#{i}:{t}", page_url=url, title=f"Page {url}", headings=(f"Page {url}", f"Part {i}"),
                    anchors=(f"part-{i}",), text=t, ord=i, n_tokens=len(t.split())) for i, t in enumerate(texts)]
    with store.transaction():
        store.write_page(source_id=source_id, url=url, path=url, title=f"Page {url}",
                         content_hash=str(hash(tuple(texts))), size=sum(map(len, texts)), chunks=chunks,
                         embed_hashes=[f"h:{c.id}" for c in chunks], vectors=[v.tobytes() for v in vectors],
                         links=list(links))
    return chunks


def _fill(store, rng, n_pages: int, per_page: int, collection: str = "default", prefix: str = "p") -> np.ndarray:
    store.bind_embedder("test-vectors", DIM)
    source = store.upsert_source(f"synthetic:{prefix}", "synthetic", collection=collection)
    vectors = _unit(rng, n_pages * per_page)
    for page in range(n_pages):
        part = vectors[page * per_page:(page + 1) * per_page]
        texts = [f"chunk {page}.{j} of {prefix}" for j in range(per_page)]
        _page(store, source.id, f"{prefix}{page}.html", texts, part)
    return vectors


def test_bind_embedder_once_and_refuse_another(backend):
    assert backend.embedder_name is None and backend.vector_search(np.ones(DIM), 5) == []
    backend.bind_embedder("test-vectors", DIM)
    backend.bind_embedder("test-vectors", DIM)  # the same one again: nothing happens
    assert (backend.embedder_name, backend.dim) == ("test-vectors", DIM)
    with pytest.raises(EmbedderMismatch, match="built with the embedder test-vectors .dimension 32."):
        backend.bind_embedder("other-model", 64)
    with pytest.raises(EmbedderMismatch):
        backend.check_embedder("test-vectors", 16)


def test_write_replace_and_delete_pages(backend):
    rng = np.random.default_rng(1)
    backend.bind_embedder("test-vectors", DIM)
    source = backend.upsert_source("synthetic:a", "synthetic", base_url="https://x/")
    v0 = backend.vectors_version()
    first = _page(backend, source.id, "a.html", ["alpha one", "beta two", "gamma three"], _unit(rng, 3),
                  links=[("b.html#x", "see beta", "as beta says")])
    assert backend.vectors_version() > v0
    page_id = backend.page_id("a.html")
    assert backend.page_owner("a.html") == source.id and backend.source_pages(source.id) == [(page_id, "a.html")]
    assert backend.pages_at_path("a.html") == [page_id]
    ids = backend.chunk_ids(page_id)
    assert set(ids) == {c.id for c in first}
    # replace: one chunk kept (same id: same row, same vector), one changed, one gone, one new
    kept = first[0]
    vector_before = backend.similarities(_unit(rng, 1)[0], [ids[kept.id]])
    second = [kept.text, "beta two, changed", "delta four"]
    vectors = _unit(rng, 3)
    chunks = [Chunk(id=kept.id if i == 0 else f"a.html#{i}:{t}", page_url="a.html", title="Page a.html",
                    headings=("Page a.html",), anchors=(f"part-{i}",), text=t, ord=i, n_tokens=2)
              for i, t in enumerate(second)]
    with backend.transaction():
        backend.write_page(source_id=source.id, url="a.html", path="a.html", title="Page a.html", content_hash="2",
                           size=10, chunks=chunks, embed_hashes=["h0", "h1", "h2"],
                           vectors=[v.tobytes() for v in vectors], links=[])
    now = backend.chunk_ids(page_id)
    assert set(now) == {c.id for c in chunks} and now[kept.id] == ids[kept.id]
    assert backend.similarities(_unit(np.random.default_rng(1), 1)[0], [now[kept.id]]) != [] and vector_before
    assert backend.links_from([page_id]) == [] and backend.page_states(source.id)["a.html"].content_hash == "2"
    assert {c.text for c in backend.chunks_by_rowid(list(now.values())).values()} == set(second)
    # delete: chunks, vectors, full text and links go with the page
    v1 = backend.vectors_version()
    backend.delete_pages([page_id])
    assert backend.vectors_version() > v1
    assert backend.page_id("a.html") is None and backend.chunks_by_rowid(list(now.values())) == {}
    assert backend.text_search("delta", 10) == [] and backend.all_vectors()[0].size == 0
    assert backend.stats()["chunks"] == 0 and backend.stats()["sources"] == 1
    assert backend.remove_source("synthetic:a") == {"uri": "synthetic:a", "pages": 0, "chunks": 0}
    with pytest.raises(StoreError, match="no source 'synthetic:a'"):
        backend.remove_source("synthetic:a")


def test_failed_write_leaves_the_old_page_whole(backend):
    """An exception inside the transaction (as a kill would) rolls the whole batch back."""
    rng = np.random.default_rng(2)
    backend.bind_embedder("test-vectors", DIM)
    source = backend.upsert_source("synthetic:a", "synthetic")
    _page(backend, source.id, "a.html", ["old one", "old two"], _unit(rng, 2))
    before = sorted(c.text for c in backend.iter_chunks())
    version = backend.vectors_version()

    class Killed(BaseException):
        pass

    with pytest.raises(Killed):
        with backend.transaction():
            new = [Chunk(id=f"n{i}", page_url="a.html", title="", headings=(), anchors=(), text=f"new {i}", ord=i,
                         n_tokens=2) for i in range(3)]
            backend.write_page(source_id=source.id, url="a.html", path="a.html", title="", content_hash="new",
                               size=1, chunks=new, embed_hashes=["x"] * 3, vectors=[v.tobytes() for v in _unit(rng, 3)],
                               links=[])
            backend.write_page(source_id=source.id, url="b.html", path="b.html", title="", content_hash="b", size=1,
                               chunks=[Chunk(id="b0", page_url="b.html", title="", headings=(), anchors=(),
                                             text="b", ord=0, n_tokens=1)], embed_hashes=["y"],
                               vectors=[_unit(rng, 1)[0].tobytes()], links=[])
            raise Killed()
    assert sorted(c.text for c in backend.iter_chunks()) == before and backend.page_id("b.html") is None
    assert backend.vectors_version() == version and backend.page_states(source.id)["a.html"].content_hash != "new"
    assert len(backend.all_vectors()[0]) == 2


def test_incremental_reingest_skips_unchanged_pages(backend, small_docs, embedder, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("autoinc.html", "lang_vacuum.html"):
        shutil.copy(small_docs / name, docs / name)
    settings = load_settings(home=str(tmp_path / "home"))
    first = ingest(backend, embedder, settings, str(docs), progress=False, collection="runbooks")
    assert first.pages_new == 2 and first.chunks_embedded > 10
    again = ingest(backend, embedder, settings, str(docs), progress=False)
    assert again.pages_unchanged == 2 and again.chunks_embedded == 0 and again.chunks_written == 0
    (docs / "lang_vacuum.html").write_text((docs / "lang_vacuum.html").read_text() + "<p>One more paragraph.</p>")
    (docs / "autoinc.html").unlink()
    third = ingest(backend, embedder, settings, str(docs), progress=False)
    assert (third.pages_changed, third.pages_removed, third.pages_unchanged) == (1, 1, 0)
    assert third.chunks_kept > 0 and third.chunks_embedded <= 3
    assert backend.collections() == ["runbooks"] and backend.source_summaries()[0]["pages"] == 1


def test_exact_vector_search_is_brute_force(backend):
    rng = np.random.default_rng(3)
    vectors = _fill(backend, rng, 20, 25)
    rowids, matrix = backend.all_vectors()
    assert len(rowids) == 500 and np.allclose(np.sort(matrix, axis=0), np.sort(vectors, axis=0), atol=1e-6)
    for q in _unit(rng, 5):
        found = backend.vector_search(q, 10)
        expected = np.argsort(-(matrix @ q))[:10]
        assert [r for r, _ in found] == [int(rowids[i]) for i in expected]
        assert np.allclose([s for _, s in found], (matrix @ q)[expected], atol=1e-5)
        assert np.allclose(backend.similarities(q, [r for r, _ in found]), [s for _, s in found], atol=1e-5)


def test_hnsw_recall_on_random_vectors(backend):
    """Above the exact limit Postgres answers from the HNSW index: recall@10 of exact >= 0.98."""
    rng = np.random.default_rng(4)
    _fill(backend, rng, 30, 100)
    if backend.kind == "postgres":
        backend.exact_limit = 1000  # 3000 chunks: the index answers
        assert backend.build_vector_index(if_needed=True) and not backend.build_vector_index()
        with backend.transaction():
            backend.conn.execute("SELECT set_config('hnsw.ef_search', '400', true)")
            plan = backend.conn.execute("EXPLAIN SELECT rowid FROM chunks ORDER BY embedding <=> %s LIMIT 10",
                                        (np.ones(DIM, np.float32),)).fetchall()
        assert "chunks_embedding_hnsw" in str(plan)
    rowids, matrix = backend.all_vectors()
    recalls = []
    for q in _unit(rng, 50):
        exact = {int(rowids[i]) for i in np.argsort(-(matrix @ q))[:10]}
        recalls.append(len(exact & {r for r, _ in backend.vector_search(q, 10)}) / 10)
    assert np.mean(recalls) >= 0.98, np.mean(recalls)


HOSTILE = ['"unbalanced quote', "NEAR(a b) OR * ^col:x", "AND OR NOT", "(((", "a & b | !c <-> d",
           "'; DROP TABLE chunks; --", "x:* & y:A", "\\", "%_%", "ü ß 中文 🙂", "vacuum " * 5000]


@pytest.mark.parametrize("text", HOSTILE)
def test_text_search_takes_any_text(backend, text):
    rng = np.random.default_rng(5)
    backend.bind_embedder("test-vectors", DIM)
    source = backend.upsert_source("synthetic:a", "synthetic")
    _page(backend, source.id, "a.html", ["VACUUM rebuilds the database file", "The chunks table holds text"],
          _unit(rng, 2))
    found = backend.text_search(text, 10)
    assert all(isinstance(r, int) and isinstance(s, float) for r, s in found)
    assert backend.stats()["chunks"] == 2  # nothing dropped
    ranked = backend.text_search("how does vacuum rebuild the file", 10)
    assert ranked and backend.chunks_by_rowid([ranked[0][0]])[ranked[0][0]].text.startswith("VACUUM")


def test_collections_filter(backend):
    rng = np.random.default_rng(6)
    _fill(backend, rng, 4, 50, collection="big", prefix="b")
    _fill(backend, rng, 1, 20, collection="small", prefix="s")
    assert backend.collections() == ["big", "small"]
    rowids, matrix = backend.all_vectors()
    chunks = backend.chunks_by_rowid(rowids.tolist())
    of = np.array([chunks[int(r)].collection for r in rowids])
    settings = [10_000] if backend.kind == "sqlite" else [10_000, 50]  # exact, then HNSW with over-fetch
    for limit in settings:
        if backend.kind == "postgres":
            backend.exact_limit = limit
            backend.build_vector_index(if_needed=True)  # at 50: the index, over-fetched and filtered
        for q in _unit(rng, 5):
            for wanted in (["small"], ["big"], ["big", "small"]):
                scores = np.where(np.isin(of, wanted), matrix @ q, -np.inf)
                expected = [int(rowids[i]) for i in np.argsort(-scores)[:10]]
                found = [r for r, _ in backend.vector_search(q, 10, collections=wanted)]
                assert found == expected
            assert backend.vector_search(q, 10, collections=["nothing-here"]) == []
    text = backend.text_search("chunk of s", 100, collections=["small"])
    assert len(text) == 20 and all(chunks[r].collection == "small" for r, _ in text)
    assert backend.text_search("chunk", 10, collections=[]) == []
    # a source moved to another collection: searches and in-memory copies follow
    version = backend.vectors_version()
    backend.upsert_source("synthetic:s", "synthetic", collection="moved")
    assert backend.vectors_version() > version and backend.collections() == ["big", "moved"]
    assert backend.vector_search(_unit(rng, 1)[0], 5, collections=["small"]) == []
    assert len(backend.vector_search(_unit(rng, 1)[0], 5, collections=["moved"])) == 5


def test_two_ingesters_at_once_on_different_sources(backend, tmp_path):
    """Two processes' worth of writers (a store each) writing pages of their own sources in interleaved
    transactions: both finish, nothing lost, no deadlock."""
    backend.bind_embedder("test-vectors", DIM)
    errors = []

    def writer(name: str, seed: int) -> None:
        try:
            with _open(backend.kind, tmp_path, backend.url) as store:
                rng = np.random.default_rng(seed)
                source = store.upsert_source(f"synthetic:{name}", "synthetic", collection=name)
                for page in range(30):
                    _page(store, source.id, f"{name}/{page}.html", [f"{name} {page} {j}" for j in range(8)],
                          _unit(rng, 8), links=[(f"{name}/{page + 1}.html", "next", "")])
                store.delete_pages([store.page_id(f"{name}/0.html")])
        except BaseException as exc:  # reported below, with the thread's name
            errors.append((name, exc))

    threads = [threading.Thread(target=writer, args=(name, i)) for i, name in enumerate(("one", "two"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads) and errors == []
    summaries = {s["uri"]: (s["pages"], s["chunks"]) for s in backend.source_summaries()}
    assert summaries == {"synthetic:one": (29, 232), "synthetic:two": (29, 232)}
    assert len(backend.all_vectors()[0]) == 464 and len(backend.all_links()) == 58


def test_chunks_by_rowid_and_id_all_vectors_and_version(backend):
    rng = np.random.default_rng(7)
    _fill(backend, rng, 3, 10)
    rowids, matrix = backend.all_vectors()
    assert list(rowids) == sorted(rowids) and matrix.shape == (30, DIM) and matrix.dtype == np.float32
    some = [int(r) for r in rowids[::7]] + [10**9]
    chunks = backend.chunks_by_rowid(some)
    assert sorted(chunks) == sorted(some[:-1])
    first = chunks[some[0]]
    assert first.page_url == "p0.html" and first.anchors == ("part-0",) and first.collection == "default"
    assert backend.chunks_by_id([first.id, "missing"]) == {first.id: first}
    assert backend.chunk_rowids()[first.id] == first.rowid and len(backend.chunk_texts()) == 30
    assert [c.rowid for c in backend.iter_chunks(order="rowid")] == list(rowids)
    assert [c.ord for c in backend.iter_chunks(order="page")][:10] == list(range(10))
    assert set(backend.chunk_embed_hashes().values()) == {f"h:{c.id}" for c in backend.iter_chunks()}
    assert backend.vectors_for_embed_hashes([f"h:{first.id}"]) == {f"h:{first.id}": matrix[0].tobytes()}
    version = backend.vectors_version()
    _page(backend, backend.sources()[0].id, "p3.html", ["one more"], _unit(rng, 1))
    assert backend.vectors_version() > version and len(backend.all_vectors()[0]) == 31


def test_question_caches(backend):
    assert backend.cached_questions(["k1"]) == {}
    backend.cache_questions("offline-3", {"k1": '["q1"]', "k2": '["q2"]'})
    backend.replace_cached_questions("offline-4", "k3", '["q3"]')  # older versions of the family go
    assert backend.cached_questions(["k1", "k2", "k3"]) == {"k3": '["q3"]'}
    backend.put_question_vectors([("v1", b"\x00\x01"), ("v2", b"\x02")])
    backend.put_question_vectors([("v1", b"\x03")])
    assert backend.question_vectors(["v1", "v2", "v3"]) == {"v1": b"\x03", "v2": b"\x02"}


def test_memory_index_over_either_store(backend):
    from shared.vector_index import MemoryIndex

    rng = np.random.default_rng(8)
    _fill(backend, rng, 5, 20, collection="a", prefix="a")
    _fill(backend, rng, 5, 20, collection="b", prefix="b")
    index = MemoryIndex(backend)
    for q in _unit(rng, 5):
        for wanted in (None, ["a"], ["b"]):
            assert [r for r, _ in index.search(q, 10, collapse=False, collections=wanted)] == \
                [r for r, _ in backend.vector_search(q, 10, collections=wanted)]
    backend.delete_pages([backend.page_id("a0.html")])
    assert index.refresh() and len(index) == 180


def test_open_store_picks_the_backend_and_hides_the_password(tmp_path, pg_url, monkeypatch):
    from shared.home import Home

    home = Home.open(tmp_path / "home")
    with open_store(home, load_settings(home=str(home.root))) as store:
        assert isinstance(store, Store)
    with pytest.raises(StoreError, match="no store in the database"):
        open_store(home, load_settings(home=str(home.root), database_url=pg_url), create=False)
    with open_store(home, load_settings(home=str(home.root), database_url=pg_url)) as store:
        assert isinstance(store, PostgresStore) and store.stats()["chunks"] == 0
    bad = "postgresql://deepmem:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2"
    with pytest.raises(StoreError) as caught:
        PostgresStore.open(bad)
    assert "s3cret-pw" not in str(caught.value) and "cannot connect to the database postgresql://deepmem@127.0.0.1:1/" \
        in str(caught.value)


def test_the_real_pipeline_into_postgres_finds_what_sqlite_finds(pg_small_store, small_store_path, embedder):
    from shared.search import Searcher

    with Store.open(small_store_path) as sqlite_store:
        assert pg_small_store.stats()["chunks"] == sqlite_store.stats()["chunks"]
        for question in ("how do I create an autoincrement column", "busy timeout when the database is locked",
                         "WAL mode checkpoint", "how do I add a column to an existing table"):
            # the same vectors, the same exact search: the same sections in the same order
            found = [[h.chunk.url for h in Searcher(s, embedder).search(question, 5).hits]
                     for s in (sqlite_store, pg_small_store)]
            assert found[0] == found[1], (question, found)
            # hybrid fuses BM25 (FTS5) or ts_rank_cd (tsvector) with it: the same page comes first
            top = [Searcher(s, embedder).search(question, 5, mode="hybrid").hits[0].chunk.page_url
                   for s in (sqlite_store, pg_small_store)]
            assert top[0] == top[1], (question, top)


def test_the_cli_on_postgres(pg_url, small_docs, tmp_path, monkeypatch):
    """DEEPMEM_DATABASE_URL switches every store command to Postgres; nothing is written to the home's store.db."""
    import json

    from click.testing import CliRunner

    from shared.cli import cli

    docs = tmp_path / "runbooks"
    docs.mkdir()
    for name in ("wal.html", "lang_vacuum.html"):
        shutil.copy(small_docs / name, docs / name)
    monkeypatch.setenv("DEEPMEM_DATABASE_URL", pg_url)
    run = lambda *args: CliRunner().invoke(cli, list(args), catch_exceptions=False)  # noqa: E731
    assert run("search", "anything").exit_code == 1  # nothing ingested yet: a clear error
    result = run("ingest", str(docs), "--collection", "runbooks", "-q")
    assert result.exit_code == 0, result.output
    hits = json.loads(run("search", "write-ahead log checkpoint", "--collection", "runbooks", "--json").output)
    assert hits["results"][0]["url"].startswith("wal.html")
    result = CliRunner().invoke(cli, ["search", "x", "--collection", "api"])
    assert result.exit_code == 1 and "unknown collection api" in result.output
    status = json.loads(run("status", "--json").output)
    assert status["path"].startswith("postgresql://") and status["pages"] == 2
    assert status["collections"] == ["runbooks"]
    assert " in runbooks: 2 pages" in run("sources").output
    assert not (tmp_path / "home" / "store.db").exists()
    assert run("sources", "remove", str(docs)).exit_code == 0
    assert json.loads(run("status", "--json").output)["chunks"] == 0


def test_kill_9_mid_ingest_into_postgres_leaves_whole_pages(pg_url, pg_small_store, small_docs, tmp_path):
    """A killed ingest (SIGKILL, no cleanup) leaves each page wholly written or absent; a rerun finishes
    and gives exactly the chunks of a clean ingest."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, DEEPMEM_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1", DEEPMEM_DATABASE_URL=pg_url)
    cmd = [sys.executable, "-c", "from shared.cli import main; main()", "ingest", str(small_docs), "-q",
           "--base-url", "https://sqlite.org/"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline, pages = time.time() + 600, 0
    while time.time() < deadline and proc.poll() is None:
        try:
            with PostgresStore.open(pg_url, create=False) as probe:
                pages = probe.stats()["pages"]
        except StoreError:
            pages = 0
        if pages >= 3:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "ingest finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)

    clean: dict[str, set[str]] = {}
    for c in pg_small_store.iter_chunks():
        clean.setdefault(c.page_url, set()).add(c.id)
    with PostgresStore.open(pg_url, create=False) as store:
        partial: dict[str, set[str]] = {}
        for c in store.iter_chunks():
            partial.setdefault(c.page_url, set()).add(c.id)
        assert 3 <= store.stats()["pages"] < 22 and len(partial) == store.stats()["pages"]
        assert all(partial[url] == clean[url] for url in partial)  # every stored page is whole
        assert len(store.all_vectors()[0]) == store.stats()["chunks"]
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    with PostgresStore.open(pg_url, create=False) as store:
        assert {c.id for c in store.iter_chunks()} == set().union(*clean.values())


def test_postgres_rows_loaded_before_binding_are_indexed_at_bind(pg_url):
    """A bulk load (rows first, embedder bound after) gets its HNSW index from bind_embedder."""
    rng = np.random.default_rng(9)
    with PostgresStore.open(pg_url) as store:
        store.exact_limit = 100
        source = store.upsert_source("synthetic:bulk", "synthetic")
        for page in range(3):
            _page(store, source.id, f"bulk{page}.html", [f"row {page}.{j}" for j in range(50)], _unit(rng, 50))
        assert store.build_vector_index() is False  # no embedder bound yet: nothing to index
        store.bind_embedder("test-vectors", DIM)
        assert not store.build_vector_index()  # bind built it
        assert len(store.vector_search(_unit(rng, 1)[0], 10)) == 10


def test_postgres_hnsw_options_come_from_the_settings_and_a_rebuild_swaps_the_index_in(pg_url, tmp_path,
                                                                                       monkeypatch):
    """DEEPMEM_PG_HNSW_M / _EF_CONSTRUCTION / DEEPMEM_PG_EF_SEARCH reach the index; an index built with other
    options is kept (and reported) until `deepmem vector-index --rebuild`, which builds the new one beside
    it and swaps it in; search answers from the index throughout."""
    import json

    from click.testing import CliRunner

    from shared.cli import cli

    rng = np.random.default_rng(11)
    monkeypatch.setenv("DEEPMEM_DATABASE_URL", pg_url)
    monkeypatch.setenv("DEEPMEM_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()  # the replica's own data directory
    for name, value in (("M", "8"), ("EF_CONSTRUCTION", "24")):
        monkeypatch.setenv(f"DEEPMEM_PG_HNSW_{name}", value)
    monkeypatch.setenv("DEEPMEM_PG_EF_SEARCH", "120")
    with open_store(None, load_settings()) as store:
        assert (store.hnsw_m, store.hnsw_ef_construction, store.ef_search) == (8, 24, 120)
        store.exact_limit = 1000
        _fill(store, rng, 30, 100)  # 3000 chunks
        assert store.build_vector_index(if_needed=True)
        assert {k: store.vector_index()[k] for k in ("built", "valid", "m", "ef_construction")} == {
            "built": True, "valid": True, "m": 8, "ef_construction": 24}

    def cli_state(*args):
        result = CliRunner().invoke(cli, ["vector-index", *args, "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    monkeypatch.setenv("DEEPMEM_PG_HNSW_M", "12")  # new settings: the built index stays until a rebuild
    assert (cli_state()["m"], cli_state()["wanted"]["m"]) == (8, 12)
    text = CliRunner().invoke(cli, ["vector-index"], catch_exceptions=False).output
    assert "m 8, ef_construction 24" in text and "run `deepmem vector-index --rebuild`" in text
    with open_store(None, load_settings()) as store:
        assert not store.build_vector_index(if_needed=True)  # an ingest's end does not rebuild it
    rebuilt = cli_state("--rebuild")
    assert (rebuilt["m"], rebuilt["ef_construction"], rebuilt["valid"]) == (12, 24, True)
    assert rebuilt["rebuilt_in_s"] >= 0
    with open_store(None, load_settings()) as store:
        store.exact_limit = 1000
        names = [r[0] for r in store.conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'chunks' "
                                                  "AND indexdef LIKE '%hnsw%'").fetchall()]
        assert names == ["chunks_embedding_hnsw"]  # the old one is gone, the new one has its name
        rowids, matrix = store.all_vectors()
        recalls = []
        for q in _unit(rng, 30):
            exact = {int(rowids[i]) for i in np.argsort(-(matrix @ q))[:10]}
            recalls.append(len(exact & {r for r, _ in store.vector_search(q, 10)}) / 10)
        assert np.mean(recalls) >= 0.95, np.mean(recalls)


def test_hnsw_settings_are_checked_in_one_line():
    from shared.errors import ConfigError

    with pytest.raises(ConfigError, match=r"DEEPMEM_PG_HNSW_EF_CONSTRUCTION \(40\) must be at least twice "
                                          r"DEEPMEM_PG_HNSW_M \(32\)"):
        load_settings(pg_hnsw_m=32, pg_hnsw_ef_construction=40)
    with pytest.raises(ConfigError, match="pg_ef_search"):
        load_settings(pg_ef_search=5000)


def test_the_single_machine_store_says_it_has_no_vector_index(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from shared.cli import cli

    monkeypatch.delenv("DEEPMEM_DATABASE_URL", raising=False)
    store = Store.open(tmp_path / "store.db")
    store.close()
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "vector-index"])
    assert result.exit_code == 1 and "searches exactly and has no vector index" in result.output
