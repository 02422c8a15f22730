"""Rebuild the bundled demo corpus from Debian's public-domain `sqlite3-doc` package.

    apt-get download sqlite3-doc && dpkg -x sqlite3-doc_*.deb pkg
    python corpus/build_sqlite_docs.py pkg/usr/share/doc/sqlite3

Writes shared/data/sqlite-docs.tar.xz (every HTML page except faq.html) and
shared/data/sqlite-faq.jsonl (the FAQ's questions with the pages their answers link to:
real questions, written by the SQLite developers, about a page that is not in the corpus).
"""

from __future__ import annotations

import io
import json
import re
import sys
import tarfile
from html import unescape
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "shared" / "data"
FAQ_ITEM = re.compile(
    r'<a name="(q\d+)"></a>\s*<p><b>\(\d+\)\s*(.*?)</b></p>\s*<blockquote>(.*?)</blockquote>', re.S
)


def clean(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", "", html))).strip()


def faq_questions(faq_html: str) -> list[dict]:
    out = []
    for anchor, question, answer in FAQ_ITEM.findall(faq_html):
        links = []
        for href in re.findall(r'href="([^"]+)"', answer):
            if "://" in href or href.startswith(("mailto:", "#")):
                continue  # external or in-page: not in the corpus
            if href not in links:
                links.append(href)
        if not links:
            continue  # an answer that cites no page cannot be scored
        pages = list(dict.fromkeys(h.split("#")[0] for h in links))
        out.append({"id": f"faq.html#{anchor}", "query": clean(question),
                    "relevant": pages, "relevant_sections": links})
    return out


def main(root: str) -> None:
    src = Path(root)
    pages = sorted(p for p in src.rglob("*.html") if p.name != "faq.html" or p.parent != src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", preset=9) as tar:
        for p in pages:
            info = tar.gettarinfo(str(p), arcname=p.relative_to(src).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with p.open("rb") as fh:
                tar.addfile(info, fh)
    (DATA / "sqlite-docs.tar.xz").write_bytes(buf.getvalue())
    questions = faq_questions((src / "faq.html").read_text(encoding="utf-8"))
    with (DATA / "sqlite-faq.jsonl").open("w", encoding="utf-8") as fh:
        for q in questions:
            fh.write(json.dumps(q, ensure_ascii=False) + "\n")
    print(f"{len(pages)} pages, {len(buf.getvalue()) / 1e6:.2f} MB; {len(questions)} FAQ questions")


if __name__ == "__main__":
    main(sys.argv[1])
