"""Files several processes share: written whole or not at all, and locked while one of them works.

``write_atomically``: a temporary file beside the target, flushed to disk, then renamed over it,
so a reader (or a crash) sees the old content or the new one, never half of it.
``file_lock``: ``flock`` on a lock file for a block; waits for the holder, or with ``busy`` raises
what it returns at once. The lock goes with the process, however it ends.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

__all__ = ["write_atomically", "file_lock"]


def write_atomically(path: Path, data: bytes | str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def file_lock(path: Path, *, busy: Callable[[], Exception] | None = None):
    """Hold ``flock`` on ``path`` (created if missing, its content kept) for the block; yields the open
    file. Without ``busy`` it waits for another holder; with it, raises ``busy()`` instead."""
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy is not None else 0))
        except BlockingIOError:
            raise busy() from None
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
