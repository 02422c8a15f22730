"""Markdown, reStructuredText and plain text, each rendered to HTML and parsed like a web page.

Markdown headings get GitHub-style ids (the anchors a docs site built from them would use).
docutils runs with file insertion and raw output disabled: a document is untrusted input
and must not make us read other files.
"""

from __future__ import annotations

import html
import re

from ..documents import Block, ParsedPage
from .html import parse_html

__all__ = ["parse_markdown", "parse_rst", "parse_text"]

FRONT_TITLE = re.compile(r"^title:\s*[\"']?(.+?)[\"']?\s*$", re.M)


def _markdown_renderer():
    from markdown_it import MarkdownIt
    from mdit_py_plugins.anchors import anchors_plugin
    from mdit_py_plugins.front_matter import front_matter_plugin

    return (MarkdownIt("commonmark", {"html": True}).enable("table")
            .use(front_matter_plugin).use(anchors_plugin, min_level=1, max_level=6))


_MD = None


def parse_markdown(text: str, fallback_title: str = "") -> ParsedPage:
    global _MD
    if _MD is None:
        _MD = _markdown_renderer()
    tokens = _MD.parse(text)
    title = ""
    for tok in tokens:
        if tok.type == "front_matter":
            m = FRONT_TITLE.search(tok.content)
            title = m.group(1).strip() if m else ""
    body = _MD.renderer.render(tokens, _MD.options, {})
    page = parse_html(f"<html><body>{body}</body></html>", fallback_title=fallback_title)
    if title:
        page.title = title
    return page


def parse_rst(text: str, fallback_title: str = "") -> ParsedPage:
    from docutils.core import publish_parts

    overrides = {
        "file_insertion_enabled": False,  # no `.. include::` of local files
        "raw_enabled": False,             # no `.. raw:: html`
        "report_level": 5,                # no "System Message" paragraphs in the text
        "halt_level": 5,                  # never raise on a markup error
        "warning_stream": False,
        "doctitle_xform": True,
        "syntax_highlight": "none",
        "input_encoding": "unicode",
    }
    try:
        parts = publish_parts(source=text, writer="html5", settings_overrides=overrides)
    except Exception:  # docutils can still fail on pathological input; fall back to plain text
        return parse_text(text, fallback_title)
    title = html.unescape(re.sub(r"<[^>]+>", "", parts.get("title") or "")).strip()
    page = parse_html(f"<html><body>{parts['html_body']}</body></html>", fallback_title=fallback_title)
    page.title = title or page.title
    return page


def parse_text(text: str, fallback_title: str = "") -> ParsedPage:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if p.strip()]
    blocks = [Block(text=re.sub(r"[ \t]+", " ", p)) for p in paragraphs]
    return ParsedPage(title=fallback_title, blocks=blocks, links=[])
