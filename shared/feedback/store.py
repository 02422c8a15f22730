"""The feedback store: every question, answer, retrieval and feedback event, in DuckDB.

DuckDB lets one process at a time open the file for writing, and the bot, the nightly job and
CLI commands all write. So nobody writes to the database directly:

1. a write is appended to the *spool*: a small JSONL file in ``feedback-spool/``, written
   under a temporary name, fsynced and renamed into place (atomic; one file per batch, so
   processes never share a file);
2. whoever can take the database lock *drains* the spool: imports every file in name order
   and deletes it. Imports are idempotent (events carry their own id), so a file imported
   twice after a crash changes nothing.

The bot drains every second; CLI commands drain before they read. A lock held by another
process is waited for with backoff (the bot holds it for milliseconds at a time); if it
cannot be had, writes simply stay in the spool. No event is lost and no lock error reaches
the user.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from ..errors import DeepmemError
from ..home import Home
from .schema import migrate

__all__ = ["FeedbackStore", "FeedbackBusy", "now"]

QUESTION_COLUMNS = ("id", "asked_at", "source", "user_id", "team_id", "channel_id", "thread_ts", "message_ts",
                    "dedupe_key", "text", "answer", "answer_mode", "adapter_version", "answered_at", "latency_ms",
                    "error")
RUN_COLUMNS = ("id", "started_at", "finished_at", "trigger", "status", "pid", "version", "champion", "decision",
               "counts", "metrics", "error", "seconds")
EVENT_COLUMNS = ("id", "question_id", "occurred_at", "user_id", "kind", "value", "chunk_id", "rank", "detail",
                 "target")


_PROCESS_LOCKS: dict[str, threading.RLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock(path: Path) -> threading.RLock:
    """One lock per database file per process: DuckDB shares one database instance between the
    connections of a process, so they must take turns like separate processes do."""
    key = str(path.resolve())
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(key, threading.RLock())


class FeedbackBusy(DeepmemError):
    """The feedback database stayed locked by another process for the whole timeout."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


class FeedbackStore:
    def __init__(self, home: Home, lock_timeout: float = 30.0):
        self.path = home.feedback_path
        self.spool = home.root / "feedback-spool"
        self.spool.mkdir(parents=True, exist_ok=True)
        self.lock_timeout = lock_timeout
        self._lock = _process_lock(self.path)
        self._migrated = False

    # -- writing: the spool ----------------------------------------------------------------
    def record(self, ops: Iterable[dict]) -> Path | None:
        """Durably queue write operations (see the module docstring)."""
        lines = [json.dumps(op, ensure_ascii=False, default=str) for op in ops]
        if not lines:
            return None
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        tmp = self.spool / f".{name}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        final = self.spool / name
        os.rename(tmp, final)
        return final

    def pending(self) -> int:
        return sum(1 for _ in self.spool.glob("*.jsonl"))

    # -- the database -----------------------------------------------------------------------
    @contextmanager
    def connect(self, timeout: float | None = None):
        """A DuckDB connection, waiting (with backoff and jitter) while another process holds the lock."""
        import duckdb

        deadline = time.monotonic() + (self.lock_timeout if timeout is None else timeout)
        delay = 0.005
        with self._lock:
            while True:
                try:
                    conn = duckdb.connect(str(self.path))
                    break
                except duckdb.IOException as exc:
                    if "lock" not in str(exc).lower():
                        raise DeepmemError(f"cannot open the feedback database {self.path}: {exc}") from None
                    if time.monotonic() >= deadline:
                        raise FeedbackBusy(f"the feedback database {self.path} is busy (another process holds it); "
                                           f"writes are kept in {self.spool} and applied later") from None
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.25)
                except duckdb.Error as exc:
                    raise DeepmemError(f"cannot open the feedback database {self.path}: {exc}") from None
            try:
                if not self._migrated:
                    migrate(conn)
                    self._migrated = True
                yield conn
            finally:
                conn.close()

    def drain(self, timeout: float | None = None) -> int:
        """Apply every spooled file; returns the number of operations applied (0 if busy)."""
        if not any(self.spool.glob("*.jsonl")):
            return 0
        try:
            with self.connect(timeout) as conn:
                return self._drain(conn)
        except FeedbackBusy:
            return 0

    def _drain(self, conn) -> int:
        applied = 0
        for path in sorted(self.spool.glob("*.jsonl")):
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except FileNotFoundError:  # drained by another process meanwhile
                continue
            ops = []
            for line in lines:
                try:
                    ops.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn line cannot happen (atomic rename), but never block the spool on one
            conn.execute("BEGIN TRANSACTION")
            try:
                for op in ops:
                    self._apply(conn, op)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            path.unlink(missing_ok=True)
            applied += len(ops)
        return applied

    def _apply(self, conn, op: dict) -> None:
        kind = op.get("op")
        if kind == "question":
            row = {k: op["row"].get(k) for k in QUESTION_COLUMNS}
            cols = ", ".join(QUESTION_COLUMNS)
            marks = ", ".join("?" * len(QUESTION_COLUMNS))
            updates = ", ".join(f"{c} = coalesce(excluded.{c}, questions.{c})" for c in QUESTION_COLUMNS if c != "id")
            conn.execute(f"INSERT INTO questions ({cols}) VALUES ({marks}) ON CONFLICT (id) DO UPDATE SET {updates}",
                         [row[c] for c in QUESTION_COLUMNS])
        elif kind == "retrievals":
            conn.executemany(
                "INSERT INTO retrievals (question_id, variant, rank, chunk_id, url, score, cited) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [[op["question_id"], op["variant"], r["rank"], r["chunk_id"], r.get("url"), r.get("score"),
                  bool(r.get("cited"))] for r in op["rows"]])
        elif kind == "event":
            row = {k: op["row"].get(k) for k in EVENT_COLUMNS}
            conn.execute(f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))}) "
                         f"ON CONFLICT (id) DO NOTHING", [row[c] for c in EVENT_COLUMNS])
        elif kind == "labels":  # a question's labels from one origin, replaced whole (a re-read thread)
            conn.execute("DELETE FROM events WHERE question_id = ? AND kind = 'label' AND detail = ?",
                         [op["question_id"], op["detail"]])
            for n, r in enumerate(op["rows"]):
                conn.execute(f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES "
                             f"({', '.join('?' * len(EVENT_COLUMNS))}) ON CONFLICT (id) DO NOTHING",
                             [f"{op['question_id']}:{op['detail']}:{n}", op["question_id"], r.get("at") or now(),
                              r.get("user_id"), "label", int(r["value"]), r.get("chunk_id"), None, op["detail"],
                              r.get("target")])
        elif kind == "run":
            row = {k: op["row"].get(k) for k in RUN_COLUMNS}
            for k in ("counts", "metrics"):
                if row[k] is not None and not isinstance(row[k], str):
                    row[k] = json.dumps(row[k], default=str)
            cols = ", ".join(RUN_COLUMNS)
            updates = ", ".join(f"{c} = coalesce(excluded.{c}, runs.{c})" for c in RUN_COLUMNS if c != "id")
            conn.execute(f"INSERT INTO runs ({cols}) VALUES ({', '.join('?' * len(RUN_COLUMNS))}) "
                         f"ON CONFLICT (id) DO UPDATE SET {updates}", [row[c] for c in RUN_COLUMNS])
        elif kind == "forget":
            user = op["user_id"]
            asked = "SELECT id FROM questions WHERE user_id = ?"
            conn.execute(f"DELETE FROM events WHERE user_id = ? OR question_id IN ({asked})", [user, user])
            conn.execute(f"DELETE FROM retrievals WHERE question_id IN ({asked})", [user])
            conn.execute("DELETE FROM questions WHERE user_id = ?", [user])

    # -- operations -------------------------------------------------------------------------
    @staticmethod
    def question_op(**row) -> dict:
        unknown = set(row) - set(QUESTION_COLUMNS)
        if unknown:
            raise ValueError(f"unknown question fields: {sorted(unknown)}")
        return {"op": "question", "row": row}

    @staticmethod
    def retrievals_op(question_id: str, variant: str, rows: list[dict]) -> dict:
        return {"op": "retrievals", "question_id": question_id, "variant": variant, "rows": rows}

    @staticmethod
    def event_op(*, question_id: str, kind: str, user_id: str | None, value: int = 0, chunk_id: str | None = None,
                 rank: int | None = None, detail: str | None = None, id: str | None = None, at: str | None = None,
                 target: str | None = None) -> dict:
        if kind not in ("vote", "reaction", "source_click", "label"):
            raise ValueError(f"unknown event kind {kind!r}")
        return {"op": "event", "row": {"id": id or uuid.uuid4().hex, "question_id": question_id, "occurred_at": at or now(),
                                       "user_id": user_id, "kind": kind, "value": int(value), "chunk_id": chunk_id,
                                       "rank": rank, "detail": detail, "target": target}}

    @staticmethod
    def labels_op(question_id: str, detail: str, rows: list[dict]) -> dict:
        """Replace the labels of ``question_id`` that came from ``detail`` (e.g. "history") with ``rows``:
        {"target": page URL or url#anchor, or "chunk_id"; "value": strength (negative: not relevant);
        "user_id": who gave it; "at": when}."""
        for r in rows:
            if not (r.get("target") or r.get("chunk_id")) or not isinstance(r.get("value"), int) or not r["value"]:
                raise ValueError(f"a label needs a target or a chunk id and a non-zero integer value: {r!r}")
        return {"op": "labels", "question_id": question_id, "detail": detail, "rows": rows}

    def forget(self, user_id: str) -> dict:
        """Queue the removal of everything a user asked or did, apply it, and say what went."""
        self.drain()
        with self.connect() as conn:
            counts = {
                "questions": conn.execute("SELECT count(*) FROM questions WHERE user_id = ?", [user_id]).fetchone()[0],
                "events": conn.execute("SELECT count(*) FROM events WHERE user_id = ?", [user_id]).fetchone()[0],
            }
        self.record([{"op": "forget", "user_id": user_id}])
        self.drain()
        return counts

    # -- reading ----------------------------------------------------------------------------
    def rows(self, sql: str, params: list | None = None) -> list[dict]:
        """Apply the spool, then run a query and return dicts."""
        with self.connect() as conn:
            self._drain(conn)
            cursor = conn.execute(sql, params or [])
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    @staticmethod
    def run_op(**row) -> dict:
        unknown = set(row) - set(RUN_COLUMNS)
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        return {"op": "run", "row": row}

    def runs(self) -> list[dict]:
        return self.rows("SELECT * FROM runs ORDER BY started_at, id")

    def labels(self) -> list[dict]:
        return self.rows("SELECT * FROM labels ORDER BY occurred_at, question_id, chunk_id")

    def events(self) -> list[dict]:
        return self.rows("SELECT * FROM events ORDER BY occurred_at, id")

    def questions(self) -> list[dict]:
        return self.rows("SELECT * FROM questions ORDER BY asked_at, id")
