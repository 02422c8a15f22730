"""The offline question generator: questions built from the documentation's own structure.

No model is needed. Sources of questions, from the most to the least like what people ask:

- link: a sentence on another page that links to a section says, in outside words, what that
  section is for ("Use the SQLITE_THREADSAFE compile-time parameter to select the threading
  mode" -> "How do I select the threading mode?" for compile.html#threadsafe);
- doc_question: questions the documentation itself asks ("Why is X slow?");
- sentence: a sentence of the chunk turned into the question it answers, answer left out;
- name: API names, options and settings a section defines ("What does sqlite3_busy_timeout do?");
- link_name: the text of a link to a section, asked about ("What is INTEGER PRIMARY KEY?");
- heading: the section's heading as a question ("How do I create a table?").

Questions that copy a long run of their chunk's words are dropped: a question should be
what someone asks, not a quote of the answer.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from dataclasses import dataclass

from ..chunking import same_text_key
from ..search_text import STOPWORDS
from ..store import Store
from .phrasing import (PREPOSITIONS, PRONOUNS, Lemmatizer, clean_question, heading_questions, is_identifier,
                       name_questions, plural, sentence_questions, split_sentences, verb_slot_ok)

__all__ = ["GeneratedQuestion", "generate_offline", "OFFLINE_VERSION", "STYLE_PRIORITY"]

OFFLINE_VERSION = "offline-8"
STYLE_PRIORITY = {"link": 0, "doc_question": 1, "sentence": 2, "name": 3, "link_name": 4, "heading": 5}
MAX_COPIED_WORDS = 7
SPECIFIC_DF = 0.02  # a term in fewer than 2% of chunks says what the question is about
DEICTIC = {"it", "its", "this", "that", "these", "those", "they", "them", "their", "such", "here", "there", "above",
           "below", "following", "former", "latter", "one", "ones", "he", "she", "we", "us", "our"}
LABEL_LEADS = {"about", "more", "see", "click", "read", "learn", "go", "back", "this", "these", "here", "and", "or",
               "but", "also", "other"}  # a link text starting so is a pointer, not a topic
GENERIC_LABELS = {"here", "this", "this page", "above", "below", "link", "more", "details", "documentation",
                  "available here", "see", "see also", "next", "previous", "home", "index", "source", "download"}
DECLARATION = re.compile(r"^[\w\s\*]*?\b([A-Za-z_]\w{3,})\s*\(")
WORD = re.compile(r"[a-z][a-z0-9_']+")


@dataclass(frozen=True)
class GeneratedQuestion:
    text: str
    positives: tuple[str, ...]  # chunk ids: any of them answers the question
    style: str
    origin: str  # the chunk or linking page it was made from

    def to_dict(self) -> dict:
        return {"text": self.text, "positives": list(self.positives), "style": self.style, "origin": self.origin}


@dataclass
class _Chunk:
    rowid: int
    id: str
    page_url: str
    url: str
    title: str
    headings: tuple[str, ...]
    anchors: tuple[str, ...]
    text: str
    ord: int


def _longest_shared_run(question: str, text_words: set[tuple[str, ...]], n: int) -> bool:
    words = WORD.findall(question.lower())
    return any(tuple(words[i:i + n]) in text_words for i in range(len(words) - n + 1))


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = WORD.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _load(store: Store) -> list[_Chunk]:
    return [_Chunk(c.rowid, c.id, c.page_url, c.url, c.title, c.headings, c.anchors, c.text, c.ord)
            for c in store.iter_chunks(order="url")]


def _prose_sentences(text: str) -> list[str]:
    lines = [l for l in text.split("\n") if l.count("|") < 2 and not re.match(r"^\s*[{}#;]|^\s{4}", l)]
    return split_sentences(" ".join(l.lstrip("- ") for l in lines))


PER_TARGET = 5  # questions kept per target (section or chunk)


def generate_offline(store: Store, seed: int = 0, per_target: int = PER_TARGET) -> list[GeneratedQuestion]:
    """Questions for every section of the store, deterministic for a given seed and store."""
    chunks = _load(store)
    by_id = {c.id: c for c in chunks}
    vocabulary: set[str] = set()
    forms: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    after_to: dict[str, int] = defaultdict(int)  # "to apply": how the corpus uses a word as a verb
    after_article: dict[str, int] = defaultdict(int)  # "the index": ... and as a noun
    for c in chunks:
        for sentence in split_sentences(c.text):
            words = re.findall(r"[A-Za-z][A-Za-z0-9_']*", sentence)
            for i, w in enumerate(words):
                vocabulary.add(w.lower())
                if i:  # not sentence-initial: the case the corpus really uses
                    forms[w.lower()][w] += 1
                    if w.islower():
                        if words[i - 1] == "to":
                            after_to[w] += 1
                        elif words[i - 1].lower() in ("the", "a", "an"):
                            after_article[w] += 1
    case_forms = {low: max(f.items(), key=lambda kv: kv[1])[0] for low, f in forms.items()}
    lemmatizer = Lemmatizer(vocabulary, case_forms, after_to, after_article)
    sections: dict[str, list[_Chunk]] = defaultdict(list)  # chunk url (page#anchor) -> its chunks
    pages: dict[str, list[_Chunk]] = defaultdict(list)
    for c in chunks:
        sections[c.url].append(c)
        pages[c.page_url].append(c)

    candidates: list[GeneratedQuestion] = []

    def add(text: str | None, positives: list[_Chunk], style: str, origin: str) -> None:
        # a heading's how-to is already known to be a verb phrase (gerund, verb, verb + article)
        if text and (style == "heading" or verb_slot_ok(text, lemmatizer)):
            candidates.append(GeneratedQuestion(text, tuple(c.id for c in positives), style, origin))

    for url, members in sections.items():
        head = members[0]
        rng = random.Random(f"{seed}:{url}")
        if head.headings:
            for q in heading_questions(head.headings[-1], head.title, lemmatizer, rng):
                add(q, members, "heading", head.id)
        names = set()
        if head.headings and is_identifier(head.headings[-1]):
            names.add(head.headings[-1])
        first_line = head.text.split("\n", 1)[0]
        m = DECLARATION.match(first_line)
        if m and "_" in m.group(1) and head.ord == 0:
            names.add(m.group(1))
        for name in sorted(names):
            for q in name_questions(name, rng):
                add(q, members, "name", head.id)
        for c in members:
            crng = random.Random(f"{seed}:{c.id}")
            for sentence in _prose_sentences(c.text):
                words = sentence.split()
                if sentence.endswith("?") and 5 <= len(words) <= 25 and words[0].lower() in (
                        "how", "what", "why", "when", "where", "which", "can", "is", "are", "does", "do", "should"):
                    add(clean_question(sentence), [c], "doc_question", c.id)
                    continue
                for q, _rule in sentence_questions(sentence, crng, lemmatizer):
                    add(q, [c], "sentence", c.id)

    # links: how other pages describe a section
    page_set = set(pages)
    for page_url, target, text, context in store.all_links():
        base, _, anchor = target.partition("#")
        if base == page_url or base not in page_set:
            continue
        if anchor:
            members = [c for c in pages[base] if anchor in c.anchors]
        else:
            intro = pages[base][0].url
            members = sections[intro] if len(pages[base]) > 4 else pages[base]
        if not members:
            continue
        rng = random.Random(f"{seed}:{page_url}:{target}:{context}")
        context = context.lstrip("-*• ").strip()
        truncated = len(context) >= 300 and not context.endswith((".", "?", "!"))
        if context and len(context.split()) >= 6 and "→" not in context and not truncated:
            for q, _rule in sentence_questions(context, rng, lemmatizer):
                add(q, members, "link", page_url)
        label = text.strip().rstrip(".:")
        if label and not re.search(r"\.html?\b|/|^\W|^\d|[—→|]", label) and 2 <= len(label) <= 60 \
                and label.split()[0].lower() not in LABEL_LEADS | PREPOSITIONS \
                and not any(w in ("is", "are", "was", "were", "will", "can") for w in label.lower().split()) \
                and not (" " not in label and label.lower().endswith("ed") and not is_identifier(label)):
            if is_identifier(label):
                for q in name_questions(label, rng):
                    add(q, members, "link_name", page_url)
            elif 1 <= len(label.split()) <= 6 and label.lower() not in GENERIC_LABELS:
                first, _, rest = label.partition(" ")
                if rest.split()[:1] and rest.split()[0].lower() in ("a", "an", "the", "all", "multiple") \
                        and lemmatizer.is_verb(first, leading=True):  # "create a table", not "serialize method"
                    add(clean_question(f"How do I {first.lower()} {lemmatizer.natural(rest)}?"), members, "link_name",
                        page_url)
                    continue
                phrase = lemmatizer.natural(label)
                be = "are" if plural(phrase) else "is"
                add(clean_question(rng.choice([f"What {be} {{0}}?", "How do {0} work?" if be == "are"
                                               else "How does {0} work?"]).format(phrase)),
                    members, "link_name", page_url)

    # drop questions that name nothing specific ("What happens if it returns zero?"): a real
    # question carries at least one term that few chunks use
    df: dict[str, int] = defaultdict(int)
    for c in chunks:
        for w in set(WORD.findall(c.text.lower())):
            df[w] += 1
    rare = max(2, int(SPECIFIC_DF * len(chunks)))

    def specific(question: str) -> bool:
        words = [w.strip("'") for w in WORD.findall(question.lower())]
        if any(w in PRONOUNS and w not in ("i", "my", "me") for w in words):
            return False  # "it", "they", "we": a standalone question names its subject
        content = [w for w in words if w not in STOPWORDS and w not in DEICTIC]
        informative = [w for w in content if df.get(w, 0) <= rare]
        if not informative:
            return False
        deictic = sum(1 for w in words if w in DEICTIC)
        return not (deictic and len(informative) < 2)

    candidates = [q for q in candidates if specific(q.text)]

    # drop quotes of the answer, then ambiguous duplicates; keep a few per target, best styles first
    def content(ids: tuple[str, ...]) -> frozenset[str]:
        return frozenset(same_text_key(by_id[c].text) for c in ids)

    ngram_cache: dict[str, set] = {}
    kept: dict[str, GeneratedQuestion] = {}
    ambiguous: set[str] = set()
    for q in candidates:
        key = q.text.lower()
        words = {n for cid in q.positives[:8]
                 for n in ngram_cache.setdefault(cid, _ngrams(by_id[cid].text, MAX_COPIED_WORDS + 1))}
        if _longest_shared_run(q.text, words, MAX_COPIED_WORDS + 1):
            continue
        if key in kept and set(kept[key].positives) != set(q.positives):
            if content(kept[key].positives) == content(q.positives):  # the same text on two pages
                kept[key] = GeneratedQuestion(kept[key].text, tuple(dict.fromkeys(kept[key].positives + q.positives)),
                                              kept[key].style, kept[key].origin)
                continue
            ambiguous.add(key)
            continue
        if key not in kept or STYLE_PRIORITY[q.style] < STYLE_PRIORITY[kept[key].style]:
            kept[key] = q
    by_target: dict[tuple[str, ...], list[GeneratedQuestion]] = defaultdict(list)
    for key, q in kept.items():
        if key not in ambiguous:
            by_target[q.positives].append(q)
    out: list[GeneratedQuestion] = []
    for target in sorted(by_target):
        group = by_target[target]
        rng = random.Random(f"{seed}:{target[0]}")
        rng.shuffle(group)
        group.sort(key=lambda q: STYLE_PRIORITY[q.style])
        # a mix of styles: at most one per style first, then the rest by priority
        picked, seen_styles = [], set()
        for q in group:
            if q.style not in seen_styles:
                picked.append(q)
                seen_styles.add(q.style)
        for q in group:
            if q not in picked:
                picked.append(q)
        out.extend(picked[:per_target])
    return out


def offline_cache_key(store: Store) -> str:
    """Changes when anything the offline generator reads changes (chunks or links)."""
    digest = hashlib.sha256(f"{OFFLINE_VERSION}\x1f{PER_TARGET}".encode())
    hashes = store.chunk_embed_hashes()
    for chunk_id in sorted(hashes):
        digest.update(hashes[chunk_id].encode())
    for _page_url, *row in store.all_links():
        digest.update("\x1f".join(row).encode())
    return digest.hexdigest()
