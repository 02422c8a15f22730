"""Where documentation comes from: a crawled site, or a local folder or archive."""

from __future__ import annotations

from pathlib import Path

from ..errors import SourceError
from ..settings import Settings
from .archive import ArchiveSource, is_archive
from .base import Failure, RawPage, SourceResult, one_line
from .crawl import Crawler
from .folder import FolderSource
from .names import CONTROL, check_base_url

__all__ = ["open_source", "source_uri", "source_key", "check_base_url", "Failure", "RawPage", "SourceResult",
           "Crawler", "FolderSource", "ArchiveSource", "one_line", "demo_archive", "DEMO_BASE_URL"]

DEMO_BASE_URL = "https://sqlite.org/"


def demo_archive() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "sqlite-docs.tar.xz"


def source_uri(target: str) -> tuple[str, str]:
    """(uri, kind) for what the user typed: a URL to crawl, or a folder / archive path."""
    if target.startswith(("http://", "https://")):
        if CONTROL.search(target):
            raise SourceError("the URL contains spaces or control characters: percent-encode them (%20)")
        return target, "site"
    if "://" in target:
        raise SourceError(f"unsupported URL scheme in {one_line(target)!r}: only http:// and https:// sites can "
                          f"be crawled")
    path = Path(target).expanduser()
    if not path.exists():
        raise SourceError(f"{one_line(target)} does not exist (expected a folder, an archive, or an http(s):// URL)")
    path = path.resolve()
    return str(path), "archive" if is_archive(path) else "folder"


def source_key(target: str) -> str:
    """The stored URI a user means by ``target``, also when the folder no longer exists."""
    if "://" in target:
        return target
    return str(Path(target).expanduser().resolve())


def open_source(uri: str, kind: str, settings: Settings, base_url: str | None = None):
    """The source to iterate. Opening an archive lists it: an unreadable archive, or one over
    the archive limits, raises SourceError here, before anything is ingested."""
    if kind == "site":
        return Crawler(uri, concurrency=settings.crawl_concurrency, timeout=settings.crawl_timeout,
                       max_pages=settings.crawl_max_pages, max_bytes=settings.max_page_bytes,
                       robots=settings.crawl_robots)
    if base_url:
        check_base_url(base_url)
    if kind == "archive":
        return ArchiveSource(uri, base_url, max_bytes=settings.max_page_bytes,
                             max_total_bytes=settings.archive_max_bytes, max_members=settings.archive_max_members)
    return FolderSource(uri, base_url=base_url, max_bytes=settings.max_page_bytes)
