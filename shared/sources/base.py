"""What a source yields: pages to ingest, and failures to report."""

from __future__ import annotations

from dataclasses import dataclass

from ..documents import RawPage

__all__ = ["Failure", "RawPage", "SourceResult"]


@dataclass(frozen=True)
class Failure:
    """A page that could not be read. ``keep``: the page may still exist (a timeout, a 503),
    so its stored copy must not be deleted; False when it is known to be gone (404)."""

    url: str
    reason: str
    keep: bool = False


SourceResult = RawPage | Failure
