"""Collections: named sets of sources ("runbooks", "api-docs") that a search can be limited to.

Every source belongs to exactly one collection; sources ingested without one (and every source
from before collections existed) belong to ``default``. Names are short, lower-case slugs so
they can appear in commands, channel settings and URLs unquoted.
"""

from __future__ import annotations

import re
from typing import Iterable

from .errors import ConfigError

__all__ = ["DEFAULT", "NAME_PATTERN", "UnknownCollection", "check_name", "check_names"]

DEFAULT = "default"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class UnknownCollection(ConfigError):
    """A search named collections the store has no source in."""


def check_name(name: str) -> str:
    """``name`` if it is a valid collection name, else ConfigError naming it."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        shown = repr(name if not isinstance(name, str) else name[:80])
        raise ConfigError(f"{shown} is not a collection name: use 1-64 lower-case letters, digits, '-' or '_', "
                          f"starting with a letter or digit (e.g. runbooks, api-docs)")
    return name


def check_names(names: Iterable[str] | None, known: Iterable[str]) -> frozenset[str] | None:
    """The collections a search is limited to: None for every collection, else the set of names.
    Raises UnknownCollection naming every name the store does not have."""
    if names is None:
        return None
    if isinstance(names, str):  # one name, not its letters
        names = [names]
    wanted = frozenset(check_name(n) for n in names)
    known = frozenset(known)
    unknown = sorted(wanted - known)
    if unknown:
        have = ", ".join(sorted(known)) or "none yet"
        raise UnknownCollection(f"unknown collection{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                                f"(the store has: {have}); `deepmem ingest PATH --collection NAME` adds one")
    return wanted
