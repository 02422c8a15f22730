"""What a consistent store looks like, checked on the real SQLite file."""

from __future__ import annotations


def check_store(store) -> dict[str, frozenset[str]]:
    """Assert that chunks, vectors, full text, pages, links and sources agree; return
    {page url: chunk ids} so two stores can be compared page by page."""
    one = lambda sql: store.conn.execute(sql).fetchone()[0]  # noqa: E731
    chunks = one("SELECT count(*) FROM chunks")
    if store.embedder_name is not None:
        assert one("SELECT count(*) FROM chunk_vectors") == chunks
        assert one("SELECT count(*) FROM chunks c WHERE NOT EXISTS "
                   "(SELECT 1 FROM chunk_vectors v WHERE v.rowid = c.rowid)") == 0
    assert one("SELECT count(*) FROM chunk_fts_docsize") == chunks  # the full-text index has every chunk, once
    store.conn.execute("INSERT INTO chunk_fts(chunk_fts, rank) VALUES ('integrity-check', 1)")  # raises if not
    assert one("SELECT count(*) FROM chunks WHERE page_id NOT IN (SELECT id FROM pages)") == 0
    assert one("SELECT count(*) FROM links WHERE page_id NOT IN (SELECT id FROM pages)") == 0
    assert one("SELECT count(*) FROM pages WHERE source_id NOT IN (SELECT id FROM sources)") == 0
    assert one("SELECT count(*) FROM pages p WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.page_id = p.id)") == 0
    out: dict[str, set[str]] = {}
    for url, cid in store.conn.execute("SELECT p.url, c.id FROM pages p JOIN chunks c ON c.page_id = p.id"):
        out.setdefault(url, set()).add(cid)
    return {url: frozenset(ids) for url, ids in out.items()}
