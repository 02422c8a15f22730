"""Parsing in a child process, with a time limit per page.

Parsers are third-party code fed untrusted pages: some inputs make them slow (markdown-it
spends about a minute per megabyte of ``[``; a tree builder's time grows with nesting depth
times tags) and a C extension could crash. ``ParserProcess`` parses each page in a long-lived
child process; a page that takes longer than ``time_limit`` seconds is skipped with a
ParseError and the child is replaced, as is a child that dies. The child also stops itself
(SIGALRM) if a page outlives the limit, so it never outlives the process that started it by
more than that: it exits when its input closes.

Wire format, both ways: 4-byte big-endian length, then the payload. Requests are a JSON
header frame then the page's bytes; replies are one JSON frame. JSON, not pickle: the parent
never unpickles what code handling untrusted input produced.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
import time

from ..documents import Block, Link, ParsedPage, RawPage
from ..errors import DeepmemError
from .errors import ParseError

__all__ = ["ParserProcess", "ParserUnavailable", "PARSE_SECONDS"]

PARSE_SECONDS = 60.0  # a 5 MB page of real HTML parses in about 6 s on a slow core
START_SECONDS = 60.0  # to start the child and import the parsers
_LENGTH = struct.Struct(">I")


class ParserUnavailable(DeepmemError):
    """The child process cannot be started: nothing can be parsed (not a fault of any page)."""


class ParserProcess:
    """Parse pages in a child process: ``parse(raw)`` returns a ParsedPage or raises ParseError."""

    def __init__(self, time_limit: float = PARSE_SECONDS):
        self.time_limit = time_limit
        self._child: subprocess.Popen | None = None

    def __enter__(self) -> "ParserProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def parse(self, raw: RawPage) -> ParsedPage:
        header = json.dumps({"url": raw.url, "content_type": raw.content_type, "charset": raw.charset,
                             "path": raw.path, "time_limit": self.time_limit}).encode()
        for attempt in (1, 2):  # a child that died idle is replaced once
            child = self._start()
            try:
                _write_frame(child.stdin, header)
                _write_frame(child.stdin, raw.content)
                child.stdin.flush()
            except OSError:
                self._stop()
                if attempt == 2:
                    raise ParserUnavailable("the parser process stopped reading pages") from None
                continue
            return _page_from(self._read_reply(child))
        raise AssertionError("unreachable")

    def close(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        try:
            child.stdin.close()  # the child exits when its input closes
            child.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            child.kill()
            child.wait()
        child.stdout.close()

    # -- the child process ---------------------------------------------------------------
    def _start(self) -> subprocess.Popen:
        """The running child, or a new one that has said it is ready (its parsers imported)."""
        if self._child is not None and self._child.poll() is None:
            return self._child
        self._stop()
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "shared.parsers.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, start_new_session=True)  # Ctrl-C is the parent's to handle
        except OSError as exc:
            raise ParserUnavailable(f"cannot start the parser process: {exc.strerror or exc}") from None
        self._child = child
        deadline = time.monotonic() + START_SECONDS
        try:
            (size,) = _LENGTH.unpack(_read_exactly(child.stdout.fileno(), _LENGTH.size, deadline))
            _read_exactly(child.stdout.fileno(), size, deadline)
        except (TimeoutError, EOFError):
            self._stop()
            raise ParserUnavailable(f"the parser process did not start (exit status {child.returncode})") from None
        return child

    def _stop(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.poll() is None:
            child.kill()
        child.wait()
        for pipe in (child.stdin, child.stdout):
            try:
                pipe.close()
            except OSError:
                pass

    def _read_reply(self, child: subprocess.Popen) -> dict:
        deadline = time.monotonic() + self.time_limit
        fd = child.stdout.fileno()
        try:
            (size,) = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size, deadline))
            return json.loads(_read_exactly(fd, size, deadline))
        except TimeoutError:
            self._stop()
            raise ParseError(f"parsing took longer than {self.time_limit:g} s: skipped") from None
        except EOFError:
            returncode = child.wait()
            self._stop()
            if returncode == -signal.SIGALRM:
                raise ParseError(f"parsing took longer than {self.time_limit:g} s: skipped") from None
            how = f"signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
            raise ParseError(f"the parser crashed on this page ({how}): skipped") from None


def _read_exactly(fd: int, size: int, deadline: float) -> bytes:
    parts, left = [], size
    while left:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            raise TimeoutError
        piece = os.read(fd, min(left, 1 << 20))
        if not piece:
            raise EOFError
        parts.append(piece)
        left -= len(piece)
    return b"".join(parts)


def _write_frame(stream, payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)


def _page_from(reply: dict) -> ParsedPage:
    if "error" in reply:
        raise ParseError(reply["error"])
    page = reply["page"]
    blocks = [Block(text=t, headings=tuple(h), anchors=tuple(a), kind=k) for t, h, a, k in page["blocks"]]
    return ParsedPage(title=page["title"], blocks=blocks,
                      links=[Link(href=h, text=t, context=c) for h, t, c in page["links"]])


def _page_to(page: ParsedPage) -> dict:
    return {"title": page.title,
            "blocks": [[b.text, list(b.headings), list(b.anchors), b.kind] for b in page.blocks],
            "links": [[link.href, link.text, link.context] for link in page.links]}


def _serve() -> None:
    """The child: read requests from stdin until it closes, answer each on stdout."""
    from . import parse

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    _write_frame(stdout, b'{"ready": true}')
    stdout.flush()

    def read_frame() -> bytes | None:
        head = stdin.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return None
        (size,) = _LENGTH.unpack(head)
        data = stdin.read(size)
        return data if len(data) == size else None

    while True:
        header = read_frame()
        content = read_frame() if header is not None else None
        if content is None:
            return
        meta = json.loads(header)
        # the default action of SIGALRM ends the process, even inside C code
        signal.setitimer(signal.ITIMER_REAL, float(meta.pop("time_limit")) + 1.0)
        try:
            reply = {"page": _page_to(parse(RawPage(content=content, **meta)))}
        except ParseError as exc:
            reply = {"error": str(exc)}
        except RecursionError:
            reply = {"error": "the page is nested too deeply to parse: skipped"}
        except Exception as exc:  # a parser bug on one page must not stop the others
            reply = {"error": f"the parser failed on this page ({exc.__class__.__name__}: {exc}): skipped"}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        _write_frame(stdout, json.dumps(reply).encode("ascii"))
        stdout.flush()


if __name__ == "__main__":
    _serve()
