"""Parsers: every supported format becomes a ParsedPage of structured blocks."""

from __future__ import annotations

from ..documents import ParsedPage, RawPage
from .errors import ParseError
from .html import parse_html
from .markup import parse_markdown, parse_rst, parse_text

__all__ = ["parse", "decode", "kind_for_path", "kind_for_content_type", "ParseError", "SUPPORTED_SUFFIXES"]

SUPPORTED_SUFFIXES = {
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".md": "markdown", ".markdown": "markdown", ".mdown": "markdown",
    ".rst": "rst", ".rest": "rst",
    ".txt": "text", ".text": "text",
}


def kind_for_path(name: str) -> str | None:
    lower = name.lower()
    for suffix, kind in SUPPORTED_SUFFIXES.items():
        if lower.endswith(suffix):
            return kind
    return None


def kind_for_content_type(content_type: str) -> str | None:
    ct = content_type.split(";")[0].strip().lower()
    return {"text/html": "html", "application/xhtml+xml": "html", "text/markdown": "markdown",
            "text/x-markdown": "markdown", "text/x-rst": "rst", "text/plain": "text"}.get(ct)


def decode(raw: RawPage) -> str:
    data = raw.content
    if not data.strip():
        raise ParseError("empty file")
    if b"\x00" in data[:8192]:
        raise ParseError("binary content (NUL bytes), not a text document")
    charset = (raw.charset or "").strip().lower() or None
    if charset is None and raw.content_type == "html":
        charset = _meta_charset(data[:4096])
    if data.startswith(b"\xef\xbb\xbf"):
        data, charset = data[3:], "utf-8"
    try:
        return data.decode(charset or "utf-8")
    except LookupError:
        raise ParseError(f"unknown character set {charset!r}") from None
    except UnicodeDecodeError as exc:
        raise ParseError(f"invalid {exc.encoding} at byte {exc.start}: {exc.reason}") from None


def _meta_charset(head: bytes) -> str | None:
    import re

    m = re.search(rb"<meta[^>]+charset=[\"']?([A-Za-z0-9_\-]+)", head, re.I)
    return m.group(1).decode("ascii").lower() if m else None


def parse(raw: RawPage) -> ParsedPage:
    text = decode(raw)
    fallback = (raw.path or raw.url).rstrip("/").rsplit("/", 1)[-1]
    if raw.content_type == "html":
        page = parse_html(text, fallback_title=fallback)
    elif raw.content_type == "markdown":
        page = parse_markdown(text, fallback_title=fallback)
    elif raw.content_type == "rst":
        page = parse_rst(text, fallback_title=fallback)
    else:
        page = parse_text(text, fallback_title=fallback)
    if not any(b.text.strip() for b in page.blocks):
        raise ParseError("no text content")
    return page
