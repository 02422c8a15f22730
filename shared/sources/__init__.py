"""Where documentation comes from: a crawled site, or a local folder or archive."""

from __future__ import annotations

from pathlib import Path

from ..errors import SourceError
from ..settings import Settings
from .base import Failure, RawPage, SourceResult
from .crawl import Crawler
from .folder import FolderSource, is_archive

__all__ = ["open_source", "source_uri", "Failure", "RawPage", "SourceResult", "Crawler", "FolderSource",
           "demo_archive", "DEMO_BASE_URL"]

DEMO_BASE_URL = "https://sqlite.org/"


def demo_archive() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "sqlite-docs.tar.xz"


def source_uri(target: str) -> tuple[str, str]:
    """(uri, kind) for what the user typed: a URL to crawl, or a folder / archive path."""
    if target.startswith(("http://", "https://")):
        return target, "site"
    if "://" in target:
        raise SourceError(f"unsupported URL scheme in {target!r}: only http:// and https:// sites can be crawled")
    path = Path(target).expanduser()
    if not path.exists():
        raise SourceError(f"{target} does not exist (expected a folder, an archive, or an http(s):// URL)")
    path = path.resolve()
    return str(path), "archive" if is_archive(path) else "folder"


def open_source(uri: str, kind: str, settings: Settings, base_url: str | None = None):
    if kind == "site":
        return Crawler(uri, concurrency=settings.crawl_concurrency, timeout=settings.crawl_timeout,
                       max_pages=settings.crawl_max_pages, max_bytes=settings.max_page_bytes,
                       robots=settings.crawl_robots)
    return FolderSource(uri, base_url=base_url, max_bytes=settings.max_page_bytes)
