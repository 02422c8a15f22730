"""Where a Slack history import stands in each channel, and who is reading it now.

One interface, two implementations:

- ``FileProgress`` (one machine): a JSON file per channel in ``$DEEPMEM_HOME/history/``, replaced
  atomically after every page; a process reading a channel holds ``flock`` on its ``.lock`` file.
- ``PostgresProgress`` (DEEPMEM_DATABASE_URL, several replicas): a row per channel in
  ``history_progress``; a replica reading a channel holds a session advisory lock keyed by it. So a
  replica goes on where another stopped, and two replicas never read the same channel at once
  (each would spend Slack's rate limit on the same pages).

What is kept per channel: the last complete pass (``complete_through``), the pass in progress (its
oldest message, page cursor and newest message seen), and every thread read with its latest reply.
"""

from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path

from .database import DatabaseError, SharedConnection, advisory_lock, database_url, one_line
from .errors import DeepmemError
from .files import file_lock, write_atomically
from .home import Home

__all__ = ["HistoryProgress", "FileProgress", "PostgresProgress", "ChannelBusy", "open_progress"]

log = logging.getLogger("deepmem.history")


class ChannelBusy(Exception):
    """Another process is reading this channel's history now."""


def fresh() -> dict:
    return {"complete_through": None, "pass": None, "threads": {}}


class HistoryProgress(ABC):
    @abstractmethod
    def load(self, channel: str) -> dict:
        """The channel's progress; a fresh one if none was saved (or it cannot be read: read it again)."""

    @abstractmethod
    def channels(self) -> list[str]:
        """The channels with a saved progress."""

    @abstractmethod
    def save(self, channel: str, data: dict) -> None:
        """Keep ``data`` as the channel's progress, whole (a crash keeps the old one or the new one)."""

    @abstractmethod
    def reading(self, channel: str):
        """Context manager held while reading the channel; ChannelBusy when another process reads it."""

    def close(self) -> None:
        pass


class FileProgress(HistoryProgress):
    def __init__(self, home: Home):
        self.folder = home.root / "history"

    def _path(self, channel: str) -> Path:
        return self.folder / f"{channel}.json"

    def load(self, channel: str) -> dict:
        data, path = fresh(), self._path(channel)
        if path.exists():
            try:
                data |= json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                log.warning("history state %s is unreadable; this channel is read again from the start", path)
        return data

    def channels(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.json")) if self.folder.is_dir() else []

    def save(self, channel: str, data: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self._path(channel), json.dumps(data))

    @contextmanager
    def reading(self, channel: str):
        self.folder.mkdir(parents=True, exist_ok=True)
        with file_lock(self.folder / f"{channel}.lock", busy=lambda: ChannelBusy(channel)):
            yield


LOCK_PREFIX = 0x6873 << 48  # "hs": the advisory lock keys of history channels


def channel_lock_key(channel: str) -> int:
    """A 64-bit advisory lock key for a channel (a collision would only make two channels take turns)."""
    return LOCK_PREFIX | int.from_bytes(hashlib.blake2b(channel.encode(), digest_size=6).digest(), "big")


class PostgresProgress(HistoryProgress):
    def __init__(self, url: str):
        self.url = url
        self._shared = SharedConnection(url, "deepmem history")
        self._run("CREATE TABLE IF NOT EXISTS history_progress (channel text PRIMARY KEY, data jsonb NOT NULL, "
                  "updated_at timestamptz NOT NULL DEFAULT now())")

    def _run(self, sql: str, params=(), fetch: bool = False):
        import psycopg

        try:
            with self._shared.use() as conn:
                cursor = conn.execute(sql, params)
                return cursor.fetchall() if fetch else None
        except psycopg.errors.UniqueViolation:  # two replicas creating the table at once: it is there now
            return [] if fetch else None
        except psycopg.Error as exc:
            raise DeepmemError(f"cannot keep the history import's progress in the database: {one_line(exc)}") \
                from None
        except DatabaseError as exc:
            raise DeepmemError(str(exc)) from None

    def load(self, channel: str) -> dict:
        rows = self._run("SELECT data FROM history_progress WHERE channel = %s", (channel,), fetch=True)
        data = fresh()
        if rows and isinstance(rows[0][0], dict):
            data |= rows[0][0]
        return data

    def channels(self) -> list[str]:
        return [r[0] for r in self._run("SELECT channel FROM history_progress ORDER BY channel", fetch=True)]

    def save(self, channel: str, data: dict) -> None:
        from psycopg.types.json import Jsonb

        self._run("INSERT INTO history_progress (channel, data) VALUES (%s, %s) ON CONFLICT (channel) DO UPDATE "
                  "SET data = excluded.data, updated_at = now()", (channel, Jsonb(data)))

    @contextmanager
    def reading(self, channel: str):
        with advisory_lock(self.url, channel_lock_key(channel), busy=lambda: ChannelBusy(channel),
                           application="deepmem history"):
            yield

    def close(self) -> None:
        self._shared.close()


def open_progress(home: Home, settings=None) -> HistoryProgress:
    """The history progress of this deployment: in the database when DEEPMEM_DATABASE_URL is set, else files."""
    url = database_url(settings)
    return PostgresProgress(url) if url else FileProgress(home)
