"""The one error a parser raises: the page cannot be turned into text, and why."""

from __future__ import annotations

__all__ = ["ParseError"]


class ParseError(ValueError):
    """The page cannot be turned into text (binary, undecodable, empty, too complex); the message says why."""
