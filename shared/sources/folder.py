"""Local documentation: a folder.

A page's URL is its path relative to the folder, percent-encoded, or ``base_url`` + that path.
Hidden files and folders are skipped; symbolic links are not followed out of the folder. A
sub-folder that cannot be listed is reported, and the source is then not ``complete``: the
pages stored from it are kept, not deleted as gone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from ..errors import SourceError
from ..parsers import kind_for_path
from .archive import ARCHIVE_SUFFIXES
from .base import Failure, RawPage, SourceResult, one_line
from .names import is_hidden, page_url

__all__ = ["FolderSource"]


class FolderSource:
    def __init__(self, path: Path | str, base_url: str | None = None, max_bytes: int = 5_000_000):
        self.path = Path(path).expanduser()
        self.base_url = base_url
        self.max_bytes = max_bytes
        self.complete = True  # until a sub-folder cannot be listed
        if not self.path.is_dir():
            raise SourceError(f"{self.path} is neither a folder nor an archive ({', '.join(ARCHIVE_SUFFIXES)})"
                              if self.path.exists() else f"{self.path} does not exist")
        self.skipped_unsupported = 0

    def __iter__(self) -> Iterator[SourceResult]:
        root = self.path.resolve()
        unlisted: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=unlisted.append):
            while unlisted:
                yield self._unlisted(root, unlisted.pop())
            dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
            for name in sorted(filenames):
                if is_hidden(name):
                    continue
                full = Path(dirpath) / name
                relative = full.relative_to(root).as_posix()
                if full.is_symlink():
                    try:
                        full.resolve().relative_to(root)
                    except (ValueError, OSError):
                        yield Failure(page_url(relative, self.base_url), "symbolic link out of the folder: skipped")
                        continue
                if not full.is_file():
                    continue
                result = self._page(relative, full)
                if result is not None:
                    yield result
        while unlisted:
            yield self._unlisted(root, unlisted.pop())

    def _unlisted(self, root: Path, exc: OSError) -> Failure:
        self.complete = False
        where = Path(exc.filename or root)
        try:
            relative = where.relative_to(root).as_posix()
        except ValueError:
            relative = where.name
        return Failure(page_url(relative or ".", self.base_url) + "/",
                       f"cannot list this folder ({one_line(exc.strerror or exc)}): its pages were not read, "
                       f"and the stored ones are kept", keep=True)

    def _page(self, relative: str, full: Path) -> SourceResult | None:
        kind = kind_for_path(relative)
        if kind is None:
            self.skipped_unsupported += 1
            return None
        url = page_url(relative, self.base_url)
        too_large = "too large: {:,} bytes (limit {:,}; DEEPMEM_MAX_PAGE_BYTES)"
        try:
            size = full.stat().st_size
            if size > self.max_bytes:
                return Failure(url, too_large.format(size, self.max_bytes))
            with full.open("rb") as fh:
                data = fh.read(self.max_bytes + 1)
        except OSError as exc:
            return Failure(url, f"cannot read: {one_line(exc.strerror or exc)}", keep=True)
        if len(data) > self.max_bytes:
            return Failure(url, too_large.format(len(data), self.max_bytes))
        return RawPage(url=url, content=data, content_type=kind, path=relative)
