"""Parsing keeps structure: titles, heading paths and the anchors of enclosing sections."""

from __future__ import annotations

import time

import pytest

from shared.documents import RawPage
from shared.parsers import ParseError, parse
from shared.parsers.html import parse_html


def _block(page, needle):
    return next(b for b in page.blocks if needle in b.text)


def test_sqlite_rowid_section_has_its_anchor(small_docs):
    page = parse_html((small_docs / "lang_createtable.html").read_text())
    assert page.title == "CREATE TABLE"
    block = _block(page, "Except for WITHOUT ROWID tables, all rows within SQLite tables have a 64-bit")
    assert block.headings == ("ROWIDs and the INTEGER PRIMARY KEY",)  # section number stripped
    assert block.anchors == ("rowid", "rowids_and_the_integer_primary_key")  # <a name> before the heading, innermost last


def test_anchor_without_heading_opens_a_region(small_docs):
    page = parse_html((small_docs / "lang_altertable.html").read_text())
    titles = {b.headings[-1] for b in page.blocks if b.headings}
    assert "Making Other Kinds Of Table Schema Changes" in titles
    block = _block(page, "The only schema altering commands directly supported by SQLite")
    assert block.anchors[-1] in ("otheralter", "making_other_kinds_of_table_schema_changes")


def test_site_chrome_is_dropped_but_links_are_kept(small_docs):
    page = parse_html((small_docs / "c3ref/busy_timeout.html").read_text())
    text = "\n".join(b.text for b in page.blocks)
    assert "Search Documentation" not in text  # the search menu
    assert "function toggle_div" not in text  # scripts
    assert "sleeps for a specified amount of time when a table is locked" in text
    assert any(link.href.endswith("busy_handler.html") for link in page.links)


def test_heading_ids_nesting_and_hidden_elements():
    html = """<html><head><title>Guide</title></head><body>
      <nav><a href="/x">Home</a> <a href="/y">Docs</a></nav>
      <h1 id="guide">Guide</h1><p>Intro text.</p>
      <section id="install"><h2>Install <a class="headerlink" href="#install">¶</a></h2>
        <p>Run the installer.</p>
        <h3 id="linux">On Linux</h3><p>Use apt.</p>
        <div style="display:none">secret hidden text</div>
      </section>
      <h2 id="use">Use</h2><ul><li>First step</li><li>Second step</li></ul>
      <table><tr><th>Option</th><th>Meaning</th></tr><tr><td>-v</td><td>verbose</td></tr></table>
      <pre>line one
    indented line</pre>
    </body></html>"""
    page = parse_html(html)
    assert page.title == "Guide"
    linux = _block(page, "Use apt.")
    assert linux.headings == ("Guide", "Install", "On Linux")
    assert linux.anchors == ("guide", "install", "linux")
    assert _block(page, "Run the installer.").anchors == ("guide", "install")
    assert _block(page, "First step").text == "- First step"
    assert _block(page, "verbose").text == "Option | Meaning\n-v | verbose"
    assert _block(page, "line one").text == "line one\n    indented line"
    assert _block(page, "First step").anchors == ("guide", "use")
    assert all("secret hidden" not in b.text and "Home" != b.text for b in page.blocks)


def test_markdown_gets_github_style_anchors():
    md = "---\ntitle: Setup guide\n---\n# Setup\n\nIntro.\n\n## Install on macOS\n\nUse `brew install x`.\n"
    page = parse(RawPage(url="setup.md", content=md.encode(), content_type="markdown", path="setup.md"))
    assert page.title == "Setup guide"
    block = _block(page, "brew install x")
    assert block.headings == ("Setup", "Install on macOS")
    assert block.anchors == ("setup", "install-on-macos")


def test_rst_sections_and_no_file_inclusion(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET CONTENT")
    rst = f"""Config guide
============

Intro paragraph.

Options
-------

The ``--fast`` option skips checks.

.. include:: {secret}

.. raw:: html

   <script>alert(1)</script>
"""
    page = parse(RawPage(url="guide.rst", content=rst.encode(), content_type="rst", path="guide.rst"))
    assert page.title == "Config guide"
    block = _block(page, "option skips checks")
    assert block.headings[-1] == "Options"
    assert block.anchors[-1] == "options"
    text = " ".join(b.text for b in page.blocks)
    assert "TOP SECRET" not in text and "alert(1)" not in text


def test_plain_text_paragraphs():
    page = parse(RawPage(url="notes.txt", content=b"First para\nstill first.\n\nSecond para.", content_type="text",
                         path="notes.txt"))
    assert [b.text for b in page.blocks] == ["First para\nstill first.", "Second para."]
    assert page.title == "notes.txt"


@pytest.mark.parametrize("content,reason", [
    (b"", "empty"),
    (b"   \n\t ", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    (b"<html><body><p>caf\xe9 cr\xe8me</p></body></html>", "invalid utf-8 at byte"),
    (b"<html><body><script>var x = 1;</script></body></html>", "no text content"),
])
def test_bad_content_is_refused_with_a_reason(content, reason):
    with pytest.raises(ParseError, match=f"(?i){reason}"):
        parse(RawPage(url="bad.html", content=content, content_type="html", path="bad.html"))


def test_declared_charset_is_honoured():
    html = '<html><head><meta charset="iso-8859-1"><title>Caf\xe9</title></head><body><p>cr\xe8me</p></body></html>'
    page = parse(RawPage(url="x.html", content=html.encode("latin-1"), content_type="html"))
    assert page.title == "Café" and page.blocks[0].text == "crème"


def test_nested_broken_html_does_not_crash():
    html = "<html><body>" + "<div><span>" * 400 + "deep text" + "<p>unclosed <b>bold <i>both" * 50
    page = parse_html(html)
    assert any("deep text" in b.text for b in page.blocks)


# -- work per page is bounded (the tree builder's time grows with depth x tags) -------------------

def _timed(fn, *args):
    started = time.perf_counter()
    try:
        return fn(*args), time.perf_counter() - started
    except ParseError as exc:
        return exc, time.perf_counter() - started


@pytest.mark.parametrize("unit", ["<div>", "<span>", "<ul><li>", "<table><tr><td>", "<div/>", "<svg><g>"])
def test_a_page_nested_too_deeply_is_refused_before_it_is_parsed(unit):
    """100,000 nested divs took 14.5 s (lexbor alone: quadratic); a 5 MB page about 25 minutes."""
    html = "<html><body>" + unit * 100_000 + "deep" + "</div>" * 100_000
    result, seconds = _timed(parse_html, html)
    assert isinstance(result, ParseError) and "nested more than 1,000 elements deep" in str(result)
    assert seconds < 1.0


def test_depth_is_estimated_like_the_tree_builder_builds_it():
    from shared.parsers.nesting import nesting_depth

    closed = "<div><p>text<span>x</span><br><img src=a></div>" * 50_000  # wide, not deep
    assert nesting_depth("<html><body>" + closed, 1000) <= 3
    unclosed_spans = "<div><span>unclosed</div>" * 50_000  # </div> closes the span too
    assert nesting_depth(unclosed_spans, 1000) <= 2
    in_script = "<script>" + "<div>" * 50_000 + "</script><p>after</p>"  # script text is not markup
    assert nesting_depth(in_script, 1000) <= 1
    in_comment = "<!--" + "<div>" * 50_000 + "-->"
    assert nesting_depth(in_comment, 1000) == 0
    svg = "<svg>" + '<path d="M0 0"/>' * 50_000 + "</svg>"  # self-closing in foreign content
    assert nesting_depth(svg, 1000) == 1


def test_a_heading_with_many_nested_parts_is_read_in_linear_time():
    """Each text node of a heading used to walk up to the heading: 8,000 nested spans, 3 minutes."""
    html = "<h1>" + "<span>" * 900 + "<b>x</b>" * 100_000 + "</h1><p>body text</p>"
    page, seconds = _timed(parse_html, html)
    assert not isinstance(page, ParseError) and seconds < 10
    assert page.blocks[0].headings[0] == "x" * 200  # cut at MAX_HEADING_CHARS


def test_anchors_waiting_for_a_heading_are_bounded():
    """40,000 anchors before a heading took a minute, and every block carried all of them."""
    html = "".join(f'<a name="a{i}"></a>' for i in range(40_000)) + '<h2 id="t">T</h2><p>text</p>'
    page, seconds = _timed(parse_html, html)
    assert seconds < 10
    block = _block(page, "text")
    assert len(block.anchors) == 17 and block.anchors[-1] == "t" and block.anchors[-2] == "a39999"  # 16 + its own


def test_a_paragraph_with_many_links_is_read_in_linear_time():
    """10,000 links in one paragraph took two minutes: each link's sentence was searched from the start."""
    html = "<p>" + "".join(f'<a href="p{i}.html">link number {i}</a> and words ' for i in range(30_000)) + "</p>"
    page, seconds = _timed(parse_html, html)
    assert seconds < 15
    assert len(page.links) == 20_000  # at most MAX_LINKS per page
    assert page.links[12_345].text == "link number 12345" and "link number 12345" in page.links[12_345].context


def test_a_slow_page_is_stopped_at_the_time_limit_and_the_parser_goes_on():
    """markdown-it reads 200,000 "[" in about 12 s (linear, but a 5 MB page would take 5 minutes)."""
    from shared.parsers.worker import ParserProcess

    slow = RawPage(url="slow.md", content=b"[" * 200_000, content_type="markdown", path="slow.md")
    fine = RawPage(url="fine.md", content=b"# Fine\n\nA page.\n", content_type="markdown", path="fine.md")
    with ParserProcess(time_limit=1.0) as parser:
        started = time.perf_counter()
        with pytest.raises(ParseError, match="parsing took longer than 1 s"):
            parser.parse(slow)
        assert time.perf_counter() - started < 5
        assert parser.parse(fine).title == "Fine"  # a fresh child took over
        assert parser.parse(RawPage(url="x.html", content=b"<p>ok</p>", content_type="html")).blocks[0].text == "ok"


def test_the_parser_process_gives_what_parsing_in_process_gives(small_docs):
    from shared.parsers.worker import ParserProcess

    with ParserProcess() as parser:
        for name in ("lang_createtable.html", "c3ref/busy_timeout.html"):
            raw = RawPage(url=name, content=(small_docs / name).read_bytes(), content_type="html", path=name)
            assert parser.parse(raw) == parse(raw)
        with pytest.raises(ParseError, match="empty file"):
            parser.parse(RawPage(url="e.html", content=b"", content_type="html"))
