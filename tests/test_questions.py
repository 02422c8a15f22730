"""The offline question generator: questions read like what people ask, on real SQLite pages."""

from __future__ import annotations

import random
import re

from shared.questions.offline import generate_offline
from shared.questions.phrasing import Lemmatizer, heading_questions, sentence_questions

# verbs a corpus writes after "to" and never after an article, as generate_offline counts them
LEMMATIZER = Lemmatizer(to_counts={"apply": 9, "obtain": 7, "store": 5},
                        determiner_counts={"store": 0, "index": 40, "update": 30},
                        case_forms={"a": "a", "to": "to", "the": "the", "database": "database",
                                    "changeset": "changeset", "engine": "engine", "bytecode": "bytecode"})


def _heading(heading: str, title: str = "") -> list[str]:
    return heading_questions(heading, title, LEMMATIZER, random.Random(0))


def test_an_example_heading_asks_for_an_example():
    # (not "Can you show ...": a question with "you" in it is dropped as leaning on a pronoun)
    assert _heading("Examples", "The WITH Clause") == ["Is there an example of the WITH clause?"]


def test_verbs_are_read_from_the_corpus():
    # "to apply" 9 times, never "the apply": a verb, although it ends like an adverb
    assert LEMMATIZER.is_verb("apply", leading=True) and LEMMATIZER.is_verb("obtain", leading=True)
    assert not Lemmatizer().is_verb("apply")  # no corpus, no evidence
    # "the index" 40 times: a noun, whatever a dictionary says; "update" is a verb only inside "How do I ..."
    assert not LEMMATIZER.is_verb("index") and not LEMMATIZER.is_verb("update", leading=True)
    assert LEMMATIZER.is_verb("update")


def test_a_verb_phrase_heading_becomes_a_how_to_question():
    assert _heading("Apply Changesets To A Database") == ["How do I apply changesets to a database?"]
    assert _heading("Obtain The Primary Key") == ["How do I obtain the primary key?"]
    # a word the corpus uses as a noun is not read as a verb: "Update Hooks" is a thing
    update_hooks = _heading("Update Hooks")
    assert update_hooks and all(not q.startswith("How do I update") for q in update_hooks)


def test_a_short_heading_gets_its_page_as_context_and_agrees_in_number():
    questions = _heading("Registers", "The SQLite Bytecode Engine")
    assert questions and all("in the SQLite bytecode engine" in q for q in questions)
    assert all(q.startswith(("What are registers", "How do registers")) for q in questions), questions
    assert all(" is registers" not in q and "registers of" not in q for q in questions)


def test_a_question_heading_is_kept_in_running_case():
    assert _heading("What Is A Recommended Storage Format") == ["What is a recommended storage format?"]


def test_sentence_rules_leave_no_verbless_how_to():
    # "is used to a queue": no verb after "to"; "the developers" become "I"
    verbless = [q for q, _ in sentence_questions("A recursive common table expression is used to a queue of rows.",
                                                 random.Random(0), LEMMATIZER)]
    assert not any(re.match(r"^(How (do|can) I|What is used to) a ", q) for q in verbless), verbless
    # the same rule with a verb after "to" does ask the how-to
    assert any(q.startswith("How do I apply") or q == "What is used to apply the changes of rows?" for q, _ in
               sentence_questions("A recursive common table expression is used to apply the changes of rows.",
                                  random.Random(0), LEMMATIZER))
    got = [q for q, _ in sentence_questions("Developers can use the zeroblob function to store large blobs.",
                                            random.Random(0), LEMMATIZER)]
    assert got and all(re.match(r"^(How (do|can) I store|What can I use to store)", q) for q in got), got


def test_generated_questions_read_like_questions(store_copy):
    questions = generate_offline(store_copy)
    assert len(questions) > 200
    texts = [q.text for q in questions]
    by_style = {q.style for q in questions}
    assert {"heading", "link_name", "sentence", "name"} <= by_style
    for text in texts:
        assert text.endswith("?") and text[0].isupper(), text
        # a standalone question names its subject: no "it" or "they" pointing at nothing
        assert not re.search(r"\b(it|its|they|them|their|we|our|yourself)\b", text, re.I), text
        # "How do I <verb>", never "How do I the ..." or "How do I a ..."
        assert not re.match(r"^(How (do|can) I|What can I use to|Is it possible to) "
                            r"(the|a|an|be|it|this|[a-z]+ing|(?!apply|supply|reply|rely)[a-z]+ly)\b", text), text
        # Title Case from headings is brought back to running text
        assert not re.search(r"\s(The|A|An)\s", text), text
    # verb-phrase headings of the real pages are asked as how-tos ("Building The Amalgamation")
    assert any(q.style == "heading" and q.text.startswith("How do I") for q in questions)
