"""How a person might ask the same question another time: for simulations only.

Swaps the question's frame for an equivalent one ("How do I X?" -> "how to X", "What does X
do?" -> "what is X for?") and sometimes drops the capital and the question mark, as people do
in chat. The subject of the question is kept word for word.
"""

from __future__ import annotations

import random
import re

FRAMES = [
    (r"^How do I (.+)\?$", ["How can I {0}?", "how to {0}", "Is there a way to {0}?", "what's the way to {0}?"]),
    (r"^How can I (.+)\?$", ["How do I {0}?", "how to {0}", "Is it possible to {0}?"]),
    (r"^What is (.+?) used for\?$", ["What is {0} for?", "why would I use {0}?", "when do I need {0}?"]),
    (r"^What is (.+?) for\?$", ["What is {0} used for?", "why would I use {0}?"]),
    (r"^What does (.+) do\?$", ["What is {0} for?", "what's {0} do?", "explain {0}"]),
    (r"^What does (.+) mean\?$", ["what is meant by {0}?", "explain {0}"]),
    (r"^What is (.+)\?$", ["what's {0}?", "Can you explain {0}?", "{0} - what is it?"]),
    (r"^What are (.+)\?$", ["can you explain {0}?", "what are {0} exactly?"]),
    (r"^How does (.+) work\?$", ["explain how {0} works", "how does {0} work exactly?"]),
    (r"^How do (.+) work\?$", ["explain how {0} work", "how do {0} work exactly?"]),
    (r"^When should I use (.+)\?$", ["when do I use {0}?", "in which cases should I use {0}?"]),
    (r"^What happens if (.+)\?$", ["what if {0}?", "what's the behavior if {0}?"]),
    (r"^What if (.+)\?$", ["what happens if {0}?"]),
    (r"^Does (.+) support (.+)\?$", ["can {0} do {1}?", "is {1} supported by {0}?"]),
    (r"^What changed in (.+)\?$", ["what's new in {0}?", "changes in {0}?"]),
    (r"^What is new in (.+)\?$", ["what changed in {0}?", "changes in {0}?"]),
]


def rephrase(text: str, rng: random.Random) -> str:
    for pattern, options in FRAMES:
        m = re.match(pattern, text, re.I)
        if m:
            out = rng.choice(options).format(*m.groups())
            break
    else:
        out = text.rstrip("?") + (" ?" if rng.random() < 0.5 else "")
    if rng.random() < 0.5:
        out = out[0].lower() + out[1:]
    return out if out != text else text.lower().rstrip("?")
