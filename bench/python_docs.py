"""Deep memory on documentation it was never tuned on: the Python 3.11 docs and the Python FAQ.

    python bench/python_docs.py [--home DIR] [--deb FILE]

Every choice in the offline question generator and the trainer was made looking at the SQLite
docs. This runs the same `deepmem train` (offline generator, defaults) on another corpus and
scores real questions there: the Python FAQ's questions (faq/*.html, written by Python's
maintainers, not by us; the FAQ pages are not in the corpus) against the corpus pages their
answers link to, vector and hybrid, with and without deep memory; and the held-out synthetic
split as in bench/deep_memory.py.

The docs come from Debian's python3.11-doc package (`apt-get download python3.11-doc`, done here
unless --deb names the .deb). Corpus: library/, reference/, tutorial/, howto/, c-api/, using/,
extending/ and glossary.html (not faq/, whatsnew/ or the generated indexes), published at
https://docs.python.org/3.11/. DIR keeps the ingested store (the first run ingests, ~30 min on
2 cores); nothing is activated in it. Saves bench/results/python_docs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import gain, machine, pick, save  # noqa: E402
from shared.deep_memory.evaluate import evaluate_files  # noqa: E402
from shared.deep_memory.job import TrainOptions, run_training  # noqa: E402
from shared.embedders import make_embedder  # noqa: E402
from shared.evaluation import format_table  # noqa: E402
from shared.home import Home  # noqa: E402
from shared.ingest import ingest  # noqa: E402
from shared.settings import load_settings  # noqa: E402
from shared.store import open_store  # noqa: E402

PACKAGE = "python3.11-doc"
BASE_URL = "https://docs.python.org/3.11/"
CORPUS_PARTS = ["library", "reference", "tutorial", "howto", "c-api", "using", "extending", "glossary.html"]


def fetch_docs(deb: str | None, work: Path) -> tuple[Path, str]:
    """The package's html/ folder, extracted under ``work``, and the .deb's name."""
    if deb is None:
        subprocess.run(["apt-get", "download", PACKAGE], cwd=work, check=True)
        deb = str(next(work.glob(f"{PACKAGE}_*.deb")))
    subprocess.run(["dpkg", "-x", deb, str(work / "x")], check=True)
    return next((work / "x").glob("usr/share/doc/python3*/html")), Path(deb).name


def build_corpus(html: Path, corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for part in CORPUS_PARTS:
        src = html / part
        if src.is_dir():
            shutil.copytree(src, corpus / part, dirs_exist_ok=True)
        else:
            shutil.copy2(src, corpus / part)


def faq_questions(html: Path, corpus: Path) -> list[dict]:
    """Each FAQ question (an h3 of faq/*.html) with the corpus pages its answer links to."""
    from selectolax.lexbor import LexborHTMLParser

    out = []
    for page in sorted((html / "faq").glob("*.html")):
        tree = LexborHTMLParser(page.read_text(encoding="utf-8"))
        for section in tree.css("section"):
            heading = section.css_first("h3")
            if heading is None or heading.parent != section:
                continue  # a question is the h3 that opens its own section
            pages, sections = [], []
            for link in section.css("a.reference.internal"):
                href = link.attributes.get("href") or ""
                if not href or href.startswith("#"):
                    continue
                target = posixpath.normpath(posixpath.join("faq", href))
                path = target.split("#")[0]
                if path.startswith("faq/") or not (corpus / path).exists():
                    continue
                pages += [path] if path not in pages else []
                sections += [target] if target not in sections else []
            if pages:
                out.append({"id": f"faq/{page.name}#{section.attributes.get('id')}",
                            "query": heading.text(strip=True).rstrip("¶").strip(),
                            "relevant": pages, "relevant_sections": sections})
    return out




def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", help="data directory for the Python docs store (default: a temp dir)")
    parser.add_argument("--deb", help=f"a downloaded {PACKAGE} .deb (default: apt-get download it)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="deepmem-pydocs-"))
    html, deb_name = fetch_docs(args.deb, work)
    corpus = work / "corpus"
    build_corpus(html, corpus)
    faq = work / "python-faq.jsonl"
    questions = faq_questions(html, corpus)
    faq.write_text("".join(json.dumps(q) + "\n" for q in questions))
    print(f"{len(questions)} FAQ questions link into the corpus")

    home = Home.open(args.home or str(work / "home"))
    settings = load_settings(home=str(home.root))
    embedder = make_embedder(settings)
    store = open_store(home, settings)
    ingest_seconds = None
    if not store.stats()["chunks"]:
        started = time.perf_counter()
        ingest(store, embedder, settings, str(corpus), base_url=BASE_URL, progress=True)
        ingest_seconds = round(time.perf_counter() - started, 1)
    stats = store.stats()
    bench_home = Home.open(str(work / "adapters"))  # keep DIR's adapters untouched
    options = TrainOptions(generator="offline", eval_queries=[faq], activate="always", progress=False)
    started = time.perf_counter()
    report = run_training(store, embedder, bench_home, settings, options, log=lambda *a: None)
    seconds = time.perf_counter() - started
    print(format_table(report.comparisons[:1]))
    faq_all, _ = evaluate_files(store, embedder, bench_home, [faq], report.version, hybrid=True)
    print(format_table(faq_all))
    synthetic = report.comparisons[0]
    save("python_docs", {
        "machine": machine(), "embedder": embedder.name, "package": deb_name,
        "pages": stats["pages"], "chunks": stats["chunks"], "ingest_seconds": ingest_seconds,
        "generator": report.questions.get("generator"), "counts": report.counts,
        "train_job_seconds": round(seconds, 1), "best_epoch": report.train["best_epoch"],
        "held_out_synthetic": {"base": pick(synthetic.base), "deep_memory": pick(synthetic.deep),
                               "gain": gain(synthetic)},
        "python_faq_real_questions": {
            "questions": len(questions),
            "vector": {"base": pick(faq_all[0].base), "deep_memory": pick(faq_all[0].deep), "gain": gain(faq_all[0])},
            "hybrid": {"base": pick(faq_all[1].base), "deep_memory": pick(faq_all[1].deep), "gain": gain(faq_all[1])}},
    })
    shutil.rmtree(work / "x", ignore_errors=True)


if __name__ == "__main__":
    main()
