"""What a source yields: pages to ingest, and failures to report."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..documents import RawPage

__all__ = ["Failure", "RawPage", "SourceResult", "one_line"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class Failure:
    """A page that could not be read. ``keep``: the page may still exist (a timeout, a 503),
    so its stored copy must not be deleted; False when it is known to be gone (404)."""

    url: str
    reason: str
    keep: bool = False


SourceResult = RawPage | Failure


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line: control characters and runs of spaces become one space, cut at ``limit``."""
    flat = " ".join(_CONTROL.sub(" ", str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
