"""Training examples: questions paired with the chunks that answer them, split by chunk.

Every chunk falls in train, validation or test by a salted hash of its id (``by="chunk"``, the
reference's protocol), or of its section URL (``by="section"``: stricter, whole sections are
unseen). Chunks that say the same thing are one unit and share a split: exact copies
(documentation often repeats a section on two pages: an all-in-one API page and one page per
function) and near copies (the same section chunked at other boundaries, a release note repeated
in the change log; ``near_copies``). Otherwise the adapter could train on a copy of a test chunk,
and the test would measure memory, not generalisation. (On the SQLite docs, 19% of chunks have
an exact copy, and 3,344 pairs pass the near-copy test, exact copies among them.)
A question goes to the split of the chunk it was made from (its first positive) and keeps only
the positives of that split: no test question is ever answered by a chunk that was trained on,
and no training question points at a test chunk. The hash is stable, so a chunk stays in its
split across runs and adapter versions (comparisons between versions are fair) as long as the
corpus keeps its copies (a new copy of a chunk can move it); the salt derives from the training
seed and is recorded in every adapter's metadata.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

from ..chunking import near_copies, same_text_key
from ..store import Store

__all__ = ["Example", "SplitSpec", "Dataset", "split_of", "split_salt", "split_units"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Example:
    text: str
    positives: tuple[int, ...]  # chunk rowids
    source: str  # synthetic:<style> | queries:<file> | feedback
    weight: float = 1.0
    negatives: tuple[int, ...] = ()  # chunks labeled not relevant (👎)


@dataclass(frozen=True)
class SplitSpec:
    salt: str
    val: float = 0.15
    test: float = 0.15
    by: str = "chunk"  # chunk | section

    def to_meta(self) -> dict:
        """What an adapter records about its split; equal records mean the same split rule and seed
        (the same split while the corpus's copies stay the same)."""
        return {"salt": self.salt, "val": self.val, "test": self.test, "by": self.by,
                "twins": "near copies share a split"}

    @classmethod
    def from_meta(cls, recorded: dict) -> "SplitSpec":
        return cls(salt=recorded["salt"], val=recorded.get("val", 0.15), test=recorded.get("test", 0.15),
                   by=recorded.get("by", "chunk"))


def split_salt(seed: int) -> str:
    """The split follows the seed: the same seed gives the same split on every run."""
    return f"deepmem-split-{seed}"


def split_of(unit: str, spec: SplitSpec) -> str:
    h = int.from_bytes(hashlib.sha256(f"{spec.salt}\x1f{unit}".encode()).digest()[:8], "big") / 2 ** 64
    if h < spec.test:
        return "test"
    if h < spec.test + spec.val:
        return "val"
    return "train"


def split_units(store: Store, spec: SplitSpec) -> dict[int, str]:
    """rowid -> the unit hashed into a split: the chunk id or section URL. Units holding copies of
    one text, exact or near (``near_copies``), are merged (union-find), so copies, and with
    ``by="section"`` every chunk of the sections they sit in, fall in one split."""
    key: dict[int, str] = {}
    twins: dict[str, list[int]] = defaultdict(list)
    texts: list[tuple[int, str]] = []
    for chunk in store.iter_chunks(order="rowid"):
        rowid, unit, text = chunk.rowid, (chunk.url if spec.by == "section" else chunk.id), chunk.text
        key[rowid] = unit
        twins[same_text_key(text)].append(rowid)
        texts.append((rowid, text))
    parent: dict[str, str] = {}

    def find(u: str) -> str:
        while parent.get(u, u) != u:
            parent[u] = parent.get(parent[u], parent[u])
            u = parent[u]
        return u

    for members in [*twins.values(), *near_copies(texts)]:
        roots = sorted({find(key[r]) for r in members})
        for other in roots[1:]:
            parent[other] = roots[0]  # the smallest unit names the merged group
    return {rowid: find(unit) for rowid, unit in key.items()}


@dataclass
class Dataset:
    train: list[Example] = field(default_factory=list)
    val: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)
    units: dict[int, str] = field(default_factory=dict)  # rowid -> its split unit (see split_units)

    def add(self, split: str, example: Example) -> None:
        getattr(self, split).append(example)

    def counts(self) -> dict:
        out = {s: len(getattr(self, s)) for s in SPLITS}
        for s in SPLITS:
            by: dict[str, int] = {}
            for e in getattr(self, s):
                by[e.source] = by.get(e.source, 0) + 1
            out[f"{s}_by_source"] = by
        return out

    @classmethod
    def build(cls, store: Store, groups: list[tuple[str, list[tuple[str, tuple[int, ...]]]]], spec: SplitSpec) -> "Dataset":
        """``groups``: [(source, [(question, positive rowids)])]. Each question goes to the split of
        its first positive; positives from other splits are dropped (never leak)."""
        url_of = split_units(store, spec)
        data = cls(units=url_of)
        for source, items in groups:
            for text, positives in items:
                positives = tuple(p for p in positives if p in url_of)
                if not positives or not text.strip():
                    continue
                split = split_of(url_of[positives[0]], spec)
                kept = tuple(p for p in positives if split_of(url_of[p], spec) == split)
                data.add(split, Example(text=text, positives=kept, source=source))
        return data
