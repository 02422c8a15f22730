"""`deepmem feedback import`: labels from a file, as if users had given them.

An entry is a chunk id, a page URL or url#anchor. A page or a section is kept as written (one
target, resolved to chunks when it is used), not expanded into a label per chunk: a page of 200
chunks is one place that answers, not 200.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..home import Home
from ..queries import QueryFileError, Resolver, jsonl_lines
from ..store import Store
from .ops import MAX_ID, MAX_QUESTION, InvalidFeedback, parse_timestamp
from .store import FeedbackStore, now

__all__ = ["import_labels", "MAX_IMPORT_BYTES"]

MAX_IMPORT_BYTES = 100 * 1024 * 1024


def _read(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_IMPORT_BYTES:
            raise QueryFileError(f"{path.name}: {size:,} bytes; at most {MAX_IMPORT_BYTES:,} are imported at once")
        data = path.read_bytes()
    except OSError as exc:
        raise QueryFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise QueryFileError(f"{path.name}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                             f"save the file as UTF-8 and import it again") from None


def import_labels(store: Store, home: Home, path: Path, settings=None) -> dict:
    """Check the whole file first (an error names file:line and nothing is imported), then spool it."""
    resolver = Resolver(store)
    ops, questions, labels, unresolved = [], 0, 0, []
    for number, where, obj in jsonl_lines(_read(path), path.name):
        query = obj.get("query") if isinstance(obj, dict) else None
        if not isinstance(query, str) or not query.strip():
            raise QueryFileError(f"{where}: \"query\" must be a non-empty string")
        if len(query) > MAX_QUESTION:
            raise QueryFileError(f"{where}: \"query\" is {len(query):,} characters long; at most {MAX_QUESTION:,}")
        relevant, negative = obj.get("relevant") or [], obj.get("not_relevant") or []
        if not isinstance(relevant, list) or not isinstance(negative, list) or not (relevant or negative):
            raise QueryFileError(f"{where}: give \"relevant\" and/or \"not_relevant\" as lists")
        user = obj.get("user") or "import"
        if not isinstance(user, str) or len(user) > MAX_ID:
            raise QueryFileError(f"{where}: \"user\" must be a string of at most {MAX_ID} characters")
        try:
            at = parse_timestamp(obj["at"], '"at"') if obj.get("at") is not None else now()
        except InvalidFeedback as exc:
            raise QueryFileError(f"{where}: {exc}") from None
        qid = hashlib.sha256(f"import\x1f{path.name}\x1f{number}\x1f{query}".encode()).hexdigest()[:32]
        try:
            ops.append(FeedbackStore.question_op(id=qid, asked_at=at, source="import", user_id=user,
                                                 text=query.strip()))
        except InvalidFeedback as exc:
            raise QueryFileError(f"{where}: {exc}") from None
        questions += 1
        rows = []
        for entries, value in ((relevant, 1), (negative, -1)):
            for entry in entries:
                if not isinstance(entry, str) or not entry.strip():
                    raise QueryFileError(f"{where}: entries must be non-empty strings, got {entry!r:.60}")
                entry = entry.strip()
                if not resolver.resolve_entry(entry):
                    unresolved.append(entry)
                    continue
                chunk = entry in resolver.by_id
                rows.append({"chunk_id" if chunk else "target": entry, "value": value, "user_id": user, "at": at})
        try:
            ops.append(FeedbackStore.labels_op(qid, "import", rows))
        except InvalidFeedback as exc:
            raise QueryFileError(f"{where}: {exc}") from None
        labels += len(rows)
    from . import open_feedback

    feedback = open_feedback(home, settings)
    feedback.record(ops)
    feedback.drain()
    return {"questions": questions, "labels": labels, "unresolved": unresolved}
