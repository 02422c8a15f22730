"""HTML to structured text blocks.

The page is walked in document order (iteratively: broken HTML can nest thousands deep).
Headings open sections; named anchors (``<a name>``, ids on block elements and headings)
mark where a linkable section starts. Anchors seen just before a heading belong to that
heading; an anchor followed by content opens an anchored region inside the current section
(the SQLite docs, Sphinx option lists and many API references are written this way).
Navigation, menus, tables of contents, scripts and hidden elements are dropped from the
text, but their links are still reported so a crawler can follow them.

Work per page is bounded: a page nested deeper than MAX_NESTING is refused before the tree is
built (the tree builder's time grows with depth times tags), and every pass below is linear in
the size of the page (at most MAX_PENDING_ANCHORS anchors wait for a heading, MAX_LINKS links
are kept, a link's sentence is looked for near the link).
"""

from __future__ import annotations

import re

from selectolax.lexbor import LexborHTMLParser

from ..documents import Block, Link, ParsedPage
from .errors import ParseError
from .nesting import nesting_depth

__all__ = ["parse_html", "MAX_NESTING"]

HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
DROP_TAGS = {"script", "style", "noscript", "template", "nav", "header", "footer", "form", "svg", "iframe",
             "object", "embed", "canvas", "button", "select", "input", "textarea", "head", "title", "meta", "link",
             "-comment", "audio", "video", "map", "dialog", "math"}
DROP_ROLES = {"navigation", "banner", "contentinfo", "search", "menu", "menubar", "toolbar", "tablist"}
# class / id words that mark site chrome rather than content ("fancy-toc1", "sidebar-nav", "nosearch")
CHROME_WORD = re.compile(
    r"(?:^|[-_\s])(?:toc|nav|navbar|navigation|menu|mainmenu|submenu|sidebar|breadcrumbs?|footer|"
    r"nosearch|noindex|searchbox|searchmenu|skip-?link|headerlink|anchorjs|edit-?page|cookie)(?:[-_\d\s]|$)",
    re.I)
BLOCK_TAGS = {"p", "div", "section", "article", "main", "aside", "blockquote", "ul", "ol", "li", "dl", "dt", "dd",
              "table", "thead", "tbody", "tfoot", "tr", "pre", "hr", "figure", "figcaption", "details", "summary",
              "center", "address", "fieldset", "body", "html", "caption"} | set(HEADINGS)
ANCHOR_TAGS = BLOCK_TAGS | {"a"}
SPACE = re.compile(r"[ \t\r\f\v\u00a0]+")
MAX_HEADING_CHARS = 200
SECTION_NUMBER = re.compile(r"^(?:\d+\.)*\d+\.?\s+(?=\S)")  # "3.2. The DEFAULT clause" -> "The DEFAULT clause"
MAX_NESTING = 1000  # elements open at once; real pages nest a few dozen deep
MAX_PENDING_ANCHORS = 16  # anchors waiting for a heading or for content (the nearest are kept)
MAX_LINKS = 20_000  # links kept per page (the SQLite docs' largest page has 14,213)
SENTENCE_WORK = 100_000_000  # per page: characters scanned to find links' sentences exactly, then near them
SENTENCE_WINDOW = 150  # ... then a sentence's start is looked for this far before a link


def _hidden(attrs: dict) -> bool:
    if "hidden" in attrs or attrs.get("aria-hidden") == "true":
        return True
    style = (attrs.get("style") or "").replace(" ", "").lower()
    return "display:none" in style or "visibility:hidden" in style


def _is_chrome(tag: str, attrs: dict) -> bool:
    if tag in DROP_TAGS:
        return True
    if (attrs.get("role") or "").lower() in DROP_ROLES:
        return True
    if _hidden(attrs):
        return True
    marks = " ".join(filter(None, [attrs.get("class") or "", attrs.get("id") or ""]))
    return bool(marks) and bool(CHROME_WORD.search(marks))


def _clean(text: str) -> str:
    lines = [SPACE.sub(" ", line).strip() for line in text.split("\n")]
    out, blank = [], False
    for line in lines:
        if line:
            out.append(line)
            blank = False
        elif out and not blank:
            out.append("")
            blank = True
    return "\n".join(out).strip()


def _heading_text(node) -> str:
    """The heading's text without its chrome (permalinks, hidden parts): one pass over its subtree."""
    parts, size = [], 0
    stack = list(node.iter(include_text=True))[::-1]
    while stack and size <= 20 * MAX_HEADING_CHARS:
        child = stack.pop()
        if child.tag == "-text":
            text = child.text_content or ""
            parts.append(text)
            size += len(text)
        elif not _is_chrome(child.tag, child.attributes or {}):
            stack.extend(list(child.iter(include_text=True))[::-1])
    text = SPACE.sub(" ", " ".join("".join(parts).split())).strip(" ¶#§")
    return SECTION_NUMBER.sub("", text)[:MAX_HEADING_CHARS]


class _Walker:
    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.buffer: list[str] = []
        self.kind = "text"
        # [(level, title, anchors)], outermost first
        self.sections: list[tuple[int, str, tuple[str, ...]]] = []
        self.pending: list[str] = []  # anchors waiting for a heading or for content
        self.region: tuple[str, ...] = ()  # anchored region inside the current section
        self.region_title: str | None = None
        self.region_blocks = 0
        self.pre_depth = 0
        self.table_rows: list[list[str]] | None = None
        self.table_depth = 0
        self.list_item = False
        self.open_links: list[tuple[str, str]] = []  # (href, text) of links in the block being read
        self.links: list[Link] = []
        self.sentence_work = SENTENCE_WORK  # budget for finding links' sentences exactly

    # -- positions -------------------------------------------------------------------
    def anchor(self, name: str) -> None:
        name = name.strip()
        if not name or len(name) > 200:
            return
        self.flush()
        if name not in self.pending:
            self.pending = self.pending[1 - MAX_PENDING_ANCHORS:] + [name]

    def heading(self, level: int, title: str, own_anchor: str | None) -> None:
        self.flush()
        anchors = list(self.pending)
        if own_anchor and own_anchor not in anchors:
            anchors.append(own_anchor)
        self.pending = []
        while self.sections and self.sections[-1][0] >= level:
            self.sections.pop()
        self.sections.append((level, title, tuple(anchors)))
        self.region, self.region_title, self.region_blocks = (), None, 0

    # -- text ------------------------------------------------------------------------
    def text(self, text: str) -> None:
        if self.table_rows is not None:
            if not self.table_rows:
                self.table_rows.append([])
            row = self.table_rows[-1]
            if not row:
                row.append("")
            row[-1] += text
            return
        self.buffer.append(text)

    def flush(self, kind: str | None = None) -> None:
        raw = "".join(self.buffer)
        self.buffer = []
        text = raw.strip("\n") if self.kind == "code" else _clean(raw)
        block_kind = kind or self.kind
        self.kind = "text"
        if not text.strip():
            self.open_links = []
            return
        if self.list_item:
            text, block_kind, self.list_item = "- " + text, "list", False
        if self.pending:  # an anchor followed by content: an anchored region starts here
            self.region = tuple(self.pending)
            self.region_title, self.region_blocks = None, 0
            self.pending = []
        if self.region and self.region_blocks == 0 and len(text) <= 80 and "\n" not in text \
                and not text.rstrip().endswith((".", ":", ";", ",")):
            self.region_title = text  # a short first line names the region ("SQLITE_SECURE_DELETE")
        headings = tuple(t for _, t, _ in self.sections if t)
        if self.region_title and self.region_title not in headings:
            headings += (self.region_title,)
        anchors = tuple(a for _, _, anchors in self.sections for a in anchors) + self.region
        self.blocks.append(Block(text=text, headings=headings, anchors=anchors, kind=block_kind))
        if self.open_links:
            room = MAX_LINKS - len(self.links)
            labels = [label for _, label in self.open_links[:room]]
            work = len(text) * len(labels)
            self.sentence_work -= work
            contexts = _sentences_around(text, labels, exact=self.sentence_work >= 0)
            for (href, label), context in zip(self.open_links, contexts):
                self.links.append(Link(href=href, text=label, context=context))
        self.open_links = []
        if self.region:
            self.region_blocks += 1


def _sentences_around(text: str, labels: list[str], exact: bool = True) -> list[str]:
    """For each label, the sentence of ``text`` that holds it (at most 300 characters): where the
    label first occurs; or, not ``exact`` (for pages so full of links that this would be
    quadratic), where it occurs after the label before it, its sentence's start looked for near it."""
    flat = " ".join(text.split())
    out, cursor = [], 0
    for label in labels:
        at = (flat.find(label) if exact else flat.find(label, cursor)) if label else -1
        if at < 0:
            out.append(flat[:300])
            continue
        cursor = at + len(label)
        low = 0 if exact else max(0, at - SENTENCE_WINDOW)
        start = max(flat.rfind(". ", low, at), flat.rfind("? ", low, at), flat.rfind("! ", low, at))
        start = low if start < 0 else start + 2
        stop = start + 302  # the sentence is cut at 300 characters: no need to look further
        ends = [i for i in (flat.find(". ", cursor, stop), flat.find("? ", cursor, stop)) if i >= 0]
        end = min(ends) + 1 if ends else len(flat)
        out.append(flat[start:end][:300])
    return out


def parse_html(html: str, fallback_title: str = "") -> ParsedPage:
    check_nesting(html)
    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    title = _clean(title_node.text()) if title_node else ""

    root = tree.css_first("main") or tree.css_first("[role=main]") or tree.body or tree.root
    walker = _Walker()
    if root is None:
        return ParsedPage(title=title or fallback_title, blocks=[], links=[])

    # iterative pre-order walk; ("end", node) markers close elements
    stack: list[tuple[str, object]] = [("node", root)]
    while stack:
        what, node = stack.pop()
        tag = node.tag
        if what == "end":
            if tag == "pre":
                walker.pre_depth -= 1
                walker.flush("code")
            elif tag == "table" and walker.table_rows is not None and walker.table_depth == 1:
                rows = [" | ".join(c for c in (SPACE.sub(" ", x).strip() for x in row) if c) for row in walker.table_rows]
                walker.table_rows = None
                walker.table_depth = 0
                walker.buffer = ["\n".join(r for r in rows if r)]
                walker.flush("table")
            elif tag == "table" and walker.table_rows is not None:
                walker.table_depth -= 1
            elif tag in BLOCK_TAGS and walker.table_rows is None:
                walker.flush()
                walker.list_item = False
            continue
        if tag == "-text":
            text = node.text_content or ""
            if walker.pre_depth == 0:
                text = text.replace("\n", " ")
            walker.text(text)
            continue
        attrs = node.attributes or {}
        if tag != root.tag and _is_chrome(tag, attrs):
            continue
        if tag == "br":
            walker.text("\n")
            continue
        if tag in HEADINGS and walker.pre_depth == 0 and walker.table_rows is None:
            inner_ids = [c.attributes.get("id") or c.attributes.get("name") for c in node.traverse()
                         if c is not node and c.tag == "a" and c.attributes
                         and (c.attributes.get("id") or c.attributes.get("name"))]
            for extra in inner_ids:
                walker.anchor(extra)
            walker.heading(HEADINGS[tag], _heading_text(node), attrs.get("id"))
            continue
        if tag == "a" and attrs.get("href") and len(walker.links) + len(walker.open_links) < MAX_LINKS:
            href = attrs["href"].strip()
            if href and not href.startswith(("javascript:", "mailto:", "tel:", "data:")):
                label = " ".join(node.text().split())[:200]
                if label:
                    walker.open_links.append((href, label))
        if tag in ANCHOR_TAGS and walker.table_rows is None and walker.pre_depth == 0:
            if tag == "a":  # a link target, not a link that merely has an id
                name = attrs.get("name") or (attrs.get("id") if "href" not in attrs else None)
            else:
                name = attrs.get("id")
            if name and tag not in ("html", "body", "main", "article"):
                walker.anchor(name)
        if tag == "table" and walker.pre_depth == 0:
            if walker.table_rows is None:
                walker.flush()
                walker.table_rows = []
            walker.table_depth += 1
        elif tag == "tr" and walker.table_rows is not None and walker.table_depth == 1:
            walker.table_rows.append([])
        elif tag in ("td", "th") and walker.table_rows is not None and walker.table_depth == 1:
            if not walker.table_rows:
                walker.table_rows.append([])
            walker.table_rows[-1].append("")
        elif tag == "pre":
            walker.flush()
            walker.pre_depth += 1
            walker.kind = "code"
        elif tag in BLOCK_TAGS and walker.table_rows is None and walker.pre_depth == 0:
            walker.flush()
            if tag == "li":
                walker.list_item = True
        stack.append(("end", node))
        children = list(node.iter(include_text=True))
        for child in reversed(children):
            stack.append(("node", child))
    walker.flush()

    if not title:
        first = next((t for _, t, _ in walker.sections if t), "")
        title = first or fallback_title
    return ParsedPage(title=title, blocks=walker.blocks, links=walker.links)


def check_nesting(html: str) -> None:
    """Refuse a page nested deeper than MAX_NESTING before a tree builder spends minutes on it."""
    depth = nesting_depth(html, MAX_NESTING)
    if depth > MAX_NESTING:
        raise ParseError(f"HTML nested more than {MAX_NESTING:,} elements deep: not parsed "
                         f"(building a tree that deep takes minutes)")
