"""The feedback store: every question, answer, retrieval and feedback event, in DuckDB.

DuckDB lets one process at a time open the file for writing, and the bot, the nightly job and
CLI commands all write. So nobody writes to the database directly:

1. a write is appended to the *spool*: a small JSONL file in ``feedback-spool/``, written
   under a temporary name, fsynced and renamed into place (atomic; one file per batch, so
   processes never share a file). Every operation is checked first (``ops.validate``): one
   the database would refuse is an error for the caller and never reaches the spool;
2. whoever can take the database lock *drains* the spool: imports every file in name order
   and deletes it. Imports are idempotent (events carry their own id), so a file imported
   twice after a crash changes nothing.

A file that still cannot be applied (hand-written, from another version, damaged on disk) is
not allowed to block the ones behind it: its good operations are applied one by one, and the
file is moved to ``feedback-spool/quarantine/`` beside a ``.reason`` file saying which lines
failed and why. That is logged once, and `deepmem status` counts the quarantined files.

The bot drains every second; CLI commands drain before they read. A lock held by another
process is waited for with backoff (the bot holds it for milliseconds at a time); if it
cannot be had, writes simply stay in the spool. No event is lost and no lock error reaches
the user. A damaged database file is a one-line error for readers (writes stay in the spool)
and is logged once by drainers.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

from ..errors import DeepmemError
from ..files import write_atomically
from ..home import Home
from . import ops as _ops
from .ops import EVENT_COLUMNS, QUESTION_COLUMNS, RUN_COLUMNS, InvalidFeedback, now
from .schema import migrate

__all__ = ["FeedbackStore", "FeedbackBusy", "FeedbackError", "InvalidFeedback", "now", "spool_counts",
           "has_feedback"]

log = logging.getLogger("deepmem.feedback")

_PROCESS_LOCKS: dict[str, threading.RLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()
_STAMP_GUARD = threading.Lock()
_last_stamp = 0
_REPORTED: set[str] = set()


def _process_lock(path: Path) -> threading.RLock:
    """One lock per database file per process: DuckDB shares one database instance between the
    connections of a process, so they must take turns like separate processes do."""
    key = str(path.resolve())
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(key, threading.RLock())


def _stamp() -> int:
    """Nanoseconds, strictly increasing within this process (the spool is applied in name order,
    so a write must never sort before an earlier one of the same process, even if the clock steps back)."""
    global _last_stamp
    with _STAMP_GUARD:
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        return _last_stamp


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def _report_once(message: str) -> None:
    if message not in _REPORTED:
        _REPORTED.add(message)
        log.warning(message)


def has_feedback(home: Home) -> bool:
    """Is there a feedback database or a spool to read? (Readers say "nothing yet" instead of creating them.)"""
    return home.feedback_path.exists() or (home.root / "feedback-spool").is_dir()


def spool_counts(home: Home) -> dict:
    """Files waiting in the spool and files quarantined, without creating anything."""
    spool = home.root / "feedback-spool"
    quarantine = spool / "quarantine"
    return {"pending": sum(1 for _ in spool.glob("*.jsonl")) if spool.is_dir() else 0,
            "quarantined": sum(1 for _ in quarantine.glob("*.jsonl")) if quarantine.is_dir() else 0,
            "quarantine_dir": str(quarantine)}


def _names_user(line: str, user_id: str) -> bool:
    try:
        op = json.loads(line)
    except ValueError:
        return user_id in line
    if not isinstance(op, dict):
        return user_id in line
    row = op.get("row") if isinstance(op.get("row"), dict) else {}
    return user_id in (op.get("user_id"), row.get("user_id"))


class FeedbackBusy(DeepmemError):
    """The feedback database stayed locked by another process for the whole timeout."""


class FeedbackError(DeepmemError):
    """The feedback database cannot be opened or read (a damaged file, a disk error)."""


def _poison_errors() -> tuple[type[BaseException], ...]:
    """Errors that belong to an operation, not to the database: the operation is refused for good."""
    import duckdb

    return (InvalidFeedback, duckdb.DataError, duckdb.IntegrityError, duckdb.ProgrammingError,
            duckdb.NotSupportedError, KeyError, TypeError, ValueError)


class FeedbackReads:
    """The whole tables, in order, through ``rows(sql)``: the same for every feedback backend."""

    def rows(self, sql: str, params: list | None = None) -> list[dict]:
        raise NotImplementedError

    @staticmethod
    def dicts(cursor) -> list[dict]:
        """A DuckDB cursor's result as one dict a row, keyed by column name."""
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def runs(self) -> list[dict]:
        return self.rows("SELECT * FROM runs ORDER BY started_at, id")

    def labels(self) -> list[dict]:
        return self.rows("SELECT * FROM labels ORDER BY occurred_at, question_id, chunk_id")

    def events(self) -> list[dict]:
        return self.rows("SELECT * FROM events ORDER BY occurred_at, id")

    def questions(self) -> list[dict]:
        return self.rows("SELECT * FROM questions ORDER BY asked_at, id")

    # -- reads by key (a click on a button): one SQL for both backends, which may answer them from their own
    # indexed tables instead of ``rows`` ({t}: the tables' schema, if any; ? a parameter)
    KEYED = {
        "question": "SELECT id, user_id, channel_id, thread_ts, text FROM {t}questions WHERE id = ?",
        "answer_retrievals": "SELECT rank, chunk_id, score, cited FROM {t}retrievals "
                             "WHERE question_id = ? AND variant = 'answer' ORDER BY rank",
        "event": "SELECT id FROM {t}events WHERE id = ?",
    }

    def keyed(self, name: str, params: list) -> list[dict]:
        return self.rows(self.KEYED[name].format(t=""), params)

    def question(self, question_id: str) -> dict | None:
        """The recorded question (id, who asked what, where), or None."""
        rows = self.keyed("question", [question_id])
        return rows[0] if rows else None

    def answer_retrievals(self, question_id: str) -> list[dict]:
        """What an answer retrieved (rank, chunk_id, score, cited), best first."""
        return self.keyed("answer_retrievals", [question_id])

    def has_event(self, event_id: str) -> bool:
        return bool(self.keyed("event", [event_id]))


class FeedbackStore(FeedbackReads):
    def __init__(self, home: Home, lock_timeout: float = 30.0):
        self.path = home.feedback_path
        self.spool = home.root / "feedback-spool"
        self.quarantine = self.spool / "quarantine"
        self.spool.mkdir(parents=True, exist_ok=True)
        self.lock_timeout = lock_timeout
        self._lock = _process_lock(self.path)
        self._migrated = False

    # -- writing: the spool ----------------------------------------------------------------
    def record(self, ops: Iterable[dict]) -> Path | None:
        """Check, then durably queue write operations (see the module docstring). An operation the
        database would refuse raises InvalidFeedback, and nothing of this batch is queued."""
        lines = [json.dumps(_ops.validate(op), ensure_ascii=False) for op in ops]
        if not lines:
            return None
        name = f"{_stamp():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        tmp = self.spool / f".{name}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            final = self.spool / name
            os.rename(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return final

    def pending(self) -> int:
        return sum(1 for _ in self.spool.glob("*.jsonl"))

    def quarantined(self) -> int:
        return sum(1 for _ in self.quarantine.glob("*.jsonl")) if self.quarantine.is_dir() else 0

    # -- the database -----------------------------------------------------------------------
    @contextmanager
    def connect(self, timeout: float | None = None):
        """A DuckDB connection, waiting (with backoff and jitter) while another process holds the lock.
        A database error inside the block becomes a one-line FeedbackError."""
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
                        raise self._damaged(exc) from None
                    if time.monotonic() >= deadline:
                        raise FeedbackBusy(f"the feedback database {self.path} is busy (another process holds it); "
                                           f"writes are kept in {self.spool} and applied later") from None
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.25)
                except duckdb.Error as exc:
                    raise self._damaged(exc) from None
            try:
                if not self._migrated:
                    migrate(conn)
                    self._migrated = True
                yield conn
            except duckdb.InterruptException:
                raise KeyboardInterrupt from None  # Ctrl-C, not a damaged file
            except duckdb.Error as exc:
                raise self._damaged(exc) from None
            finally:
                conn.close()

    def _damaged(self, exc: BaseException) -> FeedbackError:
        return FeedbackError(f"cannot read the feedback database {self.path}: {_one_line(exc)} "
                             f"(new feedback is kept in {self.spool}; move the damaged file aside to start a new one)")

    def drain(self, timeout: float | None = None) -> int:
        """Apply every spooled file; returns the number of operations applied (0 if busy). Never raises
        for the database: a damaged or unreadable one is logged once and the writes stay in the spool."""
        if not any(self.spool.glob("*.jsonl")):
            return 0
        try:
            with self.connect(timeout) as conn:
                return self._drain(conn)
        except FeedbackBusy:
            return 0
        except FeedbackError as exc:
            _report_once(f"feedback spool not applied: {exc}")
            return 0

    def _drain(self, conn) -> int:
        self._sweep_temporary()
        applied = 0
        for path in sorted(self.spool.glob("*.jsonl")):
            try:
                raw = path.read_bytes()
            except FileNotFoundError:  # drained by another process meanwhile
                continue
            parsed, refused = self._parse(raw)
            if not refused:
                try:
                    self._apply_all(conn, [op for _, op in parsed])
                    path.unlink(missing_ok=True)
                    applied += len(parsed)
                    continue
                except _poison_errors():
                    pass  # decided line by line below
            applied += self._salvage(conn, path, raw, parsed, refused)
        return applied

    def _sweep_temporary(self, age: float = 3600.0) -> None:
        """A writer killed before its rename leaves a temporary file; its write was never acknowledged."""
        for tmp in self.spool.glob(".*.tmp"):
            try:
                if time.time() - tmp.stat().st_mtime > age:
                    tmp.unlink()
            except FileNotFoundError:
                pass

    @staticmethod
    def _parse(raw: bytes) -> tuple[list[tuple[int, dict]], list[tuple[int, str]]]:
        """(line number, checked operation) for each good line, and (line number, why) for each bad one."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return [], [(0, f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
        parsed, refused = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                parsed.append((number, _ops.validate(json.loads(line))))
            except json.JSONDecodeError as exc:
                refused.append((number, f"not JSON ({exc.msg} at column {exc.colno})"))
            except InvalidFeedback as exc:
                refused.append((number, str(exc)))
        return parsed, refused

    def _apply_all(self, conn, ops: list[dict]) -> None:
        conn.execute("BEGIN TRANSACTION")
        try:
            for op in ops:
                self._apply(conn, op)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _salvage(self, conn, path: Path, raw: bytes, parsed: list[tuple[int, dict]],
                 refused: list[tuple[int, str]]) -> int:
        """A file that cannot be applied as a whole: apply its good operations one by one, and keep the
        refused lines in the quarantine beside a note of why (line 0: the file as a whole)."""
        refused, applied = list(refused), 0
        for number, op in parsed:
            try:
                self._apply_all(conn, [op])
                applied += 1
            except _poison_errors() as exc:
                refused.append((number, _one_line(exc)))
        if refused:
            refused.sort()
            if refused[0][0] == 0:
                kept = raw
            else:
                lines = raw.decode("utf-8").splitlines()
                kept = "".join(lines[n - 1] + "\n" for n, _ in refused).encode("utf-8")
            self.quarantine.mkdir(parents=True, exist_ok=True)
            write_atomically(self.quarantine / f"{path.name}.reason",
                              "".join(f"line {n}: {why}\n" if n else f"{why}\n" for n, why in refused).encode())
            write_atomically(self.quarantine / path.name, kept)
            where = f"line {refused[0][0]}: " if refused[0][0] else ""
            log.warning("feedback spool: %d of %d operations in %s could not be applied (%s%s); they were moved to "
                        "%s (%d file(s) there), the others were applied", len(refused), len(refused) + applied,
                        path.name, where, refused[0][1], self.quarantine, self.quarantined())
        path.unlink(missing_ok=True)
        return applied

    def requeue_quarantined(self) -> int:
        """Move every quarantined file back into the spool (after the cause was fixed); returns how many."""
        moved = 0
        for path in sorted(self.quarantine.glob("*.jsonl")) if self.quarantine.is_dir() else []:
            os.replace(path, self.spool / path.name)
            (self.quarantine / f"{path.name}.reason").unlink(missing_ok=True)
            moved += 1
        return moved

    def _apply(self, conn, op: dict) -> None:
        kind = op["op"]
        if kind == "question":
            self._upsert(conn, "questions", QUESTION_COLUMNS, op["row"], _ops.QUESTION_REQUIRED)
        elif kind == "retrievals":
            conn.executemany(
                "INSERT INTO retrievals (question_id, variant, rank, chunk_id, url, score, cited) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [[op["question_id"], op["variant"], r["rank"], r["chunk_id"], r["url"], r["score"], r["cited"]]
                 for r in op["rows"]])
        elif kind == "event":
            row = op["row"]
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
            self._upsert(conn, "runs", RUN_COLUMNS, op["row"], _ops.RUN_REQUIRED)
        elif kind == "forget":
            user = op["user_id"]
            asked = "SELECT id FROM questions WHERE user_id = ?"
            conn.execute(f"DELETE FROM events WHERE user_id = ? OR question_id IN ({asked})", [user, user])
            conn.execute(f"DELETE FROM retrievals WHERE question_id IN ({asked})", [user])
            conn.execute("DELETE FROM questions WHERE user_id = ?", [user])

    @staticmethod
    def _upsert(conn, table: str, columns: tuple[str, ...], row: dict, required: tuple[str, ...]) -> None:
        """Insert or update; a row naming only some fields updates an existing row and creates none."""
        if all(row.get(k) is not None for k in required):
            values = [row.get(c) for c in columns]
            updates = ", ".join(f"{c} = coalesce(excluded.{c}, {table}.{c})" for c in columns if c != "id")
            conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                         f"ON CONFLICT (id) DO UPDATE SET {updates}", values)
            return
        given = [c for c in columns if c != "id" and row.get(c) is not None]
        # marking a run interrupted changes only a run still running (never one that finished meanwhile)
        only_running = " AND status = 'running'" if table == "runs" and row.get("status") == "interrupted" else ""
        if given:
            conn.execute(f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in given)} WHERE id = ?{only_running}",
                         [row[c] for c in given] + [row["id"]])

    # -- operations -------------------------------------------------------------------------
    question_op = staticmethod(_ops.question_op)
    retrievals_op = staticmethod(_ops.retrievals_op)
    event_op = staticmethod(_ops.event_op)
    run_op = staticmethod(_ops.run_op)
    labels_op = staticmethod(_ops.labels_op)

    def forget(self, user_id: str) -> dict:
        """Queue the removal of everything a user asked or did, apply it, and say what went."""
        op = _ops.forget_op(user_id)
        self.drain()
        with self.connect() as conn:
            counts = {
                "questions": conn.execute("SELECT count(*) FROM questions WHERE user_id = ?", [user_id]).fetchone()[0],
                "events": conn.execute("SELECT count(*) FROM events WHERE user_id = ?", [user_id]).fetchone()[0],
            }
        self.record([op])
        self.drain()
        counts["quarantined"] = self._scrub_quarantine(user_id)
        return counts

    def _scrub_quarantine(self, user_id: str) -> int:
        """Forgetting a user forgets their operations set aside in the quarantine too; returns how many went.
        A line that cannot be read is dropped when it names the user anywhere."""
        removed = 0
        for path in sorted(self.quarantine.glob("*.jsonl")) if self.quarantine.is_dir() else []:
            raw = path.read_bytes()
            try:
                lines = raw.decode("utf-8").splitlines()
            except UnicodeDecodeError:
                if user_id.encode("utf-8") in raw:
                    path.unlink()
                    (self.quarantine / f"{path.name}.reason").unlink(missing_ok=True)
                    removed += 1
                continue
            kept = [line for line in lines if not _names_user(line, user_id)]
            if len(kept) == len(lines):
                continue
            removed += len(lines) - len(kept)
            if kept:
                write_atomically(path, "".join(f"{line}\n" for line in kept).encode("utf-8"))
            else:
                path.unlink()
                (self.quarantine / f"{path.name}.reason").unlink(missing_ok=True)
        return removed

    # -- reading ----------------------------------------------------------------------------
    def rows(self, sql: str, params: list | None = None) -> list[dict]:
        """Apply the spool, then run a query and return dicts."""
        with self.connect() as conn:
            self._drain(conn)
            cursor = conn.execute(sql, params or [])
            return self.dicts(cursor)
