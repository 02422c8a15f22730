"""The feedback store's write operations, checked and bounded before they are spooled.

Every write to the feedback database is an operation (a dict) appended to the spool and
applied later by whoever drains it. An operation DuckDB would refuse (a timestamp like "last
tuesday", a rank that is not a number, a kind the schema does not know) must never reach the
spool: it would roll back its whole file at every drain. So every operation is built and
checked here, and the spool applies only what passes ``validate``:

- ids are non-empty strings of at most ``MAX_ID`` characters; texts are bounded (a question
  ``MAX_QUESTION``, an answer ``MAX_ANSWER``; diagnostics such as a run's error are cut, not
  refused); strings must be valid Unicode (no lone surrogates); a NUL character, which
  PostgreSQL's text cannot hold, is refused in ids, URLs and names and becomes U+FFFD in prose;
- timestamps are ISO 8601, between 1970 and one day from now (a vote dated 2999 would win
  "the latest vote counts" for ever), stored with a time zone (UTC when none is given);
- ranks are integers from 1 to ``MAX_RANK``; a vote is -1, 0 or +1; scores are finite;
- a question or run that names only some fields (where an answer was posted, a run marked
  interrupted) updates the row if it exists and is otherwise dropped: it cannot create a row
  that lacks its required fields.

A refusal is an ``InvalidFeedback`` with a one-line message naming the field and the value.
"""

from __future__ import annotations

import json
import math
import numbers
import uuid
from datetime import datetime, timedelta, timezone

from ..errors import DeepmemError

__all__ = ["InvalidFeedback", "validate", "question_op", "retrievals_op", "event_op", "run_op", "forget_op",
           "labels_op", "parse_timestamp", "now", "QUESTION_COLUMNS", "RUN_COLUMNS", "EVENT_COLUMNS", "EVENT_KINDS"]

QUESTION_COLUMNS = ("id", "asked_at", "source", "user_id", "team_id", "channel_id", "thread_ts", "message_ts",
                    "dedupe_key", "text", "answer", "answer_mode", "adapter_version", "answered_at", "latency_ms",
                    "error", "covered", "coverage")
RUN_COLUMNS = ("id", "started_at", "finished_at", "trigger", "status", "pid", "version", "champion", "decision",
               "counts", "metrics", "error", "seconds")
EVENT_COLUMNS = ("id", "question_id", "occurred_at", "user_id", "kind", "value", "chunk_id", "rank", "detail",
                 "target")
QUESTION_REQUIRED = ("asked_at", "source", "text")  # NOT NULL in the schema: needed to create a question
RUN_REQUIRED = ("started_at", "status")
EVENT_KINDS = ("vote", "reaction", "source_click", "label", "escalated")
RUN_STATUSES = ("running", "promoted", "kept", "skipped", "failed", "interrupted")
VARIANTS = ("answer", "base")

MAX_ID = 256            # ids, user ids, Slack timestamps, versions
MAX_SHORT = 64          # a question's source, an answer's mode, a run's trigger
MAX_QUESTION = 40_000   # Slack's own limit on a message
MAX_ANSWER = 100_000
MAX_URL = 4096
MAX_NOTE = 4000         # diagnostics (a run's decision or error, an event's detail): cut, not refused
MAX_JSON = 1_000_000    # a run's counts and metrics
MAX_RANK = 100_000
MAX_ROWS = 1000         # retrieved chunks recorded per question and variant; labels per question
MAX_STRENGTH = 2        # a label's value: 1, or 2 for a strong one (an answer marked resolved); negative: not relevant
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
FUTURE_SLACK = timedelta(days=1)


class InvalidFeedback(DeepmemError):
    """A feedback operation with a value the feedback database would refuse."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(field: str, value, limit: int, *, required: bool = False, cut: bool = False,
          prose: bool = False) -> str | None:
    """A bounded string. ``prose`` (what people or a model wrote; diagnostics): a NUL character, which
    PostgreSQL's text cannot hold, becomes U+FFFD; in an id, a URL or a name it is refused."""
    if value is None:
        if required:
            raise InvalidFeedback(f"{field} is missing")
        return None
    if not isinstance(value, str):
        raise InvalidFeedback(f"{field} must be a string, not {_show(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidFeedback(f"{field} is not valid Unicode text (it holds a lone surrogate)") from None
    if "\x00" in value:  # the same in both modes
        if not (prose or cut):
            raise InvalidFeedback(f"{field} holds a NUL character (\\x00)")
        value = value.replace("\x00", "\ufffd")
    if required and not value.strip():
        raise InvalidFeedback(f"{field} is empty")
    if len(value) > limit:
        if not cut:
            raise InvalidFeedback(f"{field} is {len(value):,} characters long; at most {limit:,} are kept")
        value = value[: limit - 1] + "…"
    return value


def parse_timestamp(value, field: str = "timestamp") -> str:
    """An ISO 8601 timestamp (or datetime) as an ISO string with a time zone; UTC when none is given."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and len(value) <= 64:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidFeedback(f"{field} must be an ISO 8601 timestamp such as 2026-01-31T09:00:00Z, "
                                  f"not {_show(value)}") from None
    else:
        raise InvalidFeedback(f"{field} must be an ISO 8601 timestamp such as 2026-01-31T09:00:00Z, "
                              f"not {_show(value)}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        utc = moment.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise InvalidFeedback(f"{field} is out of range: {_show(value)}") from None
    if utc < EARLIEST or utc > datetime.now(timezone.utc) + FUTURE_SLACK:
        raise InvalidFeedback(f"{field} must lie between 1970 and today, not {_show(value)}")
    return utc.isoformat()


def _timestamp(field: str, value, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise InvalidFeedback(f"{field} is missing")
        return None
    return parse_timestamp(value, field)


def _integer(field: str, value, low: int, high: int, *, required: bool = False) -> int | None:
    if value is None:
        if required:
            raise InvalidFeedback(f"{field} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidFeedback(f"{field} must be an integer, not {_show(value)}")
    if not low <= int(value) <= high:
        raise InvalidFeedback(f"{field} must be between {low} and {high}, not {int(value)}")
    return int(value)


def _flag(field: str, value) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidFeedback(f"{field} must be true or false, not {_show(value)}")


def _number(field: str, value, *, low: float | None = None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise InvalidFeedback(f"{field} must be a finite number, not {_show(value)}")
    if low is not None and float(value) < low:
        raise InvalidFeedback(f"{field} must be at least {low}, not {float(value)}")
    return float(value)


def _choice(field: str, value, choices: tuple[str, ...], *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if value not in choices:
        raise InvalidFeedback(f"{field} must be one of {', '.join(choices)}; not {_show(value)}")
    return value


def _json(field: str, value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        if not isinstance(value, (dict, list)):
            raise InvalidFeedback(f"{field} must be an object, not {_show(value)}")
        value = json.dumps(value, default=str)
    else:
        try:
            json.loads(value)
        except ValueError:
            raise InvalidFeedback(f"{field} must be JSON, not {_show(value)}") from None
    return _text(field, value, MAX_JSON)


def _row(what: str, row, columns: tuple[str, ...]) -> dict:
    if not isinstance(row, dict):
        raise InvalidFeedback(f"a {what} must be an object, not {_show(row)}")
    unknown = set(row) - set(columns)
    if unknown:
        raise InvalidFeedback(f"unknown {what} fields: {sorted(unknown)}")
    return row


def _question(row) -> dict:
    row = _row("question", row, QUESTION_COLUMNS)
    out = {
        "id": _text("question id", row.get("id"), MAX_ID, required=True),
        "asked_at": _timestamp("asked_at", row.get("asked_at")),
        "source": _text("source", row.get("source"), MAX_SHORT),
        "text": _text("question text", row.get("text"), MAX_QUESTION, prose=True),
        "answer": _text("answer", row.get("answer"), MAX_ANSWER, prose=True),
        "answer_mode": _text("answer_mode", row.get("answer_mode"), MAX_SHORT),
        "answered_at": _timestamp("answered_at", row.get("answered_at")),
        "latency_ms": _number("latency_ms", row.get("latency_ms"), low=0.0),
        "error": _text("error", row.get("error"), MAX_NOTE, cut=True),
        "covered": _flag("covered", row.get("covered")),
        "coverage": _number("coverage", row.get("coverage"), low=0.0),
    }
    if out["coverage"] is not None and out["coverage"] > 1.0:
        raise InvalidFeedback(f"coverage is a probability (0 to 1), not {out['coverage']}")
    for key in ("user_id", "team_id", "channel_id", "thread_ts", "message_ts", "dedupe_key", "adapter_version"):
        out[key] = _text(key, row.get(key), MAX_ID)
    if out["text"] is not None and not out["text"].strip():
        raise InvalidFeedback("question text is empty")
    return {k: out[k] for k in QUESTION_COLUMNS if k in row}


def _retrieved(n: int, r) -> dict:
    if not isinstance(r, dict):
        raise InvalidFeedback(f"retrieved row {n} must be an object, not {_show(r)}")
    cited = r.get("cited", False)
    if not isinstance(cited, bool) and cited not in (0, 1):
        raise InvalidFeedback(f"retrieved row {n}: cited must be true or false, not {_show(cited)}")
    return {"rank": _integer(f"retrieved row {n}: rank", r.get("rank"), 1, MAX_RANK, required=True),
            "chunk_id": _text(f"retrieved row {n}: chunk_id", r.get("chunk_id"), MAX_ID, required=True),
            "url": _text(f"retrieved row {n}: url", r.get("url"), MAX_URL),
            "score": _number(f"retrieved row {n}: score", r.get("score")),
            "cited": bool(cited)}


def _event(row) -> dict:
    row = _row("event", row, EVENT_COLUMNS)
    kind = _choice("event kind", row.get("kind"), EVENT_KINDS)
    strength = MAX_STRENGTH if kind == "label" else 1
    return {"id": _text("event id", row.get("id"), MAX_ID, required=True),
            "question_id": _text("question_id", row.get("question_id"), MAX_ID, required=True),
            "occurred_at": _timestamp("occurred_at", row.get("occurred_at"), required=True),
            "user_id": _text("user_id", row.get("user_id"), MAX_ID),
            "kind": kind,
            "value": _integer("value", row.get("value", 0), -strength, strength, required=True),
            "chunk_id": _text("chunk_id", row.get("chunk_id"), MAX_ID),
            "rank": _integer("rank", row.get("rank"), 1, MAX_RANK),
            "detail": _text("detail", row.get("detail"), MAX_NOTE, cut=True),
            "target": _text("target", row.get("target"), MAX_URL)}


def _label(n: int, r) -> dict:
    """One label of a ``labels`` operation: a page URL or url#anchor (``target``) or a chunk id, a
    non-zero strength, who gave it and when."""
    if not isinstance(r, dict):
        raise InvalidFeedback(f"label {n} must be an object, not {_show(r)}")
    unknown = set(r) - {"target", "chunk_id", "value", "user_id", "at"}
    if unknown:
        raise InvalidFeedback(f"label {n}: unknown fields {sorted(unknown)}")
    out = {"target": _text(f"label {n}: target", r.get("target"), MAX_URL),
           "chunk_id": _text(f"label {n}: chunk_id", r.get("chunk_id"), MAX_ID),
           "value": _integer(f"label {n}: value", r.get("value"), -MAX_STRENGTH, MAX_STRENGTH, required=True),
           "user_id": _text(f"label {n}: user_id", r.get("user_id"), MAX_ID),
           "at": _timestamp(f"label {n}: at", r.get("at")) or now()}
    if not (out["target"] or out["chunk_id"]) or not out["value"]:
        raise InvalidFeedback(f"label {n} needs a target or a chunk id, and a value other than 0")
    return out


def _run(row) -> dict:
    row = _row("run", row, RUN_COLUMNS)
    out = {"id": _text("run id", row.get("id"), MAX_ID, required=True),
           "started_at": _timestamp("started_at", row.get("started_at")),
           "finished_at": _timestamp("finished_at", row.get("finished_at")),
           "trigger": _text("trigger", row.get("trigger"), MAX_SHORT),
           "status": _choice("status", row.get("status"), RUN_STATUSES, required=False),
           "pid": _integer("pid", row.get("pid"), 0, 2**31 - 1),
           "version": _text("version", row.get("version"), MAX_ID),
           "champion": _text("champion", row.get("champion"), MAX_ID),
           "decision": _text("decision", row.get("decision"), MAX_NOTE, cut=True),
           "counts": _json("counts", row.get("counts")),
           "metrics": _json("metrics", row.get("metrics")),
           "error": _text("error", row.get("error"), MAX_NOTE, cut=True),
           "seconds": _number("seconds", row.get("seconds"), low=0.0)}
    return {k: out[k] for k in RUN_COLUMNS if k in row}


def validate(op) -> dict:
    """The operation with every value checked and normalised; InvalidFeedback when one is refused."""
    if not isinstance(op, dict):
        raise InvalidFeedback(f"an operation must be an object, not {_show(op)}")
    kind = op.get("op")
    if kind == "question":
        return {"op": "question", "row": _question(op.get("row"))}
    if kind == "retrievals":
        rows = op.get("rows")
        if not isinstance(rows, list) or len(rows) > MAX_ROWS:
            raise InvalidFeedback(f"retrieved rows must be a list of at most {MAX_ROWS}, not {_show(rows)}")
        return {"op": "retrievals", "question_id": _text("question_id", op.get("question_id"), MAX_ID, required=True),
                "variant": _choice("variant", op.get("variant"), VARIANTS),
                "rows": [_retrieved(n, r) for n, r in enumerate(rows, start=1)]}
    if kind == "event":
        return {"op": "event", "row": _event(op.get("row"))}
    if kind == "run":
        return {"op": "run", "row": _run(op.get("row"))}
    if kind == "forget":
        return {"op": "forget", "user_id": _text("user id", op.get("user_id"), MAX_ID, required=True)}
    if kind == "labels":
        rows = op.get("rows")
        if not isinstance(rows, list) or len(rows) > MAX_ROWS:
            raise InvalidFeedback(f"labels must be a list of at most {MAX_ROWS}, not {_show(rows)}")
        return {"op": "labels", "question_id": _text("question_id", op.get("question_id"), MAX_ID, required=True),
                "detail": _text("detail", op.get("detail"), MAX_SHORT, required=True),
                "rows": [_label(n, r) for n, r in enumerate(rows, start=1)]}
    raise InvalidFeedback(f"unknown operation {_show(kind)}")


def complete(op: dict, required: tuple[str, ...]) -> bool:
    """Does this question or run name every field a new row needs?"""
    return all(op["row"].get(k) is not None for k in required)


# -- builders: what callers use --------------------------------------------------------------

def question_op(**row) -> dict:
    return validate({"op": "question", "row": row})


def retrievals_op(question_id: str, variant: str, rows: list[dict]) -> dict:
    return validate({"op": "retrievals", "question_id": question_id, "variant": variant, "rows": rows})


def event_op(*, question_id: str, kind: str, user_id: str | None, value: int = 0, chunk_id: str | None = None,
             rank: int | None = None, detail: str | None = None, id: str | None = None, at: str | None = None,
             target: str | None = None) -> dict:
    if isinstance(value, bool):  # what callers always could pass (JSON true from a client is +1)
        value = int(value)
    return validate({"op": "event", "row": {"id": id or uuid.uuid4().hex, "question_id": question_id,
                                            "occurred_at": at or now(), "user_id": user_id, "kind": kind,
                                            "value": value, "chunk_id": chunk_id, "rank": rank, "detail": detail,
                                            "target": target}})


def labels_op(question_id: str, detail: str, rows: list[dict]) -> dict:
    """Replace the labels of ``question_id`` that came from ``detail`` (e.g. "history") with ``rows``:
    {"target": page URL or url#anchor, or "chunk_id"; "value": strength, negative for not relevant;
    "user_id": who gave it; "at": when}."""
    return validate({"op": "labels", "question_id": question_id, "detail": detail, "rows": rows})


def run_op(**row) -> dict:
    return validate({"op": "run", "row": row})


def forget_op(user_id: str) -> dict:
    return validate({"op": "forget", "user_id": user_id})
