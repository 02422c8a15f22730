"""The dashboard page from a data directory's feedback log: what `deepmem report` writes and /admin serves."""

from __future__ import annotations

from datetime import datetime
from typing import Callable

import numpy as np

from .data import build_dashboard
from .render import render_page

__all__ = ["dashboard_page", "DEFAULT_DAYS"]

DEFAULT_DAYS = 90


def dashboard_page(feedback, *, embed: Callable[[list[str]], np.ndarray] | None = None, store=None,
                   days: int = DEFAULT_DAYS, now: datetime | None = None) -> str:
    """The page for ``feedback`` (a FeedbackStore, or None: no feedback log yet). ``embed`` groups the
    documentation gaps by topic; ``store`` names pages by their titles."""
    titles = None
    if store is not None:
        titles = lambda ids: {k: c.title for k, c in store.chunks_by_id(ids).items()}  # noqa: E731
    return render_page(build_dashboard(feedback, embed=embed, titles=titles, days=days, now=now))
