"""Turning documentation text into questions people ask, with rules and no model.

People ask about goals ("how do I make the file smaller?"), meanings ("what is X?"),
behaviour ("what happens if ...?"), capabilities ("can I ...?", "does X support ...?") and
names they saw ("what does sqlite3_busy_timeout do?"). Documentation states the same things
as sentences ("Use VACUUM to make the file smaller", "If X, then Y", "X lets you Y"); the
rules below recognise those shapes and ask the question the sentence answers, keeping the
goal and leaving the answer out.
"""

from __future__ import annotations

import random
import re

from ..search_text import STOPWORDS

__all__ = ["sentence_questions", "heading_questions", "name_questions", "is_identifier", "split_sentences",
           "clean_question", "Lemmatizer"]

FIGURE = re.compile(r"^(?:figure|fig\.|table|listing|example)\s*\d", re.I)
DATED = re.compile(r"\b(?:19|20)\d\d-\d\d-\d\d\b|\b(?:release|version)\s+\d+\.\d+|\bv?\d+\.\d+\.\d+\b", re.I)
REQUIREMENT_ID = re.compile(r"\bR-\d{5}")
MODAL = {"can", "could", "may", "might", "must", "should", "will", "would", "does", "do", "did", "is", "are", "was",
         "were", "has", "have", "had", "means", "mean", "not", "also", "only", "then", "that", "which", "this",
         "these", "those", "it", "there", "if", "when", "where", "while", "whether", "each", "every", "and", "or"}
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'`])")
PAREN = re.compile(r"\s*\([^()]{0,120}\)")
IDENTIFIER = re.compile(r"^(?:[A-Za-z_][\w]*(?:(?:\.|::|->)[A-Za-z_]\w*)*(?:\(\))?|\.[a-z][\w-]*|--?[a-z][\w-]*|"
                        r"PRAGMA \w+|[A-Z][A-Z0-9_]{2,})$")
GENERIC_HEADINGS = {
    "overview": "What is {t}?", "introduction": "What is {t}?", "summary": "What is {t} in short?",
    "description": "What does {t} do?", "syntax": "What is the syntax of {t}?", "usage": "How do I use {t}?",
    "examples": "Is there an example of {t}?", "example": "Is there an example of {t}?",
    "limitations": "What are the limitations of {t}?", "details": "How does {t} work?",
    "parameters": "What parameters does {t} take?", "arguments": "What arguments does {t} take?",
    "return value": "What does {t} return?", "returns": "What does {t} return?",
    "configuration": "How do I configure {t}?", "installation": "How do I install {t}?",
    "requirements": "What does {t} require?", "notes": "What should I know about {t}?",
    "see also": None, "references": None, "contents": None, "table of contents": None, "index": None,
    "history": "What is the history of {t}?", "compatibility": "Is {t} compatible with older versions?",
    "performance": "How fast is {t}?", "security": "Is {t} secure?", "errors": "What errors can {t} give?",
    "faq": None, "license": "What is the license of {t}?", "background": "What is the background of {t}?",
}
HOWTO_VERBS = set("""
add allow avoid build call change check choose compile configure connect convert copy create customize debug
declare define delete deploy detect disable drop enable encrypt ensure export extend find fix get handle implement
import improve increase insert install limit list load make manage measure migrate modify monitor move open
optimize prevent read recover reduce register remove rename replace reset restore run save search select send
set setup share sort specify speed split start stop store test track tune update upgrade use verify write
""".split())
QUESTION_WORDS = ("how", "what", "why", "when", "where", "which", "who", "can", "is", "are", "does", "do",
                  "should", "will", "could", "may")


NOT_VERBS = {"be", "been", "being", "have", "has", "do", "does", "say", "see", "mean", "know", "think", "go", "come",
             "fall", "light", "port", "medium", "children", "completion", "rw", "several", "unused", "unrelated",
             "instead", "back", "already", "never", "always", "also", "either", "another", "every", "each"}
PRONOUNS = {"it", "its", "itself", "they", "them", "their", "themselves", "he", "she", "him", "her", "we", "us",
            "our", "i", "me", "my", "you", "your", "yourself"}
PREPOSITIONS = {"to", "of", "in", "on", "for", "with", "by", "at", "from", "as", "into", "about", "than", "via"}


LY_VERBS = {"apply", "supply", "reply", "comply", "rely", "imply", "multiply", "fly", "ally", "tally"}


def _inflected(w: str) -> bool:
    """An -ing form, an -ly adverb or an -ed participle, not a base verb ("apply", "embed", "exceed" are)."""
    return (w.endswith("ing") or (w.endswith("ly") and w not in LY_VERBS)
            or (w.endswith("ed") and not w.endswith("eed") and w != "embed"))


def corpus_verbs(to_counts: dict[str, int], determiner_counts: dict[str, int]) -> set[str]:
    """Base-form verbs as the corpus uses them: words written after "to" far more often than
    after an article ("to apply", never "the apply"), so "create" is a verb and "index" is not."""
    out = set()
    for w, n in to_counts.items():
        if n >= 3 and determiner_counts.get(w, 0) * 3 <= n and w.isalpha() and len(w) > 2 \
                and not _inflected(w) and w not in MODAL and w not in PRONOUNS \
                and w not in PREPOSITIONS and w not in NOT_VERBS and w not in STOPWORDS:
            out.add(w)
    return out


class Lemmatizer:
    """Word forms as the corpus writes them: gerunds back to base verbs, Title Case back to the
    case a word has in running text ("Size Of The SQLite Library" -> "size of the SQLite library"),
    and which words the corpus uses as verbs."""

    def __init__(self, vocabulary: set[str] | None = None, case_forms: dict[str, str] | None = None,
                 to_counts: dict[str, int] | None = None, determiner_counts: dict[str, int] | None = None):
        self.vocabulary = vocabulary or set()
        self.case_forms = case_forms or {}
        self.to_counts = to_counts or {}
        self.determiner_counts = determiner_counts or {}
        self.verbs = corpus_verbs(self.to_counts, self.determiner_counts)

    def natural(self, phrase: str) -> str:
        words = phrase.split(" ")
        out = []
        for w in words:
            if w[:1].isupper() and (w[1:].islower() or w == "A"):
                out.append(self.case_forms.get(w.lower(), w.lower()))
            else:
                out.append(w)
        return " ".join(out)

    def is_verb(self, word: str, leading: bool = False) -> bool:
        """Can ``word`` be a verb? ``leading``: is a phrase starting with it a verb phrase
        ("Apply A Changeset", not "Update Hooks"): then the corpus must use it as a verb far more
        often than as a noun."""
        w = word.lower()
        if w in self.verbs:
            return True
        if w not in HOWTO_VERBS:
            return False
        return not leading or self.determiner_counts.get(w, 0) * 3 <= self.to_counts.get(w, 0)

    def base(self, word: str) -> str:
        w = word.lower()
        candidates: list[str] = []
        if w.endswith("ing") and len(w) > 5:
            stem = w[:-3]
            candidates = [stem + "e", stem, stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2] else stem]
        elif w.endswith("ies") and len(w) > 4:
            candidates = [w[:-3] + "y"]
        elif w.endswith("es") and len(w) > 4:
            candidates = [w[:-2], w[:-1]]
        elif w.endswith("s") and not w.endswith("ss") and len(w) > 3:
            candidates = [w[:-1]]
        for c in candidates:
            if c in self.vocabulary or c in HOWTO_VERBS:
                return c
        return candidates[-1] if candidates else w


def plural(phrase: str) -> bool:
    last = phrase.split()[-1].lower() if phrase.split() else ""
    return last.endswith("s") and not last.endswith(("ss", "us", "is", "'s")) and len(last) > 3 \
        and not is_identifier(phrase.split()[-1])


def split_sentences(text: str) -> list[str]:
    flat = " ".join(text.split())
    return [s.strip() for s in SENTENCE_SPLIT.split(flat) if s.strip()]


def is_identifier(text: str) -> bool:
    text = text.strip()
    if not text or len(text) > 60 or " " in text.replace("PRAGMA ", ""):
        return False
    return bool(IDENTIFIER.match(text)) and (("_" in text) or text.endswith("()") or text.isupper()
                                             or bool(re.search(r"[a-z][A-Z]", text)) or text.startswith(("PRAGMA", ".", "-")))


def clean_question(text: str) -> str | None:
    q = PAREN.sub("", text)
    if "(" in q and ")" not in q[q.rfind("("):]:
        q = q[:q.rfind("(")]  # a parenthesis cut off by truncation
    q = " ".join(q.split()).strip(" ,;:-")
    q = re.sub(r"\s+([?,])", r"\1", q)
    q = re.sub(r"[.;:!]+\?$", "?", q)
    if not q.endswith("?"):
        q += "?"
    words = q.split()
    if len(words) < 3 or len(words) > 24:
        return None
    return q[0].upper() + q[1:]


def _clause(text: str, max_words: int = 16) -> str | None:
    """A goal clause: cut at the first clause boundary, drop trailing filler."""
    text = PAREN.sub("", text)
    text = re.split(r"(?:,|;| - | — |:| such as | e\.g\.| for example| because | since | which )", text)[0]
    text = text.strip(" .,;:")
    words = text.split()
    if not (2 <= len(words) <= max_words) or sum(1 for w in words if re.search(r"\d", w)) > 1:
        return None
    return text


def _you(text: str) -> str:
    """Documentation's third person to a user's first person."""
    text = re.sub(r"(?<![\w-])(?:the |an |your )?applications?(?![\w-])", "my application", text, flags=re.I)
    text = re.sub(r"(?<![\w-])(?:the )?(?:programmers?|developers?|users?|callers?)(?![\w-])", "I", text, flags=re.I)
    text = re.sub(r"(?<![\w-])your(?![\w-])", "my", text, flags=re.I)
    text = re.sub(r"(?<![\w-])you(?![\w-])", "I", text, flags=re.I)
    for wrong, right in (("I are", "I am"), ("I is", "I am"), ("I has", "I have"), ("I does", "I do"),
                         ("I was", "I was"), ("I were", "I was")):
        text = re.sub(rf"\b{wrong}\b", right, text)
    return text


SUBJECT = r"([A-Za-z_][\w.()\-]*(?: [\w.()\-]+){0,4}?)"
RULES: list[tuple[re.Pattern, list[str]]] = [
    (re.compile(r"^(?:To|In order to) ([^,]{8,120}), (.+)$", re.I), ["How do I {0}?", "How can I {0}?"]),
    (re.compile(r"\b(?:use|call|run|invoke|set) (?:the )?[\w.()\- ]{1,60}? (?:to|in order to) ([^,]{8,120})", re.I),
     ["How do I {0}?", "How can I {0}?"]),
    (re.compile(r"\b(?:can|may) be used to ([^,]{8,120})", re.I), ["How do I {0}?", "What can I use to {0}?"]),
    (re.compile(r"\b(?:is|are) used to ([^,]{8,120})", re.I), ["How do I {0}?", "What is used to {0}?"]),
    (re.compile(r"\b(?:allows?|lets?|enables?|permits?) (?:you|the application|applications|programmers|users|"
                r"the user|developers|one|callers?) to ([^,]{8,120})", re.I), ["How can I {0}?", "Is it possible to {0}?"]),
    (re.compile(r"\bmakes? it possible to ([^,]{8,120})", re.I), ["Is it possible to {0}?", "How can I {0}?"]),
    (re.compile(r"^If ([^,]{8,120}), (?:then )?(.+)$", re.I), ["What happens if {0}?", "What if {0}?"]),
    (re.compile(r"^When ([^,]{8,120}), (.+)$", re.I), ["What happens when {0}?"]),
    (re.compile(r"^(?:It is|It's) (not )?(possible|safe|recommended|necessary|legal|okay) to ([^,]{6,120})", re.I),
     ["Is it {1} to {2}?", "Can I {2}?"]),
    (re.compile(r"^" + SUBJECT + r" (?:does not|doesn't|do not|don't|cannot|can not|can't|will not|won't) "
                r"(?:support|allow|work with|handle) ([^,]{3,80})", re.I), ["Does {0} support {1}?", "Can {0} handle {1}?"]),
    (re.compile(r"^" + SUBJECT + r" (?:supports?|provides?|offers?) ([^,]{3,80})", re.I),
     ["Does {0} support {1}?", "Does {0} have {1}?"]),
    (re.compile(r"^" + SUBJECT + r" (?:returns?) ([^,]{3,80})", re.I), ["What does {0} return?"]),
    (re.compile(r"^" + SUBJECT + r" (?:causes?|results? in|leads? to) ([^,]{6,80})", re.I), ["What causes {1}?"]),
    (re.compile(r"^" + SUBJECT + r" (?:prevents?|avoids?) ([^,]{6,80})", re.I), ["How can I prevent {1}?",
                                                                                   "How do I avoid {1}?"]),
    (re.compile(r"^((?:The |An? )?" + SUBJECT[1:-1] + r") (?:is|are) (?:a|an|the) ([^,]{6,120})", re.I),
     ["What is {0}?", "What are {0} used for?"]),
    (re.compile(r"^By default, ([^,]{8,120})", re.I), ["What is the default behavior when {0}?"]),
]


VAGUE = {"rest", "remainder", "next", "previous", "following", "first", "last", "same", "other", "former", "latter",
         "result", "value", "number", "way", "case", "part", "thing", "one", "second", "third"}


def _subject_ok(subject: str) -> bool:
    words = [w for w in subject.lower().split() if w not in ("the", "a", "an")]
    return (bool(words) and not any(w in MODAL for w in words) and words[0] not in ("it", "this", "that", "they")
            and words[0] not in PREPOSITIONS and words[-1] not in PREPOSITIONS and words[0] not in VAGUE
            and not re.search(r"\s(?:The|A|An)\s", subject) and not DATED.search(subject)
            and not re.search(r"\d", subject))


def _fill(template: str, groups: tuple[str, ...], subject_groups: tuple[int, ...] = ()) -> str | None:
    for i in subject_groups:
        if i < len(groups) and groups[i] is not None and not _subject_ok(groups[i]):
            return None
    parts = []
    for g in groups:
        if g is None:
            parts.append("")
            continue
        c = _clause(_you(g))
        if c is None:
            return None
        first = c.split()[0]
        lower = first.lower() in ("a", "an", "the") or (not c[:2].isupper() and not is_identifier(first))
        parts.append(c[0].lower() + c[1:] if lower else c)
    try:
        return template.format(*parts)
    except (IndexError, KeyError):
        return None


VERB_SLOT = re.compile(r"^(?:How (?:do|can) I|What can I use to|Is it possible to|What is used to|Can I|"
                       r"Is it (?:not )?\w+ to) ([A-Za-z][\w'-]*)")


def verb_slot_ok(question: str, lemmatizer: "Lemmatizer") -> bool:
    """"How do I <verb> ...?": the word after "I" / "to" must be a verb ("How do I a queue?" is not a question)."""
    m = VERB_SLOT.match(question)
    return not m or lemmatizer.is_verb(m.group(1))


def sentence_questions(sentence: str, rng: random.Random, lemmatizer: "Lemmatizer | None" = None
                       ) -> list[tuple[str, str]]:
    """Questions a sentence answers: [(question, rule name)]."""
    lemmatizer = lemmatizer or Lemmatizer()
    s = sentence.strip().lstrip("-*• ").strip()
    if len(s.split()) < 5 or s.endswith("?") or "http" in s or s.count("|") > 1 or REQUIREMENT_ID.search(s):
        return []
    out = []
    for i, (pattern, templates) in enumerate(RULES):
        m = pattern.search(s)
        if not m:
            continue
        groups = m.groups()
        template = rng.choice(templates)
        if "What are {0}" in template and not plural(groups[0] or ""):
            template = template.replace("What are {0}", "What is {0}")
        q = _fill(template, groups, subject_groups=(0,) if pattern.pattern.startswith(("^(", "^(?:The")) else ())
        q = clean_question(q) if q else None
        if q and verb_slot_ok(q, lemmatizer) and q.lower() not in (x.lower() for x, _ in out):
            out.append((q, f"rule{i}"))
        if len(out) >= 2:
            break
    return out


def heading_questions(heading: str, title: str, lemmatizer: Lemmatizer, rng: random.Random) -> list[str]:
    """Questions a section with this heading answers."""
    h = " ".join(PAREN.sub("", heading).split()).strip(" .:")
    if not h or len(h) > 120 or re.fullmatch(r"[\d.\s()-]+", h):
        return []
    low = h.lower()
    if low.endswith("?") or (low.split()[0] in QUESTION_WORDS and len(low.split()) > 3):
        q = clean_question(lemmatizer.natural(h))  # "Why Isn't SQLite Coded In A Safe Language" as typed
        return [q] if q else []
    subject = lemmatizer.natural(title if title and title.lower() != low else h)
    if low in GENERIC_HEADINGS:
        template = GENERIC_HEADINGS[low]
        return [template.format(t=subject)] if template and subject else []
    first, _, rest = h.partition(" ")
    if first.lower().endswith("ing") and rest:
        verb = lemmatizer.base(first)
        rest = lemmatizer.natural(rest)
        return [q for q in (clean_question(f"How do I {verb} {rest}?"), clean_question(f"How can I {verb} {rest}?"))
                if q][:1 + (rng.random() < 0.3)]
    if rest and (lemmatizer.is_verb(first, leading=True) or (
            first.isalpha() and rest.split()[0].lower() in ("a", "an", "the") and first.lower() not in STOPWORDS)):
        q = clean_question(f"How do I {first.lower()} {lemmatizer.natural(rest)}?")
        return [q] if q else []
    if is_identifier(h):
        return name_questions(h, rng)
    if FIGURE.match(h):
        return []
    np_ = lemmatizer.natural(h)
    if DATED.search(h):
        return [q for q in (clean_question(rng.choice(["What changed in {0}?", "What is new in {0}?"]).format(np_)),) if q]
    be = "are" if plural(np_) else "is"
    templates = [f"What {be} {{0}}?", "How does {0} work?" if be == "is" else "How do {0} work?",
                 f"What {be} {{0}} for?", f"What {be} {{0}} used for?"]
    if len(h.split()) <= 2 and title and low not in title.lower() and not is_identifier(h) and "-" not in h:
        # a short heading needs its page for context: "What are registers in the SQLite bytecode engine?"
        context = lemmatizer.natural(title[0].lower() + title[1:] if title.lower().startswith(("the ", "a ")) else title)
        templates = [f"What {be} {{0}} in {context}?",
                     f"How does {{0}} work in {context}?" if be == "is" else f"How do {{0}} work in {context}?",
                     f"What {be} {{0}} used for in {context}?"]
    picks = rng.sample(templates, 2)
    out = []
    for t in picks:
        q = clean_question(t.format(np_))
        if q:
            out.append(q)
    return out[:1 + (rng.random() < 0.3)]


def name_questions(name: str, rng: random.Random) -> list[str]:
    """Questions about an API name, option or setting someone saw somewhere."""
    name = name.strip()
    templates = ["What does {0} do?", "How do I use {0}?", "What is {0} for?", "When should I use {0}?",
                 "What is {0}?"]
    q = clean_question(rng.choice(templates).format(name))
    return [q] if q else []
