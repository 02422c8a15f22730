"""Question sets with relevance: loading them, and resolving what they point at to chunks.

Three formats are read:

- JSONL, one ``{"query": "...", "relevant": [...]}`` per line. Each entry is a chunk id, a page
  URL (any chunk of that page counts) or ``url#anchor`` (a chunk whose enclosing section
  anchors include it counts), so a question set survives re-chunking. Entries may also be
  ``[entry, score]`` pairs. Relative URLs match stored page URLs that end with them.
- The reference's shape as JSON: ``{"questions": [...], "relevance": [[[chunk_id, score], ...], ...]}``.
- LlamaIndex's saved ``EmbeddingQAFinetuneDataset`` (``queries``, ``corpus``, ``relevant_docs``):
  each corpus node is matched to the stored chunks whose text it contains, or which contain it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import DeepmemError
from .store import Store

__all__ = ["Query", "QueryFileError", "load_queries", "Resolver", "ResolvedQuery", "jsonl_lines"]


class QueryFileError(DeepmemError):
    """A malformed query file; the message gives the line and the reason."""


@dataclass
class Query:
    text: str
    relevant: list[tuple[str, float]]  # (entry, score): chunk id, page URL or url#anchor
    id: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class ResolvedQuery:
    query: Query
    targets: list[frozenset[int]]  # one set of chunk rowids per relevant entry with score > 0
    unresolved: list[str]

    @property
    def text(self) -> str:
        return self.query.text

    @property
    def all_rowids(self) -> frozenset[int]:
        return frozenset().union(*self.targets) if self.targets else frozenset()


def _entry(value, where: str) -> tuple[str, float]:
    if isinstance(value, str) and value.strip():
        return value.strip(), 1.0
    if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str) \
            and isinstance(value[1], (int, float)) and not isinstance(value[1], bool):
        return value[0].strip(), float(value[1])
    raise QueryFileError(f"{where}: a relevant entry must be a string or [entry, score], got {value!r}")


def jsonl_lines(text: str, name: str, *, comments: bool = False) -> Iterator[tuple[int, str, object]]:
    """(line number, "name:number", parsed value) for each non-empty line; a line that is not JSON
    is a QueryFileError naming the file, line and column. ``comments``: skip lines starting with //."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or (comments and line.lstrip().startswith("//")):
            continue
        where = f"{name}:{number}"
        try:
            yield number, where, json.loads(line)
        except json.JSONDecodeError as exc:
            raise QueryFileError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None


def _from_jsonl(text: str, name: str) -> list[Query]:
    out = []
    for number, where, obj in jsonl_lines(text, name, comments=True):
        if not isinstance(obj, dict):
            raise QueryFileError(f"{where}: expected an object with \"query\" and \"relevant\"")
        query = obj.get("query", obj.get("question"))
        if not isinstance(query, str) or not query.strip():
            raise QueryFileError(f"{where}: \"query\" must be a non-empty string")
        relevant = obj.get("relevant")
        if not isinstance(relevant, list) or not relevant:
            raise QueryFileError(f"{where}: \"relevant\" must be a non-empty list")
        entries = [_entry(v, where) for v in relevant]
        meta = {k: v for k, v in obj.items() if k not in ("query", "question", "relevant", "id")}
        out.append(Query(text=query.strip(), relevant=entries, id=obj.get("id") or f"{name}:{number}", meta=meta))
    return out


def _from_reference(obj: dict, name: str) -> list[Query]:
    questions, relevance = obj.get("questions"), obj.get("relevance")
    if not isinstance(questions, list) or not isinstance(relevance, list) or len(questions) != len(relevance):
        raise QueryFileError(f"{name}: \"questions\" and \"relevance\" must be lists of the same length")
    out = []
    for i, (q, rel) in enumerate(zip(questions, relevance)):
        if not isinstance(q, str) or not q.strip():
            raise QueryFileError(f"{name}: question {i} must be a non-empty string")
        if not isinstance(rel, list) or not rel:
            raise QueryFileError(f"{name}: relevance {i} must be a non-empty list of [chunk_id, score]")
        out.append(Query(text=q.strip(), relevant=[_entry(v, f"{name}: relevance {i}") for v in rel], id=f"q{i}"))
    return out


def _from_llamaindex(obj: dict, name: str) -> list[Query]:
    queries, corpus, relevant = obj.get("queries"), obj.get("corpus"), obj.get("relevant_docs")
    if not all(isinstance(x, dict) for x in (queries, corpus, relevant)):
        raise QueryFileError(f"{name}: expected \"queries\", \"corpus\" and \"relevant_docs\" objects")
    out = []
    for qid, text in queries.items():
        nodes = relevant.get(qid) or []
        entries = []
        for node in nodes:
            if node not in corpus:
                raise QueryFileError(f"{name}: relevant_docs[{qid!r}] names {node!r}, which is not in the corpus")
            entries.append((f"text:{corpus[node]}", 1.0))
        if entries and isinstance(text, str) and text.strip():
            out.append(Query(text=text.strip(), relevant=entries, id=qid))
    return out


def load_queries(path: Path | str) -> list[Query]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QueryFileError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise QueryFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise QueryFileError(f"{path}: cannot read ({exc.strerror})") from None
    stripped = text.lstrip()
    if not stripped:
        raise QueryFileError(f"{path}: the file is empty")
    queries: list[Query]
    if stripped.startswith("{") and not path.suffix == ".jsonl":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and "relevant_docs" in obj:
            queries = _from_llamaindex(obj, path.name)
        elif isinstance(obj, dict) and "questions" in obj:
            queries = _from_reference(obj, path.name)
        else:
            queries = _from_jsonl(text, path.name)
    else:
        queries = _from_jsonl(text, path.name)
    if not queries:
        raise QueryFileError(f"{path}: no questions in the file")
    return queries


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


class Resolver:
    """Maps relevance entries to the chunks they denote in one store."""

    def __init__(self, store: Store):
        self.store = store
        self.by_id: dict[str, int] = {}
        self.by_page: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
        for c in store.iter_chunks(order="rowid"):
            self.by_id[c.id] = c.rowid
            self.by_page.setdefault(c.page_url, []).append((c.rowid, c.anchors))
        self._texts: dict[int, str] | None = None

    def _page(self, url: str) -> list[tuple[int, tuple[str, ...]]] | None:
        if url in self.by_page:
            return self.by_page[url]
        url = url.lstrip("./")
        matches = [u for u in self.by_page if u == url or u.endswith("/" + url)]
        if len(matches) == 1:
            return self.by_page[matches[0]]
        return None

    def _by_text(self, text: str) -> frozenset[int]:
        if self._texts is None:
            self._texts = {r: _norm(t) for r, t in self.store.chunk_texts()}
        node = _norm(text)
        return frozenset(r for r, t in self._texts.items() if t and (t in node or node in t))

    def resolve_entry(self, entry: str) -> frozenset[int]:
        if entry.startswith("text:"):
            return self._by_text(entry[5:])
        if entry in self.by_id:
            return frozenset([self.by_id[entry]])
        url, _, anchor = entry.partition("#")
        page = self._page(url)
        if page is None:
            return frozenset()
        if not anchor:
            return frozenset(r for r, _ in page)
        return frozenset(r for r, anchors in page if anchor in anchors)

    def resolve(self, queries: list[Query]) -> list[ResolvedQuery]:
        out = []
        for q in queries:
            targets, unresolved = [], []
            for entry, score in q.relevant:
                if score <= 0:
                    continue
                rowids = self.resolve_entry(entry)
                (targets.append(rowids) if rowids else unresolved.append(entry))
            out.append(ResolvedQuery(q, targets, unresolved))
        return out
