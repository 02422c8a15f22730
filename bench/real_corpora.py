"""Documentation corpora with real questions, for benchmarks: each project's own FAQ.

    python bench/real_corpora.py --out DIR [--debs DIR] [NAME ...]

Every corpus comes from a Debian documentation package (`apt-get download`, then `dpkg -x`),
and its real questions from the same project's FAQ: questions written by the project's
maintainers whose answers link into the rest of the docs. The FAQ pages themselves are kept
out of the corpus, so a question is scored against the pages its answer links to, never against
its own answer. Writes DIR/NAME/corpus/ (the folder to ingest) and DIR/NAME/questions.jsonl
({"id", "query", "relevant": [pages], "relevant_sections": [page#anchor, ...]}).

| name | package | FAQ |
|---|---|---|
| sqlite | (the bundled demo corpus) | faq.html, shared/data/sqlite-faq.jsonl |
| python | python3.11-doc | faq/*.html (a question is an h3 that opens its section) |
| django | python-django-doc | faq/*.html (h2/h3 headings that ask) |
| sqlalchemy | python-sqlalchemy-doc | faq/*.html (h2/h3 headings that ask) |
| git | git-doc | gitfaq.html (a question is a <dt>, its answer the <dd>) |
| perl | perl-doc | perlfaq1-9.pod (a question is a =head2; links are L<page/section>); pages converted by pod2html |
"""

from __future__ import annotations

import argparse
import json
import posixpath
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
MAX_PAGES = 5  # questions whose answer links to more pages are left out


@dataclass(frozen=True)
class Corpus:
    name: str
    package: str | None  # the Debian package, or None for the bundled demo corpus
    html: str  # the package's HTML folder, relative to the extracted root
    base_url: str
    keep: Callable[[str], bool]  # relative path -> part of the corpus?
    questions: Callable[[Path, Callable[[str], bool]], list[dict]]  # (html folder, keep) -> questions


def _relevant(page_rel: str, hrefs: list[str], html: Path, keep) -> tuple[list[str], list[str]]:
    """The corpus pages (and page#anchor sections) that a FAQ answer's links point at."""
    pages: list[str] = []
    sections: list[str] = []
    for href in hrefs:
        if not href or href.startswith(("#", "mailto:")) or "://" in href:
            continue
        target = posixpath.normpath(posixpath.join(posixpath.dirname(page_rel), href))
        path = target.split("#")[0]
        if not keep(path) or not (html / path).is_file():
            continue
        if path not in pages:
            pages.append(path)
        if target not in sections:
            sections.append(target)
    return pages, sections


def _text(node) -> str:
    return " ".join(node.text(strip=False).replace("¶", " ").split())


def _is_section(node) -> bool:
    return node.tag == "section" or (node.tag == "div" and "section" in (node.attributes.get("class") or "").split())


def _section_of(node):
    node = node.parent
    while node is not None and not _is_section(node):
        node = node.parent
    return node


def sphinx_faq(pattern: str, levels: tuple[str, ...], asks_only: bool):
    """Sphinx FAQ pages: each section whose heading (one of ``levels``) opens it is a question;
    the links in its body, outside nested question sections, are its answer's links."""

    def extract(html: Path, keep) -> list[dict]:
        from selectolax.lexbor import LexborHTMLParser

        out = []
        for page in sorted(html.glob(pattern)):
            rel = page.relative_to(html).as_posix()
            tree = LexborHTMLParser(page.read_text(encoding="utf-8"))
            for section in (n for n in tree.css("section, div") if _is_section(n)):
                heading = next((c for c in section.iter() if c.tag in ("h1", "h2", "h3", "h4")), None)
                if heading is None or heading.tag not in levels:
                    continue
                question = _text(heading)
                if asks_only and not question.endswith("?"):
                    continue
                hrefs = [link.attributes.get("href") or "" for link in section.css("a.reference.internal")
                         if _section_of(link).mem_id == section.mem_id]  # a nested section's links are its own
                pages, sections = _relevant(rel, hrefs, html, keep)
                if pages:
                    out.append({"id": f"{rel}#{section.attributes.get('id')}", "query": question,
                                "relevant": pages, "relevant_sections": sections})
        return out

    return extract


def git_faq(html: Path, keep) -> list[dict]:
    """gitfaq.html: a definition list; each <dt> asks, the <dd> after it answers."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser((html / "gitfaq.html").read_text(encoding="utf-8"))
    out = []
    for n, dt in enumerate(tree.css("dt")):
        dd = dt.next
        while dd is not None and dd.tag != "dd":
            dd = dd.next
        if dd is None:
            continue
        question = _text(dt)
        pages, sections = _relevant("gitfaq.html", [a.attributes.get("href") or "" for a in dd.css("a")], html, keep)
        if pages and question.endswith("?"):
            out.append({"id": f"gitfaq.html#q{n}", "query": question, "relevant": pages,
                        "relevant_sections": sections})
    return out


def sqlite_faq(html: Path, keep) -> list[dict]:
    return [json.loads(line) for line in (ROOT / "shared" / "data" / "sqlite-faq.jsonl").read_text().splitlines()
            if line.strip()]


POD_LINK = re.compile(r"L<(?:[^<>|]*\\|)?([A-Za-z0-9_:]+)(?:/\"?([^\">]*)\"?)?>")
POD_ID = re.compile(r'id="([^"]+)"')


def _pod_anchor(text: str) -> str:
    """pod2html's anchor for a section name: runs of non-word characters become one dash."""
    return re.sub(r"\W+", "-", text).strip("-")


def perl_faq(html: Path, keep) -> list[dict]:
    """perlfaq1-9.pod: each =head2 asks; its L<page/section> links (to pages of the corpus) answer."""
    pod = html.parent / "pod"
    ids: dict[str, list[str]] = {}
    out = []
    for faq in sorted(pod.glob("perlfaq[1-9].pod")):
        parts = re.split(r"^=head2\s+(.+)$", re.sub(r"^=head1.*$", "=head2 -", faq.read_text(encoding="utf-8"),
                                                     flags=re.M), flags=re.M)
        for n, (question, body) in enumerate(zip(parts[1::2], parts[2::2])):
            question = re.sub(r"[A-Z]<{1,2}\s*(.*?)\s*>{1,2}", r"\1", question).strip()
            if question == "-" or not question.endswith("?"):
                continue
            pages, sections = [], []
            for name, section in POD_LINK.findall(body):
                page = f"{name}.html"
                if name.startswith("perlfaq") or not keep(page) or not (html / page).is_file():
                    continue
                pages += [page] if page not in pages else []
                if section:
                    if page not in ids:
                        ids[page] = POD_ID.findall((html / page).read_text(encoding="utf-8"))
                    anchor = _pod_anchor(section)
                    found = next((i for i in ids[page] if i == anchor), None) or \
                        next((i for i in ids[page] if i.startswith(anchor + "-")), None)
                    target = f"{page}#{found}" if found else page
                else:
                    target = page
                sections += [target] if target not in sections else []
            if pages:
                out.append({"id": f"{faq.stem}#q{n}", "query": question, "relevant": pages,
                            "relevant_sections": sections})
    return out


def _perl_keep(path: str) -> bool:
    name = path.removesuffix(".html")
    return path.endswith(".html") and "/" not in path and name.startswith("perl") and \
        not re.match(r"perl(faq|toc$|\d+delta$|delta$)", name)


def pod_to_html(pod: Path, html: Path) -> None:
    """Every perl*.pod as an HTML page (pod2html, shipped with Perl), once."""
    html.mkdir(parents=True, exist_ok=True)
    for source in sorted(pod.glob("perl*.pod")):
        page = html / f"{source.stem}.html"
        if not page.exists():
            subprocess.run(["pod2html", f"--infile={source}", f"--outfile={page}", "--quiet", "--htmlroot=.",
                            f"--podroot={pod.parent}", "--podpath=pod", "--cachedir=" + str(html)],
                           check=True, capture_output=True)


def _under(*parts: str, files: tuple[str, ...] = ()):
    def keep(path: str) -> bool:
        return path.endswith(".html") and (path.split("/")[0] in parts or path in files)
    return keep


def _git_keep(path: str) -> bool:
    return path.endswith(".html") and "/" not in path and path != "gitfaq.html" and not path.startswith("RelNotes")


CORPORA = {
    "sqlite": Corpus("sqlite", None, "", "https://sqlite.org/", lambda p: True, sqlite_faq),
    "python": Corpus("python", "python3.11-doc", "usr/share/doc/python3.11/html", "https://docs.python.org/3.11/",
                     _under("library", "reference", "tutorial", "howto", "c-api", "using", "extending",
                            files=("glossary.html",)),
                     sphinx_faq("faq/*.html", ("h3",), asks_only=False)),
    "django": Corpus("django", "python-django-doc", "usr/share/doc/python-django-doc/html",
                     "https://docs.djangoproject.com/en/3.2/",
                     _under("topics", "ref", "howto", "intro", "misc", files=("glossary.html",)),
                     sphinx_faq("faq/*.html", ("h2", "h3"), asks_only=False)),
    "sqlalchemy": Corpus("sqlalchemy", "python-sqlalchemy-doc", "usr/share/doc/python-sqlalchemy-doc/html",
                         "https://docs.sqlalchemy.org/en/14/",
                         _under("orm", "core", "dialects", "tutorial", files=("glossary.html", "intro.html",
                                                                              "errors.html")),
                         sphinx_faq("faq/*.html", ("h2", "h3"), asks_only=False)),
    "git": Corpus("git", "git-doc", "usr/share/doc/git-doc", "https://git-scm.com/docs/", _git_keep, git_faq),
    "perl": Corpus("perl", "perl-doc", "usr/share/perl/5.36.0/html", "https://perldoc.perl.org/5.36.0/", _perl_keep,
                   perl_faq),
}


def fetch(corpus: Corpus, debs: Path) -> Path:
    """The package's HTML folder, downloaded and extracted under ``debs`` once."""
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{corpus.package}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", corpus.package], cwd=debs, check=True)
        found = sorted(debs.glob(f"{corpus.package}_*.deb"))
    root = debs / "x" / corpus.package
    root.mkdir(parents=True, exist_ok=True)  # dpkg -x makes only the last folder
    html = root / corpus.html
    if corpus.name == "perl":  # the package ships POD: make the HTML pages from it
        if not (html.parent / "pod").is_dir():
            subprocess.run(["dpkg", "-x", str(found[-1]), str(root)], check=True)
        pod_to_html(html.parent / "pod", html)
    elif not html.is_dir():
        subprocess.run(["dpkg", "-x", str(found[-1]), str(root)], check=True)
    return html


def build(corpus: Corpus, out: Path, debs: Path) -> tuple[Path | None, Path]:
    """(folder to ingest, or None for the bundled demo corpus; the questions file)."""
    target = out / corpus.name
    target.mkdir(parents=True, exist_ok=True)
    questions_path = target / "questions.jsonl"
    if corpus.package is None:
        questions = corpus.questions(Path("."), corpus.keep)
        folder = None
    else:
        html = fetch(corpus, debs)
        folder = target / "corpus"
        if not folder.is_dir():
            for page in html.rglob("*.html"):
                rel = page.relative_to(html).as_posix()
                if corpus.keep(rel):
                    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(page, folder / rel)
        questions = corpus.questions(html, corpus.keep)
    # an answer that links to many pages is a reading list, not an answer ("How do I do (anything)?")
    questions = [q for q in questions if len(q["relevant"]) <= MAX_PAGES]
    questions_path.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions))
    return folder, questions_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--debs", default=None, help="where .deb files are downloaded (default: OUT/debs)")
    parser.add_argument("names", nargs="*", default=list(CORPORA))
    args = parser.parse_args()
    out = Path(args.out)
    for name in args.names:
        folder, questions = build(CORPORA[name], out, Path(args.debs) if args.debs else out / "debs")
        pages = sum(1 for _ in folder.rglob("*.html")) if folder else "bundled"
        print(f"{name}: {pages} pages, {sum(1 for _ in questions.open())} questions -> {questions}")


if __name__ == "__main__":
    sys.exit(main())
