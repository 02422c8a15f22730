"""Parsing keeps structure: titles, heading paths and the anchors of enclosing sections."""

from __future__ import annotations

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


def test_deeply_nested_broken_html_does_not_crash():
    html = "<html><body>" + "<div><span>" * 5000 + "deep text" + "<p>unclosed <b>bold <i>both" * 50
    page = parse_html(html)
    assert any("deep text" in b.text for b in page.blocks)
