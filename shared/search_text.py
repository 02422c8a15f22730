"""Turning what a person typed into a safe FTS5 query.

User text is untrusted: FTS5 has its own query syntax (quotes, NEAR, column filters, '*'),
so every term is extracted, lower-cased and double-quoted, and terms are OR-ed for BM25.
"""

from __future__ import annotations

import re

__all__ = ["fts_query", "terms", "STOPWORDS"]

WORD = re.compile(r"[A-Za-z0-9_]+(?:[.'][A-Za-z0-9_]+)*")
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
him his how i if in into is it its itself just me more most my no nor not now of off on once only or other our
out over own same she should so some such than that the their them then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you your yours
get got use using used want need way ways make makes possible anyone someone something thing things
""".split())


def terms(text: str) -> list[str]:
    out: list[str] = []
    for word in WORD.findall(text):
        word = word.lower().strip("'.")
        if len(word) < 2 or word in STOPWORDS:
            continue
        for part in re.split(r"[.']", word):
            if len(part) >= 2 and part not in STOPWORDS and part not in out:
                out.append(part)
    return out


def fts_query(text: str, max_terms: int = 24) -> str:
    return " OR ".join(f'"{t}"' for t in terms(text)[:max_terms])
