"""Structure-keeping chunks, sized in tokens.

Blocks of the same section are packed together up to ``max_tokens`` (tiktoken's cl100k,
counted on the body); a section never shares a chunk with another, so a chunk's anchors
name the exact section it lies in. A block too long for one chunk is split at lines, then
sentences, then words. ``fits`` lets the embedder veto a chunk its window cannot hold
(all-MiniLM-L6-v2 truncates at 256 word pieces): such a chunk is halved until it fits.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

from .documents import Block, ParsedPage
from .tokens import count_tokens

__all__ = ["Chunk", "chunk_page", "chunk_id", "same_text_key", "near_copies"]

FRAGMENT_SAFE = "/?!$()*+,;=:@-._~"  # RFC 3986 fragment characters kept; anything else is percent-encoded
SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+(?=[A-Z0-9(\"'`])")


@dataclass(frozen=True)
class Chunk:
    id: str
    page_url: str
    title: str
    headings: tuple[str, ...]
    anchors: tuple[str, ...]
    text: str
    ord: int
    n_tokens: int

    @property
    def url(self) -> str:
        """The page URL and the innermost anchor, percent-encoded (an id is whatever the page says)."""
        return f"{self.page_url}#{quote(self.anchors[-1], safe=FRAGMENT_SAFE)}" if self.anchors else self.page_url

    @property
    def embed_text(self) -> str:
        """What the embedder sees: where the chunk is, then what it says."""
        return embed_text(self.title, self.headings, self.text)


def embed_text(title: str, headings: Iterable[str], text: str) -> str:
    path = [h for h in headings if h and h != title]
    head = " > ".join([title, *path]) if title else " > ".join(path)
    return f"{head}\n{text}" if head else text


def chunk_id(page_url: str, headings: tuple[str, ...], anchors: tuple[str, ...], text: str) -> str:
    key = "\x1f".join([page_url, "/".join(anchors), " > ".join(headings), text])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]


def _split_long(text: str, max_tokens: int) -> list[str]:
    """Split one over-long block: by lines, then sentences, then words."""
    if count_tokens(text) <= max_tokens:
        return [text]
    for pattern in ("\n", SENTENCE_END, " "):
        parts = text.split("\n") if pattern == "\n" else (SENTENCE_END.split(text) if pattern is SENTENCE_END
                                                           else text.split(" "))
        joiner = "\n" if pattern == "\n" else " "
        if len(parts) < 2:
            continue
        out: list[str] = []
        current: list[str] = []
        size = 0
        for part in parts:
            n = count_tokens(part) + 1
            if current and size + n > max_tokens:
                out.append(joiner.join(current))
                current, size = [], 0
            current.append(part)
            size += n
        if current:
            out.append(joiner.join(current))
        result: list[str] = []
        for piece in out:
            result.extend(_split_long(piece, max_tokens) if count_tokens(piece) > max_tokens else [piece])
        return [r for r in result if r.strip()]
    # a single unbroken token run: cut by tokens
    from .tokens import encoding

    ids = encoding().encode(text, disallowed_special=())
    return [encoding().decode(ids[i:i + max_tokens]) for i in range(0, len(ids), max_tokens)]


def _sections(blocks: list[Block]) -> list[list[Block]]:
    groups: list[list[Block]] = []
    for block in blocks:
        if groups and (groups[-1][0].headings, groups[-1][0].anchors) == (block.headings, block.anchors):
            groups[-1].append(block)
        else:
            groups.append([block])
    return groups


def _pack(texts: list[str], max_tokens: int) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    size = 0
    for text in texts:
        for piece in _split_long(text, max_tokens):
            n = count_tokens(piece)
            if current and size + n > max_tokens:
                out.append("\n".join(current))
                current, size = [], 0
            current.append(piece)
            size += n + 1
    if current:
        out.append("\n".join(current))
    return out


def _halve_until_fits(text: str, fits: Callable[[str], bool], head: Callable[[str], str]) -> list[str]:
    if fits(head(text)):
        return [text]
    n = count_tokens(text)
    if n <= 8:
        return [text]  # cannot split further; the embedder will truncate a handful of tokens
    pieces = _split_long(text, max(4, n // 2))
    if len(pieces) < 2:
        return [text]
    out: list[str] = []
    for piece in pieces:
        out.extend(_halve_until_fits(piece, fits, head))
    return out


def chunk_page(page: ParsedPage, page_url: str, max_tokens: int = 180,
               fits: Callable[[str], bool] | None = None) -> list[Chunk]:
    chunks: list[Chunk] = []
    seen: dict[str, int] = {}
    for section in _sections(page.blocks):
        headings, anchors = section[0].headings, section[0].anchors
        texts = _pack([b.text for b in section], max_tokens)
        if fits is not None:
            head = lambda t, h=headings: embed_text(page.title, h, t)  # noqa: E731
            texts = [piece for text in texts for piece in _halve_until_fits(text, fits, head)]
        for text in texts:
            cid = chunk_id(page_url, headings, anchors, text)
            if cid in seen:  # the same text twice in one section: keep ids distinct and stable
                seen[cid] += 1
                cid = f"{cid[:16]}-{seen[cid]:03d}"
            else:
                seen[cid] = 0
            chunks.append(Chunk(id=cid, page_url=page_url, title=page.title, headings=headings, anchors=anchors,
                                text=text, ord=len(chunks), n_tokens=count_tokens(text)))
    return chunks


def same_text_key(text: str) -> str:
    """Equal for chunks whose text differs only in spacing and case: copies of one section
    published on two pages."""
    return hashlib.sha256(" ".join(text.split()).lower().encode()).hexdigest()


SHINGLE_WORDS = 5  # near copies are compared by their runs of this many words
NEAR_COPY_SHARE = 0.8  # share of the shorter chunk's runs found in the other
MIN_SHINGLES = 8  # a chunk shorter than this (~12 words) is too short to call a copy of anything
COMMON_SHINGLE = 50  # a run found in more chunks is boilerplate: it proposes no pair


def near_copies(chunks: Iterable[tuple[int, str]], share: float = NEAR_COPY_SHARE) -> list[tuple[int, int]]:
    """Pairs of chunks that say nearly the same thing, beyond exact copies (``same_text_key``):
    at least ``share`` of the shorter chunk's 5-word runs also appear in the other. Documentation
    repeats itself with small differences: a section republished on another page with other
    chunk boundaries, a release note repeated in the change log. ``chunks``: (key, text)."""
    words = re.compile(r"[a-z0-9_]+")
    runs: dict[int, set[int]] = {}
    holders: dict[int, list[int]] = defaultdict(list)
    for key, text in chunks:
        w = words.findall(text.lower())
        runs[key] = {hash(tuple(w[i:i + SHINGLE_WORDS])) for i in range(len(w) - SHINGLE_WORDS + 1)}
        for run in runs[key]:
            holders[run].append(key)
    candidates: set[tuple[int, int]] = set()  # pairs sharing at least one run that is not boilerplate
    for keys in holders.values():
        if 2 <= len(keys) <= COMMON_SHINGLE:
            candidates.update((a, b) for i, a in enumerate(keys) for b in keys[i + 1:])
    pairs = []
    for a, b in sorted(candidates):
        shorter = min(len(runs[a]), len(runs[b]))
        if shorter >= MIN_SHINGLES and len(runs[a] & runs[b]) >= share * shorter:
            pairs.append((a, b))
    return pairs
