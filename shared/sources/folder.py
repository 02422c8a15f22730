"""Local documentation: a folder, or an archive of one (.tar, .tar.gz, .tar.xz, .zip).

A page's URL is its path relative to the folder (POSIX), or ``base_url`` + that path.
Hidden files and folders are skipped; symbolic links are not followed out of the folder.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator

from ..errors import SourceError
from ..parsers import kind_for_path
from .base import Failure, RawPage, SourceResult

__all__ = ["FolderSource", "is_archive", "page_url"]

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".zip")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def page_url(relative: str, base_url: str | None) -> str:
    relative = relative.lstrip("/")
    if not base_url:
        return relative
    return base_url.rstrip("/") + "/" + relative


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in PurePosixPath(relative).parts)


class FolderSource:
    def __init__(self, path: Path | str, base_url: str | None = None, max_bytes: int = 5_000_000):
        self.path = Path(path).expanduser()
        self.base_url = base_url
        self.max_bytes = max_bytes
        self.complete = True  # a folder listing is always complete
        if not self.path.exists():
            raise SourceError(f"{self.path} does not exist")
        if not (self.path.is_dir() or is_archive(self.path)):
            raise SourceError(f"{self.path} is neither a folder nor an archive ({', '.join(ARCHIVE_SUFFIXES)})")
        self.skipped_unsupported = 0

    def __iter__(self) -> Iterator[SourceResult]:
        if self.path.is_dir():
            yield from self._walk_folder()
        elif self.path.name.lower().endswith(".zip"):
            yield from self._walk_zip()
        else:
            yield from self._walk_tar()

    def _page(self, relative: str, read) -> SourceResult | None:
        kind = kind_for_path(relative)
        if kind is None:
            self.skipped_unsupported += 1
            return None
        url = page_url(relative, self.base_url)
        try:
            size, data = read()
        except OSError as exc:
            return Failure(url, f"cannot read: {exc.strerror or exc}", keep=True)
        if size > self.max_bytes:
            return Failure(url, f"too large: {size:,} bytes (limit {self.max_bytes:,}; DEEPMEM_MAX_PAGE_BYTES)")
        return RawPage(url=url, content=data, content_type=kind, path=relative)

    def _walk_folder(self) -> Iterator[SourceResult]:
        root = self.path.resolve()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
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

                def read(full=full):
                    size = full.stat().st_size
                    if size > self.max_bytes:
                        return size, b""
                    return size, full.read_bytes()

                result = self._page(relative, read)
                if result is not None:
                    yield result

    def _walk_tar(self) -> Iterator[SourceResult]:
        try:
            tar = tarfile.open(self.path)
        except (tarfile.TarError, OSError) as exc:
            raise SourceError(f"cannot open the archive {self.path}: {exc}") from None
        with tar:
            members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
            for member in members:
                relative = PurePosixPath(member.name.lstrip("./")).as_posix()
                if _hidden(relative) or ".." in PurePosixPath(relative).parts:
                    continue

                def read(member=member):
                    if member.size > self.max_bytes:
                        return member.size, b""
                    fh = tar.extractfile(member)
                    return member.size, fh.read() if fh else b""

                result = self._page(relative, read)
                if result is not None:
                    yield result

    def _walk_zip(self) -> Iterator[SourceResult]:
        try:
            archive = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise SourceError(f"cannot open the archive {self.path}: {exc}") from None
        with archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                if info.is_dir():
                    continue
                relative = PurePosixPath(info.filename).as_posix()
                if _hidden(relative) or ".." in PurePosixPath(relative).parts:
                    continue

                def read(info=info):
                    if info.file_size > self.max_bytes:
                        return info.file_size, b""
                    return info.file_size, archive.read(info)

                result = self._page(relative, read)
                if result is not None:
                    yield result
