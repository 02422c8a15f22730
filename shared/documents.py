"""What a parser makes of a page: a title, and text blocks that know where they sit."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Block", "Link", "ParsedPage", "RawPage"]


@dataclass(frozen=True)
class Block:
    """A paragraph-sized piece of text.

    ``headings`` is the path of section titles above it (outermost first); ``anchors`` the
    fragment ids of the sections that enclose it, innermost last, so ``url#anchors[-1]``
    opens the exact section.
    """

    text: str
    headings: tuple[str, ...] = ()
    anchors: tuple[str, ...] = ()
    kind: str = "text"  # text | code | table | list


@dataclass(frozen=True)
class Link:
    """A link in the page's content: how one page describes another section."""

    href: str  # as written in the page
    text: str  # the link's own text
    context: str = ""  # the sentence around it


@dataclass
class ParsedPage:
    title: str
    blocks: list[Block]
    links: list[Link] = field(default_factory=list)


@dataclass(frozen=True)
class RawPage:
    """A fetched or read page before parsing. ``url`` is where chunks will link to."""

    url: str
    content: bytes
    content_type: str  # html | markdown | rst | text
    charset: str | None = None
    path: str | None = None  # the file path relative to a folder source, or the URL path
