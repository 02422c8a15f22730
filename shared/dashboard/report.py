"""The dashboard page from a data directory's feedback log: what `deepmem report` writes and /admin serves."""

from __future__ import annotations

from datetime import datetime
from typing import Callable

import numpy as np

from ..channels import open_channel_config
from ..errors import DeepmemError
from .data import build_dashboard
from .render import render_page

__all__ = ["dashboard_page", "DEFAULT_DAYS"]

DEFAULT_DAYS = 90


def dashboard_page(feedback, *, embed: Callable[[list[str]], np.ndarray] | None = None, store=None, home=None,
                   days: int = DEFAULT_DAYS, now: datetime | None = None, settings=None) -> str:
    """The page for ``feedback`` (a FeedbackStore, or None: no feedback log yet). ``embed`` groups the
    documentation gaps by topic; ``store`` names pages by their titles; ``home``: the data directory
    whose channel configuration is shown (in the shared database when ``settings.database_url`` is set; a
    configuration that cannot be read is a note on the page)."""
    titles = None
    if store is not None:
        titles = lambda ids: {k: c.title for k, c in store.chunks_by_id(ids).items()}  # noqa: E731
    channels, notes = None, []
    if home is not None:
        try:
            with open_channel_config(home, settings) as where:
                channels = where.load()
        except DeepmemError as exc:
            notes.append(f"The channel configuration is not shown: {exc}")
    board = build_dashboard(feedback, embed=embed, titles=titles, channels=channels, days=days, now=now)
    board.notes.extend(notes)
    return render_page(board)
