"""Chunks fit the embedder, keep their section, and have stable ids."""

from __future__ import annotations

from shared.chunking import chunk_page
from shared.documents import Block, ParsedPage
from shared.parsers.html import parse_html
from shared.tokens import count_tokens


def test_every_chunk_of_real_pages_fits_the_embedder_window(small_docs, embedder):
    total = 0
    for name in ("lang_createtable.html", "fts5.html", "json1.html", "datatype3.html"):
        page = parse_html((small_docs / name).read_text())
        chunks = chunk_page(page, name, max_tokens=180, fits=embedder.fits)
        total += len(chunks)
        for chunk in chunks:
            assert chunk.n_tokens <= 180
            assert embedder.count_tokens(chunk.embed_text) <= embedder.max_tokens == 256
    assert total > 100


def test_window_check_splits_what_tiktoken_undercounts(embedder):
    # hex digests are few tiktoken tokens but many word pieces: the embedder's own count must win
    text = " ".join(f"{i:064x}" for i in range(40))
    page = ParsedPage(title="Hashes", blocks=[Block(text=text, headings=("Checksums",), anchors=("sums",))])
    unchecked = chunk_page(page, "h.html", max_tokens=2000)
    assert embedder.count_tokens(unchecked[0].embed_text) > 256
    chunks = chunk_page(page, "h.html", max_tokens=2000, fits=embedder.fits)
    assert len(chunks) > 1
    assert all(embedder.fits(c.embed_text) for c in chunks)
    assert " ".join(c.text for c in chunks).split() == text.split()  # nothing lost


def test_chunks_keep_section_boundaries_and_anchor_urls():
    blocks = [Block("alpha " * 30, ("A",), ("a",)), Block("beta " * 30, ("A",), ("a",)),
              Block("gamma " * 30, ("A", "B"), ("a", "b"))]
    chunks = chunk_page(ParsedPage(title="T", blocks=blocks), "https://d.example/p.html", max_tokens=180)
    assert [c.url for c in chunks] == ["https://d.example/p.html#a", "https://d.example/p.html#b"]
    assert chunks[0].text.count("alpha") == 30 and "gamma" not in chunks[0].text
    assert chunks[1].embed_text.startswith("T > A > B\n")


def test_long_sections_are_split_by_sentences_within_the_budget():
    sentences = [f"Sentence number {i} explains one more detail of the feature." for i in range(80)]
    chunks = chunk_page(ParsedPage(title="T", blocks=[Block(" ".join(sentences), ("S",), ("s",))]), "p", 60)
    assert len(chunks) >= 10
    assert all(count_tokens(c.text) <= 60 for c in chunks)
    assert all(c.text.endswith(".") for c in chunks)  # cut at sentence ends, not mid-sentence
    assert " ".join(c.text for c in chunks) == " ".join(sentences)


def test_ids_are_stable_and_depend_on_text_and_place():
    page = ParsedPage(title="T", blocks=[Block("same words here", ("A",), ("a",)), Block("other", ("B",), ("b",))])
    first = chunk_page(page, "u.html")
    again = chunk_page(page, "u.html")
    assert [c.id for c in first] == [c.id for c in again]
    moved = chunk_page(page, "v.html")
    assert first[0].id != moved[0].id
    edited = chunk_page(ParsedPage(title="T", blocks=[Block("same words here", ("A",), ("a",)),
                                                      Block("changed", ("B",), ("b",))]), "u.html")
    assert edited[0].id == first[0].id and edited[1].id != first[1].id


def test_repeated_text_in_one_section_gets_distinct_ids():
    blocks = [Block("x " * 150, ("A",), ("a",)), Block("x " * 150, ("A",), ("a",))]
    chunks = chunk_page(ParsedPage(title="T", blocks=blocks), "u.html", max_tokens=160)
    assert len(chunks) == 2 and chunks[0].id != chunks[1].id
    assert [c.id for c in chunk_page(ParsedPage(title="T", blocks=blocks), "u.html", max_tokens=160)] == \
        [c.id for c in chunks]
