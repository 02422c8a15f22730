"""A real PostgreSQL with pgvector for the tests, started by the tests themselves.

The server comes from the ``pgserver`` wheel (PostgreSQL 16 binaries with the pgvector 0.6
extension inside); it listens on a Unix socket in a temporary folder, so nothing outside the
test run can reach it. One server per test session; every test that asks for ``pg_url`` gets a
database of its own, dropped afterwards.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import psycopg

__all__ = ["PostgresServer", "start_server"]

_counter = itertools.count(1)


class PostgresServer:
    def __init__(self, root: Path):
        import pgserver  # imported here: only the Postgres tests need it

        self.root = root
        self._server = pgserver.get_server(str(root), cleanup_mode="stop")
        self.admin_url = self._server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>

    def url(self, database: str) -> str:
        base, _, query = self.admin_url.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{database}?{query}"

    def create_database(self, prefix: str = "t") -> str:
        """A fresh, empty database with pgvector available; returns its URL."""
        name = f"{prefix}_{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = self.url(name)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return url

    def copy_database(self, template_url: str, prefix: str = "c") -> str:
        """A fresh database copied from another (which must have no open connections); returns its URL."""
        name = f"{prefix}_{os.getpid()}_{next(_counter)}"
        template = template_url.split("?", 1)[0].rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.split("?", 1)[0].rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        self._server.cleanup()


def start_server(root: Path | None = None) -> PostgresServer:
    return PostgresServer(Path(root) if root else Path(tempfile.mkdtemp(prefix="deepmem-pg-")))
