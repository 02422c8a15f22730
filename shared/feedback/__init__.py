"""The feedback log: questions, answers, retrievals, feedback events and retraining runs.

``open_feedback(home, settings)`` is how every caller gets it: the DuckDB store in the data
directory (single machine), or the Postgres one when DEEPMEM_DATABASE_URL is set. Both have the
same public methods, and both derive labels with the one view in ``schema.py``.
"""

from __future__ import annotations

from ..database import database_url
from ..home import Home
from .store import FeedbackStore
from .store import has_feedback as _has_local_feedback

__all__ = ["open_feedback", "has_feedback", "FeedbackStore"]


def open_feedback(home: Home, settings=None):
    """The feedback store of this deployment: Postgres when ``settings.database_url`` is set, else DuckDB."""
    url = database_url(settings)
    if url:
        from .postgres import PostgresFeedback

        return PostgresFeedback(url)
    return FeedbackStore(home)


def has_feedback(home: Home, settings=None) -> bool:
    """Is there feedback to read? (Readers say "nothing yet" instead of creating a local database.)"""
    return bool(database_url(settings)) or _has_local_feedback(home)
