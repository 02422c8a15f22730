"""Pages from an archive: .tar, .tar.gz, .tar.xz, .tar.bz2 or .zip.

Opening an archive lists it and refuses, before anything is read, one that has more members
than ``max_members`` or expands to more than ``max_total_bytes`` (or more than MAX_RATIO
times its own size, beyond RATIO_FLOOR bytes: a zip bomb), so nothing partial is ingested
from it. A tar's listing stops as soon as a limit is passed, so a compressed bomb is never
expanded to find its end.

Then members are read one by one. A member that cannot be read (corrupt, truncated, lying
about its size, encrypted) is reported and skipped; the rest is read. A tar whose listing
breaks off (truncated, or a header that is garbage) yields what was listed and reports the
rest as unread, and the source is not ``complete``, so no stored page is deleted because it
was not seen. Member names are checked (names.safe_relative): ``..``, absolute and drive
paths are refused and reported, hidden paths skipped. tarfile keeps a long-name or PAX header
whole in memory while listing, so headers over MAX_HEADER_BYTES are refused, and sparse
members (never documentation; their maps are unbounded) with them.
"""

from __future__ import annotations

import lzma
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterator

from ..errors import SourceError
from ..parsers import kind_for_path
from .base import Failure, RawPage, SourceResult, one_line
from .names import UnsafeName, is_hidden, page_url, safe_relative, shown

__all__ = ["ArchiveSource", "ARCHIVE_SUFFIXES", "is_archive", "MAX_RATIO", "RATIO_FLOOR"]

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".zip")
MAX_RATIO = 100  # documentation compresses 4-20 times (the bundled SQLite docs: 15), a page repeated 120-200
RATIO_FLOOR = 10_000_000  # ... and small archives are never refused for their ratio
MAX_HEADER_BYTES = 1_000_000  # a tar long-name or PAX header (real ones are a few hundred bytes)
TAIL_BYTES = 1_000_000  # read past a tar's end marker, so a gzip, bzip2 or xz stream's checksum is checked
# what reading a damaged archive raises: zlib, lzma and bz2 (OSError) errors, a short stream
# (EOFError), a bad zip (BadZipFile), an encrypted or unknown method (RuntimeError, NotImplementedError)
ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError,
                  RuntimeError, NotImplementedError, ValueError, OverflowError)


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def describe(exc: BaseException) -> str:
    """What went wrong reading an archive, on one line."""
    detail = one_line(str(exc), 200) or exc.__class__.__name__
    if isinstance(exc, EOFError) or "end of data" in detail or "Truncated" in detail:
        return f"truncated ({detail})"
    if isinstance(exc, (RuntimeError, NotImplementedError)):
        return f"unsupported ({detail})"
    return f"corrupt ({detail})"


class ArchiveSource:
    def __init__(self, path: Path | str, base_url: str | None = None, *, max_bytes: int = 5_000_000,
                 max_total_bytes: int = 500_000_000, max_members: int = 50_000):
        self.path = Path(path).expanduser()
        self.base_url = base_url
        self.max_bytes = max_bytes
        self.max_total_bytes = max_total_bytes
        self.max_members = max_members
        self.skipped_unsupported = 0
        self.listing_error: str | None = None  # where and why a tar's listing broke off
        if not is_archive(self.path):
            raise SourceError(f"{self.path} is not an archive ({', '.join(ARCHIVE_SUFFIXES)})")
        self._zip = self.path.name.lower().endswith(".zip")
        self._archive, self._entries = self._list_zip() if self._zip else self._list_tar()

    @property
    def complete(self) -> bool:
        """Every member was listed: pages not seen may be deleted."""
        return self.listing_error is None

    def __iter__(self) -> Iterator[SourceResult]:
        try:
            for name, size, read in self._entries:
                result = self._member(name, size, read)
                if result is not None:
                    yield result
            if self.listing_error is not None:
                yield Failure(shown(self.path.name), self.listing_error, keep=True)
        finally:
            self.close()

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()
            self._archive = None

    # -- listing ---------------------------------------------------------------------------
    def _refuse(self, why: str) -> SourceError:
        self.close()
        return SourceError(f"the archive {self.path.name} {why}: refused, nothing was ingested from it")

    def _check_limits(self, members: int, expanded: int) -> None:
        if members > self.max_members:
            raise self._refuse(f"has more than {self.max_members:,} members (DEEPMEM_ARCHIVE_MAX_MEMBERS)")
        if expanded > self.max_total_bytes:
            raise self._refuse(f"expands to more than {self.max_total_bytes:,} bytes (DEEPMEM_ARCHIVE_MAX_BYTES)")

    def _check_ratio(self, expanded: int) -> None:
        size = max(1, self.path.stat().st_size)
        if expanded > RATIO_FLOOR and expanded > MAX_RATIO * size:
            raise self._refuse(f"expands {expanded / size:,.0f} times its size to {expanded:,} bytes (documentation "
                               f"compresses less than {MAX_RATIO} times: a zip bomb?); if it is genuine, extract "
                               f"it and ingest the folder")

    def _list_zip(self):
        try:
            archive = zipfile.ZipFile(self.path)
        except ARCHIVE_ERRORS as exc:
            raise SourceError(f"cannot open the archive {self.path.name}: {describe(exc)}") from None
        self._archive = archive
        infos = archive.infolist()
        files = [i for i in infos if not i.is_dir()]
        self._check_limits(len(infos), sum(i.file_size for i in files))
        self._check_ratio(sum(i.file_size for i in files))

        def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
            def read() -> bytes:
                with archive.open(info) as fh:
                    return fh.read(self.max_bytes + 1)
            return read

        entries = [(i.filename, i.file_size, reader(i)) for i in sorted(files, key=lambda i: i.filename)]
        return archive, entries

    def _list_tar(self):
        try:
            tar = tarfile.open(self.path, tarinfo=_CheckedTarInfo)
        except ARCHIVE_ERRORS as exc:
            raise SourceError(f"cannot open the archive {self.path.name}: {describe(exc)}") from None
        self._archive = tar
        members: list[tarfile.TarInfo] = []
        count = expanded = 0
        try:
            while (member := tar.next()) is not None:
                count += 1
                if member.isfile():
                    expanded += member.size
                self._check_limits(count, expanded)
                members.append(member)
            self.listing_error = _tar_end_error(tar, members)
        except ARCHIVE_ERRORS as exc:
            if _damaged_stream(exc):  # garbage decompressed before the error may look like text: trust none
                raise self._refuse(f"is {describe(exc)}: its contents cannot be trusted") from None
            after = f" after {shown(members[-1].name)}" if members else ""
            self.listing_error = (f"the archive is {describe(exc)}{after}: members past that point were not "
                                  f"read, and pages not seen are kept")
        self._check_ratio(expanded)

        def reader(member: tarfile.TarInfo) -> Callable[[], bytes]:
            def read() -> bytes:
                fh = tar.extractfile(member)
                return fh.read(self.max_bytes + 1) if fh is not None else b""
            return read

        return tar, [(m.name, m.size, reader(m)) for m in members if m.isfile()]

    # -- members ---------------------------------------------------------------------------
    def _member(self, name: str, size: int, read: Callable[[], bytes]) -> SourceResult | None:
        try:
            relative = safe_relative(name)
        except UnsafeName as exc:
            return Failure(shown(name), f"unsafe member name, not ingested: {exc}")
        if is_hidden(relative):
            return None
        kind = kind_for_path(relative)
        if kind is None:
            self.skipped_unsupported += 1
            return None
        url = page_url(relative, self.base_url)
        too_large = f"too large: {size:,} bytes (limit {self.max_bytes:,}; DEEPMEM_MAX_PAGE_BYTES)"
        if size > self.max_bytes:
            return Failure(url, too_large)
        try:
            data = read()
        except ARCHIVE_ERRORS as exc:
            return Failure(url, f"cannot read this member: {describe(exc)}", keep=True)
        if len(data) > self.max_bytes:
            return Failure(url, too_large)
        return RawPage(url=url, content=data, content_type=kind, path=relative)


def _damaged_stream(exc: BaseException) -> bool:
    """A decompression error that is not the stream merely ending early (a truncated file)."""
    if isinstance(exc, EOFError) or describe(exc).startswith("truncated"):
        return False
    if isinstance(exc, tarfile.ReadError):
        return str(exc).startswith("zlib error")
    return isinstance(exc, (zlib.error, lzma.LZMAError, OSError))


class _CheckedTarInfo(tarfile.TarInfo):
    """Looks at each header before tarfile reads what it announces into memory."""

    EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                tarfile.SOLARIS_XHDTYPE)

    @classmethod
    def fromtarfile(cls, tar):
        start = tar.fileobj.tell()
        try:
            head = cls.frombuf(tar.fileobj.read(tarfile.BLOCKSIZE), tar.encoding, tar.errors)
        except tarfile.HeaderError:
            head = None  # tarfile's own reading below raises what it should
        if head is not None:
            if head.type == tarfile.GNUTYPE_SPARSE:
                raise tarfile.SubsequentHeaderError(f"sparse member {shown(head.name)}")
            if head.type in cls.EXTENDED:
                if head.size > MAX_HEADER_BYTES:
                    raise tarfile.SubsequentHeaderError(f"a {head.size:,}-byte extended header "
                                                        f"(limit {MAX_HEADER_BYTES:,})")
                pax = head.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
                if pax and b"GNU.sparse" in tar.fileobj.read(head.size):
                    raise tarfile.SubsequentHeaderError("sparse member")
        tar.fileobj.seek(start)
        return super().fromtarfile(tar)


def _tar_end_error(tar: tarfile.TarFile, members: list[tarfile.TarInfo]) -> str | None:
    """tarfile ends a listing quietly at a garbage or missing header: only a zero block is the
    real end of an archive. Anything else means members past that point were not read."""
    tar.fileobj.seek(tar.offset)
    block = tar.fileobj.read(tarfile.BLOCKSIZE)
    if block == tarfile.NUL * tarfile.BLOCKSIZE:
        tar.fileobj.read(TAIL_BYTES)  # the padding up to the end: a compressed stream checks its checksum there
        return None
    after = f" after {shown(members[-1].name)}" if members else ""
    what = "truncated" if len(block) < tarfile.BLOCKSIZE else "corrupt (a member header is not valid)"
    return f"the archive is {what}{after}: members past that point were not read, and pages not seen are kept"
