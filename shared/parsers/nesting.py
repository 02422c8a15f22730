"""How deeply an HTML text nests, estimated in linear time before it is parsed.

An HTML tree builder walks its stack of open elements for many tags (is a ``<p>`` open in
scope? which element does this end tag close?), so parse time grows with nesting depth times
the number of tags: 50,000 nested ``<div>``s take half a minute, a 5 MB page of them about
25 minutes. Real pages nest a few dozen deep. This scan follows the tree builder closely
enough to estimate the depth it will reach (end tags close what they match, elements that
close themselves never build depth, script and style bodies are not markup), so such a page
is refused before the parser sees it.
"""

from __future__ import annotations

import re

__all__ = ["nesting_depth"]

VOID = frozenset("area base br col embed hr img input link meta param source track wbr basefont bgsound frame "
                 "keygen image".split())
# end tag optional, closed by a sibling or a block: these never make the tree deeper
SELF_CLOSING = frozenset("p li dt dd option optgroup tr td th thead tbody tfoot colgroup caption rb rt rtc rp "
                         "html head body".split())
RAW_TEXT = frozenset("script style textarea title xmp iframe noembed noframes noscript plaintext".split())
FOREIGN = frozenset(("svg", "math"))  # inside these, <x/> closes itself
TOKEN = re.compile(r"<!--|<[!?]|<(/?)([A-Za-z][^\s/>]*)")


def nesting_depth(html: str, stop_at: int) -> int:
    """The deepest nesting of elements the tree builder will reach (an estimate); the scan stops
    as soon as it passes ``stop_at``."""
    if html.count("<") <= stop_at:  # too few tags to nest that deep
        return 0
    stack: list[str] = []
    open_count: dict[str, int] = {}
    foreign = 0
    deepest = 0
    pos = 0  # tokens before this are inside a comment or a script: not markup

    def pop_to(name: str) -> None:
        nonlocal foreign
        while stack:
            top = stack.pop()
            open_count[top] -= 1
            if top in FOREIGN:
                foreign -= 1
            if top == name:
                return

    for m in TOKEN.finditer(html):
        if m.start() < pos:
            continue
        name = m.group(2)
        if name is None:  # a comment, doctype, CDATA or processing instruction
            end = html.find("-->" if m.group() == "<!--" else ">", m.end())
            if end < 0:
                break
            pos = end + 1
            continue
        name = name.lower()
        if m.group(1):  # an end tag closes the element it names, and all open inside it
            if open_count.get(name):
                pop_to(name)
            continue
        if name in VOID or name in SELF_CLOSING:
            continue
        if name in RAW_TEXT and not foreign:  # its text runs to its end tag
            end = re.compile("</" + name, re.I).search(html, m.end())
            if end is None:
                break
            pos = end.start()
            continue
        if foreign:
            gt = html.find(">", m.end())
            if gt > 0 and html[gt - 1] == "/":
                continue
        if name == "a" and open_count.get("a"):  # a link inside a link closes the first one
            pop_to("a")
        stack.append(name)
        open_count[name] = open_count.get(name, 0) + 1
        if name in FOREIGN:
            foreign += 1
        if len(stack) > deepest:
            deepest = len(stack)
            if deepest > stop_at:
                break
    return deepest
