"""Ingesting folders: incremental, consistent after a crash, and tolerant of bad files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from shared.ingest import ingest
from shared.settings import load_settings
from shared.store import Store


def _consistent(store: Store) -> tuple[int, int, int]:
    """Chunks, vectors and full-text rows must agree one to one."""
    chunks = store.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    vectors = store.conn.execute("SELECT count(*) FROM chunk_vectors").fetchone()[0]
    missing = store.conn.execute("SELECT count(*) FROM chunks c WHERE NOT EXISTS "
                                 "(SELECT 1 FROM chunk_vectors v WHERE v.rowid = c.rowid)").fetchone()[0]
    fts = store.conn.execute("SELECT count(*) FROM chunk_fts WHERE chunk_fts MATCH 'sqlite'").fetchone()[0]
    direct = store.conn.execute("SELECT count(*) FROM chunks WHERE text LIKE '%sqlite%' OR title LIKE '%sqlite%' "
                                "OR headings LIKE '%sqlite%'").fetchone()[0]
    assert chunks == vectors and missing == 0
    assert fts >= direct * 0.9  # porter stemming finds at least what LIKE finds, modulo tokenisation
    orphans = store.conn.execute("SELECT count(*) FROM chunks WHERE page_id NOT IN (SELECT id FROM pages)").fetchone()[0]
    assert orphans == 0
    return chunks, vectors, fts


def test_small_corpus_ingest(small_store_path):
    with Store.open(small_store_path) as store:
        stats = store.stats()
        assert stats["pages"] == 22 and stats["chunks"] > 500
        assert stats["embedder"] == "sentence-transformers/all-MiniLM-L6-v2" and stats["dim"] == 384
        _consistent(store)
        urls = {r[0] for r in store.conn.execute("SELECT url FROM chunks")}
        rowid = store.conn.execute("SELECT url FROM chunks WHERE text LIKE "
                                   "'Except for WITHOUT ROWID tables, all rows within SQLite tables%'").fetchone()[0]
        assert rowid == "https://sqlite.org/lang_createtable.html#rowids_and_the_integer_primary_key"
        assert any(u.startswith("https://sqlite.org/lang_createtable.html#") for u in urls)
        assert any(u.startswith("https://sqlite.org/c3ref/busy_timeout.html") for u in urls)


def test_reingest_is_incremental(tmp_path, small_docs, embedder):
    docs = tmp_path / "docs"
    shutil.copytree(small_docs, docs)
    settings = load_settings()
    with Store.open(tmp_path / "store.db") as store:
        first = ingest(store, embedder, settings, str(docs), progress=False)
        assert first.pages_new == 22 and first.chunks_embedded > 500

        again = ingest(store, embedder, settings, str(docs), progress=False)
        assert again.pages_unchanged == 22 and again.chunks_embedded == 0 and again.chunks_written == 0
        assert again.seconds < 0.05 * first.seconds

        # edit one paragraph of one page: only that chunk is embedded again
        page = docs / "autoinc.html"
        html = page.read_text()
        assert "monotonically increasing" in html
        page.write_text(html.replace("monotonically increasing", "strictly growing", 1))
        before = {r[0] for r in store.conn.execute("SELECT id FROM chunks")}
        edit = ingest(store, embedder, settings, str(docs), progress=False)
        assert edit.pages_changed == 1 and edit.pages_unchanged == 21
        assert 1 <= edit.chunks_embedded <= 2 and edit.chunks_kept >= 5
        after = {r[0] for r in store.conn.execute("SELECT id FROM chunks")}
        assert len(after - before) == edit.chunks_written and len(before - after) == edit.chunks_written
        hits = store.conn.execute("SELECT count(*) FROM chunks WHERE text LIKE '%strictly growing%'").fetchone()[0]
        assert hits == 1

        # delete a page: its chunks go
        (docs / "copyright.html").unlink()
        removed = ingest(store, embedder, settings, str(docs), progress=False)
        assert removed.pages_removed == 1
        assert store.conn.execute("SELECT count(*) FROM pages WHERE url='copyright.html'").fetchone()[0] == 0
        _consistent(store)


def test_bad_files_are_reported_and_the_rest_ingested(tmp_path, small_docs, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(small_docs / "autoinc.html", docs / "autoinc.html")
    (docs / "empty.html").write_bytes(b"")
    (docs / "image.html").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    (docs / "latin1.md").write_bytes(b"# Caf\xe9\n\ncr\xe8me br\xfbl\xe9e\n")
    (docs / "huge.html").write_bytes(b"<html><body>" + b"<p>big page</p>" * 400_000 + b"</body></html>")
    (docs / "broken.html").write_bytes(b"<html><body><div><p>Unclosed <b>markup that still has <i>words")
    (docs / "notes.txt").write_text("Plain text notes about WAL mode.\n\nSecond paragraph.")
    (docs / "guide.rst").write_text("Guide\n=====\n\nSome reStructuredText.\n\nUsage\n-----\n\nRun it.\n")
    (docs / "photo.png").write_bytes(b"\x89PNG")  # not a document type: ignored, not an error
    (docs / ".hidden.html").write_text("<p>hidden</p>")
    unreadable = docs / "secret.html"
    unreadable.write_text("<p>no access</p>")
    unreadable.chmod(0)
    settings = load_settings(max_page_bytes=1_000_000)
    try:
        with Store.open(tmp_path / "store.db") as store:
            report = ingest(store, embedder, settings, str(docs), progress=False)
            reasons = {f["url"]: f["reason"] for f in report.failures}
            urls = {r[0] for r in store.conn.execute("SELECT url FROM pages")}
    finally:
        unreadable.chmod(0o644)
    assert urls >= {"autoinc.html", "broken.html", "notes.txt", "guide.rst"}
    assert "empty file" in reasons["empty.html"]
    assert "binary" in reasons["image.html"]
    assert "invalid utf-8 at byte" in reasons["latin1.md"]
    assert "too large" in reasons["huge.html"]
    if os.geteuid() != 0:  # root reads anything
        assert "cannot read" in reasons["secret.html"]
    assert not any(u.endswith(("photo.png", ".hidden.html")) for u in list(urls) + list(reasons))


def test_archives_ingest_like_folders(tmp_path, small_docs, embedder):
    import tarfile
    import zipfile

    names = ["autoinc.html", "c3ref/busy_timeout.html"]
    with tarfile.open(tmp_path / "docs.tar.gz", "w:gz") as tar:
        for n in names:
            tar.add(small_docs / n, arcname=n)
    with zipfile.ZipFile(tmp_path / "docs.zip", "w") as zf:
        for n in names:
            zf.write(small_docs / n, arcname=n)
    settings = load_settings()
    with Store.open(tmp_path / "a.db") as a, Store.open(tmp_path / "b.db") as b:
        ingest(a, embedder, settings, str(tmp_path / "docs.tar.gz"), base_url="https://x.test/d/", progress=False)
        ingest(b, embedder, settings, str(tmp_path / "docs.zip"), base_url="https://x.test/d/", progress=False)
        ids_a = sorted(r[0] for r in a.conn.execute("SELECT id FROM chunks"))
        ids_b = sorted(r[0] for r in b.conn.execute("SELECT id FROM chunks"))
        assert ids_a == ids_b and len(ids_a) > 5
        assert {r[0] for r in a.conn.execute("SELECT url FROM pages")} == \
            {"https://x.test/d/autoinc.html", "https://x.test/d/c3ref/busy_timeout.html"}


def test_kill_9_mid_ingest_leaves_a_consistent_store_and_a_rerun_finishes(tmp_path, small_docs, embedder):
    home = tmp_path / "home"
    env = dict(os.environ, DEEPMEM_HOME=str(home), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-c", "from shared.cli import main; main()", "ingest", str(small_docs), "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store_path = home / "store.db"
    deadline = time.time() + 600  # the local model embeds slowly on a loaded machine
    pages = 0
    while time.time() < deadline and proc.poll() is None:
        if store_path.exists():
            try:
                with Store.open(store_path) as probe:
                    pages = probe.conn.execute("SELECT count(*) FROM pages").fetchone()[0]
            except Exception:
                pages = 0
            if pages >= 3:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "ingest finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    with Store.open(store_path) as store:
        partial_pages = store.conn.execute("SELECT count(*) FROM pages").fetchone()[0]
        assert 3 <= partial_pages < 22
        _consistent(store)
        # every stored page is complete: it has as many chunks as a clean ingest gives it
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "unchanged" in rerun.stdout
    with Store.open(store_path) as store:
        assert store.conn.execute("SELECT count(*) FROM pages").fetchone()[0] == 22
        resumed = sorted(r[0] for r in store.conn.execute("SELECT id FROM chunks"))
        _consistent(store)
    with Store.open(tmp_path / "clean.db") as clean:
        ingest(clean, embedder, load_settings(), str(small_docs), progress=False)
        assert sorted(r[0] for r in clean.conn.execute("SELECT id FROM chunks")) == resumed


def test_ctrl_c_mid_ingest_rolls_back_the_open_batch(tmp_path, small_docs, embedder, monkeypatch):
    from shared import ingest as ingest_module

    settings = load_settings()
    calls = {"n": 0}
    real_embed = embedder.embed

    def interrupting_embed(texts, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_embed(texts, **kw)

    monkeypatch.setattr(embedder, "embed", interrupting_embed)
    with Store.open(tmp_path / "store.db") as store:
        with pytest.raises(KeyboardInterrupt):
            ingest_module.ingest(store, embedder, settings, str(small_docs), progress=False)
        _consistent(store)
        partial = store.conn.execute("SELECT count(*) FROM pages").fetchone()[0]
        assert 0 < partial < 22
        monkeypatch.setattr(embedder, "embed", real_embed)
        report = ingest_module.ingest(store, embedder, settings, str(small_docs), progress=False)
        assert report.pages_unchanged == partial and report.pages_new == 22 - partial
        _consistent(store)
