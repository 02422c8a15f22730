"""Archives made from real documentation pages, whole or damaged the ways archives get damaged.

Every damage is done to the bytes of a real archive written by the standard library: a member's
compressed data overwritten, a size field that lies, a file cut short, a header that is garbage.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
from pathlib import Path


def pages(docs: Path, names: list[str]) -> dict[str, bytes]:
    return {name: (docs / name).read_bytes() for name in names}


def make_zip(path: Path, files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            zf.writestr(info, data)
    return path


def make_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


def _zip_entry(path: Path, name: str) -> zipfile.ZipInfo:
    with zipfile.ZipFile(path) as zf:
        return zf.getinfo(name)


def corrupt_zip_member(path: Path, name: str) -> None:
    """Overwrite the middle of a member's compressed data (the CRC and sizes stay as they were)."""
    info = _zip_entry(path, name)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    middle = start + info.compress_size // 3
    data[middle: middle + 64] = bytes((b * 7 + 13) % 256 for b in range(64))
    path.write_bytes(bytes(data))


def lie_about_zip_size(path: Path, name: str, size: int, compressed: bool = False) -> None:
    """Make the central directory (which zipfile trusts) and the local header claim ``size``
    uncompressed bytes for ``name`` (and as many compressed bytes, with ``compressed``)."""
    info = _zip_entry(path, name)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, info.header_offset + 22, size)  # local header: uncompressed size
    if compressed:
        struct.pack_into("<I", data, info.header_offset + 18, size)
    central = data.find(b"PK\x01\x02")
    while central >= 0:
        name_len = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46: central + 46 + name_len] == name.encode():
            struct.pack_into("<I", data, central + 24, size)  # central directory: uncompressed size
            if compressed:
                struct.pack_into("<I", data, central + 20, size)
            break
        central = data.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(data))


def tar_member_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """(header offset, data offset) of each member in an uncompressed tar."""
    with tarfile.open(path) as tar:
        return {m.name: (m.offset, m.offset_data) for m in tar.getmembers()}


def lie_about_tar_size(path: Path, name: str, size: int) -> None:
    """Rewrite a member's size field (with a valid header checksum) in an uncompressed tar."""
    header, _ = tar_member_offsets(path)[name]
    data = bytearray(path.read_bytes())
    block = bytearray(data[header: header + 512])
    block[124:136] = f"{size:011o}\0".encode()
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    data[header: header + 512] = block
    path.write_bytes(bytes(data))


def gzip_file(src: Path, dest: Path) -> Path:
    import gzip

    dest.write_bytes(gzip.compress(src.read_bytes(), mtime=0))
    return dest


def cut(path: Path, keep: int) -> Path:
    """Truncate the file to its first ``keep`` bytes, as an interrupted download does."""
    path.write_bytes(path.read_bytes()[:keep])
    return path
