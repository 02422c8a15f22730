"""From a file name in a folder or an archive to a page URL, safely.

Archive member names are untrusted: ``../../etc/x.html``, ``/etc/x.html`` and
``C:\\docs\\x.html`` would step out of the archive's tree, so they are refused (a leading
``./`` is fine; ``lstrip("./")`` used to turn ``../../etc`` into ``etc``). Hidden paths
(``.git/``, ``.env``, ``__MACOSX/._x``) are not documentation and are skipped, in folders too.
Page URLs are percent-encoded: a space, a newline, ``#`` or ``?`` in a file name never reaches
a stored URL or a link sent to Slack as itself.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import quote, urlsplit

from ..errors import SourceError

__all__ = ["UnsafeName", "safe_relative", "is_hidden", "page_url", "shown", "check_base_url"]

MAX_NAME_CHARS = 1000
PATH_SAFE = "/!$()*+,;=@-._~"  # RFC 3986 path characters kept as they are (":" is not: "a:b" looks like a scheme)
DRIVE = re.compile(r"^[A-Za-z]:")
CONTROL = re.compile(r"[\x00-\x20\x7f]")


class UnsafeName(ValueError):
    """A member name that would place a page outside the archive's tree; the message says why."""


def safe_relative(name: str) -> str:
    """The member's path inside the archive, POSIX, without ``.`` parts; UnsafeName if it is
    absolute, has a drive letter, climbs with ``..``, or is absurdly long."""
    if len(name) > MAX_NAME_CHARS:
        raise UnsafeName(f"name longer than {MAX_NAME_CHARS} characters")
    unified = name.replace("\\", "/")  # Windows tools write backslashes into zip names
    if DRIVE.match(unified):
        raise UnsafeName("absolute path with a drive letter")
    if unified.startswith("/"):
        raise UnsafeName("absolute path")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeName("path climbs out of the archive (..)")
    if "\x00" in unified:
        raise UnsafeName("NUL byte in the name")
    if not parts:
        raise UnsafeName("empty name")
    return "/".join(parts)


def is_hidden(relative: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(relative).parts)


def page_url(relative: str, base_url: str | None) -> str:
    """``base_url`` + the percent-encoded relative path (or the encoded path alone)."""
    encoded = quote(relative.lstrip("/"), safe=PATH_SAFE)
    if not base_url:
        return encoded
    return base_url.rstrip("/") + "/" + encoded


def shown(name: str) -> str:
    """A raw name as it can be reported on one line (percent-encoded, cut short)."""
    return quote(name[:300], safe=PATH_SAFE + ":\\")


def check_base_url(base_url: str) -> str:
    """The URL a folder is published at: http(s), a host, no spaces or control characters."""
    if CONTROL.search(base_url):
        raise SourceError("--base-url must be a URL without spaces or control characters "
                          "(percent-encode them: %20)")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SourceError(f"--base-url must be an http:// or https:// URL, not {shown(base_url)!r}")
    if parts.query or parts.fragment:
        raise SourceError("--base-url must not have a query (?) or a fragment (#): pages are appended to it")
    return base_url
