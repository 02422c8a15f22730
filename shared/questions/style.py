"""Real questions as style examples for the LLM question generator (few-shot).

Questions written from a passage alone read like the documentation; people ask differently (short,
informal, the problem first), and the adapter learns whichever style it is trained on. So when real
questions exist, the LLM is shown a few of them beside the passage, as examples of *how* people ask,
never *what*: its question is about the passage.

- Only real questions on the training side of the split are given (the caller passes them: the
  held-out ones judge the adapter and are never shown to the generator).
- Chosen once per run, deterministically from the seed: people's questions first (feedback, history,
  imports, ``--queries`` files), the docs' own question headings only to fill up; diverse (each next
  one shares the fewest words with those already chosen); one line and at most ``MAX_CHARS`` each
  (a longer one only when nothing else is left, cut at a word).
- A pool of up to ``POOL`` questions, of which each prompt shows ``SHOWN``, picked by the chunk:
  thousands of generated questions do not all copy the shape of the same five.
- ``fingerprint`` names the pool; generated questions keep it in the cache (``llm``).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Iterable

__all__ = ["StyleExamples", "choose_examples", "MAX_CHARS", "SHOWN", "POOL"]

MAX_CHARS = 300
SHOWN = 5
POOL = 20
CANDIDATES = 2000  # the diverse pick looks at this many per group, in seeded order
WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class StyleExamples:
    texts: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.texts)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("\x1f".join(sorted(self.texts)).encode()).hexdigest()[:12]

    def for_chunk(self, key: str) -> list[str]:
        """The examples one prompt shows: ``SHOWN`` of the pool, fixed for a chunk and a pool."""
        if len(self.texts) <= SHOWN:
            return list(self.texts)
        picked = random.Random(f"{self.fingerprint}\x1f{key}").sample(range(len(self.texts)), SHOWN)
        return [self.texts[i] for i in sorted(picked)]


def _cut(text: str) -> str:
    if len(text) <= MAX_CHARS:
        return text
    head = text[:MAX_CHARS - 1]
    return (head.rsplit(" ", 1)[0] if " " in head else head).rstrip() + "…"


def _rank(seed: int, text: str) -> bytes:
    return hashlib.sha256(f"style-{seed}\x1f{text}".encode()).digest()


def _similarity(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _diverse(candidates: list[str], chosen: list[str], n: int) -> list[str]:
    """Greedy: the candidate least like any already chosen (word overlap), ties in the given order."""
    words = [frozenset(WORD.findall(t.lower())) for t in candidates]
    taken = [frozenset(WORD.findall(t.lower())) for t in chosen]
    closest = [max((_similarity(w, t) for t in taken), default=0.0) for w in words]
    left, out = list(range(len(candidates))), []
    while left and len(out) < n:
        i = min(left, key=lambda j: (closest[j], j))
        out.append(candidates[i])
        left.remove(i)
        for j in left:
            closest[j] = max(closest[j], _similarity(words[j], words[i]))
    return out


def choose_examples(people: Iterable[str], docs: Iterable[str] = (), seed: int = 0, pool: int = POOL
                    ) -> StyleExamples | None:
    """Up to ``pool`` diverse style examples, people's questions first; None when there are none."""
    chosen: list[str] = []
    seen: set[str] = set()
    for group in (people, docs):
        fresh: dict[str, str] = {}
        for text in group:
            line = " ".join(str(text).split())
            if len(line.split()) >= 2 and line.lower() not in seen:
                fresh.setdefault(line.lower(), line)
        seen |= set(fresh)
        ordered = sorted(fresh.values(), key=lambda t: _rank(seed, t))
        for part in ([t for t in ordered if len(t) <= MAX_CHARS], [_cut(t) for t in ordered if len(t) > MAX_CHARS]):
            chosen += _diverse(part[:CANDIDATES], chosen, pool - len(chosen))
    return StyleExamples(tuple(chosen)) if chosen else None
