"""Numbered schema migrations for the store, recorded in ``meta.schema_version``.

Each runs once, inside a transaction. A store whose version is newer than the newest
migration here was written by a newer deepmem and is refused rather than misread.
"""

from __future__ import annotations

from typing import Callable

from ..errors import StoreError
from .connection import transaction

__all__ = ["migrate", "SCHEMA_VERSION"]

MIGRATIONS: list[Callable] = []


def migration(fn: Callable) -> Callable:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_pages_and_chunks(conn) -> None:
    conn.executescript("""
        CREATE TABLE sources (
            id INTEGER PRIMARY KEY,
            uri TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            base_url TEXT,
            options TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
            last_ingest_at TEXT,
            last_report TEXT
        );
        CREATE TABLE pages (
            id INTEGER PRIMARY KEY,
            source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
            url TEXT NOT NULL UNIQUE,
            path TEXT,
            title TEXT NOT NULL DEFAULT '',
            content_hash TEXT NOT NULL,
            size INTEGER NOT NULL DEFAULT 0,
            ingested_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
        );
        CREATE INDEX pages_source ON pages(source_id);
        CREATE TABLE chunks (
            rowid INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            page_id INTEGER NOT NULL REFERENCES pages(id) ON DELETE CASCADE,
            ord INTEGER NOT NULL,
            url TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            headings TEXT NOT NULL DEFAULT '[]',
            anchors TEXT NOT NULL DEFAULT '[]',
            text TEXT NOT NULL,
            n_tokens INTEGER NOT NULL DEFAULT 0,
            embed_hash TEXT NOT NULL
        );
        CREATE INDEX chunks_page ON chunks(page_id);
        CREATE INDEX chunks_embed_hash ON chunks(embed_hash);
        -- links between pages: the text people use to point at a section
        CREATE TABLE links (
            page_id INTEGER NOT NULL REFERENCES pages(id) ON DELETE CASCADE,
            target TEXT NOT NULL,
            text TEXT NOT NULL,
            context TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX links_page ON links(page_id);
        CREATE INDEX links_target ON links(target);
        CREATE VIRTUAL TABLE chunk_fts USING fts5(
            title, headings, text, content='chunks', content_rowid='rowid', tokenize='porter unicode61'
        );
        CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
            INSERT INTO chunk_fts(rowid, title, headings, text) VALUES (new.rowid, new.title, new.headings, new.text);
        END;
        CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
            INSERT INTO chunk_fts(chunk_fts, rowid, title, headings, text)
            VALUES ('delete', old.rowid, old.title, old.headings, old.text);
        END;
    """)


@migration
def m002_question_cache(conn) -> None:
    conn.executescript("""
        -- generated questions, keyed by generator and the content they were made from,
        -- so nothing is generated (or paid for) twice
        CREATE TABLE questions (
            key TEXT PRIMARY KEY,
            generator TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
        );
    """)


@migration
def m003_question_vectors(conn) -> None:
    conn.executescript("""
        -- vectors of training and evaluation questions, keyed by embedder and text: a nightly run
        -- embeds only the questions it has not seen
        CREATE TABLE question_vectors (
            key TEXT PRIMARY KEY,
            vector BLOB NOT NULL
        );
    """)


@migration
def m004_collections(conn) -> None:
    conn.executescript("""
        -- every source belongs to one collection; sources from before collections go to 'default'
        ALTER TABLE sources ADD COLUMN collection TEXT NOT NULL DEFAULT 'default';
        CREATE INDEX sources_collection ON sources(collection);
    """)


SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn) -> int:
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if not has_meta:
        others = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
        if others:
            raise StoreError("the file is an SQLite database but not a deepmem store")
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(conn, path: str = "") -> int:
    """Bring the store up to SCHEMA_VERSION; returns the version it was at."""
    before = current_version(conn)
    if before > SCHEMA_VERSION:
        raise StoreError(
            f"the store {path} has schema version {before}, written by a newer deepmem; this version "
            f"understands up to {SCHEMA_VERSION}. Upgrade deepmem or point DEEPMEM_HOME elsewhere.")
    for number, fn in enumerate(MIGRATIONS, start=1):
        if number <= before:
            continue
        with transaction(conn):
            if number == 1:
                conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            _run_script(conn, fn)
            conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                         "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(number),))
    return before


def _run_script(conn, fn: Callable) -> None:
    # executescript() would COMMIT our transaction; run the statements one by one instead
    class _Inline:
        def __init__(self, c):
            self._c = c

        def executescript(self, script: str):
            for statement in _split_sql(script):
                self._c.execute(statement)

        def __getattr__(self, name):
            return getattr(self._c, name)

    fn(_Inline(conn))


def _split_sql(script: str) -> list[str]:
    """Split a script into statements, keeping trigger bodies (BEGIN ... END;) whole."""
    from .connection import sqlite3

    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
