"""The channel configuration in PostgreSQL (the scale-out mode): one row every replica shares.

    channels.config  (id 1, document: channels.json's JSON or NULL for none yet, version, changed_at)

A change is one transaction that locks the row (``SELECT ... FOR UPDATE``), applies the change to
what is stored and writes it back, so two replicas changing it at once both keep their change. A
trigger bumps ``version`` on every write (a hand edit in psql too), and a running bot asks for it
(one small query) at most once a second, so every replica answers by a change within a second.

The document is stored as text, not jsonb, and checked when read exactly as the file is
(``channels.parse_document``): a damaged one is a one-line ConfigError naming the database, and a
change on top of it is refused rather than written over it.
"""

from __future__ import annotations

from typing import Callable

from .channels import MAX_FILE, ChannelConfig, ChannelConfigStore, parse_document
from .database import DatabaseError, SharedConnection, describe, one_line

__all__ = ["PostgresChannelConfigStore", "TABLE"]

SCHEMA = "channels"
TABLE = f"{SCHEMA}.config"
MIGRATION_LOCK = 0x6465_6570_6368  # "deepch"
CREATE = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {TABLE} (
    id integer PRIMARY KEY CHECK (id = 1),
    document text,
    version bigint NOT NULL DEFAULT 0,
    changed_at timestamptz
);
CREATE OR REPLACE FUNCTION {SCHEMA}.bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    NEW.changed_at := now();
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER bump_version BEFORE UPDATE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.bump_version();
INSERT INTO {TABLE} (id) VALUES (1) ON CONFLICT DO NOTHING;
"""
READ = f"SELECT CASE WHEN octet_length(document) <= {MAX_FILE} THEN document END, octet_length(document) " \
       f"FROM {TABLE} WHERE id = 1"


class PostgresChannelConfigStore(ChannelConfigStore):
    poll_interval = 1.0

    def __init__(self, url: str):
        self.where = f"the channel configuration in {describe(url)}"
        self._shared = SharedConnection(url, "deepmem channels")
        self._run(self._migrate, "create")

    def _run(self, work, what: str = "read"):
        """``work(conn)``; a database error becomes a one-line DatabaseError naming the database."""
        import psycopg

        try:
            with self._shared.use() as conn:
                return work(conn)
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot {what} {self.where}: {one_line(exc)}") from None

    @staticmethod
    def _migrate(conn) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
            conn.execute(CREATE)

    def _parse(self, row) -> ChannelConfig:
        if row is None or row[1] is None:
            return ChannelConfig()
        if row[0] is None:  # longer than MAX_FILE: not read, refused by its size
            return parse_document(b" " * (MAX_FILE + 1), self.where)
        return parse_document(row[0], self.where, "fix it in psql")

    def load(self) -> ChannelConfig:
        return self._parse(self._run(lambda conn: conn.execute(READ).fetchone()))

    def update(self, change: Callable[[ChannelConfig], ChannelConfig]) -> ChannelConfig:
        def work(conn):
            with conn.transaction():
                config = change(self._parse(conn.execute(READ + " FOR UPDATE").fetchone()))
                conn.execute(f"UPDATE {TABLE} SET document = %s WHERE id = 1", [config.to_json()])
                return config

        return self._run(work, "change")

    def stamp(self):
        row = self._run(lambda conn: conn.execute(f"SELECT version FROM {TABLE} WHERE id = 1").fetchone())
        return row[0] if row else None

    def close(self) -> None:
        self._shared.close()
