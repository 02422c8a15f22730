"""Do two versions of deepmem rank the same sections for the real questions? (a regression check)

Run once per version, each from its own checkout and on its own copy of the stores (a newer
version migrates a store it opens), then compare:

    (cd OLD && python /path/to/bench/same_rankings.py dump --homes COPY_OLD --data DATA --out old.json)
    (cd NEW && python bench/same_rankings.py dump --homes COPY_NEW --data DATA --out new.json)
    python bench/same_rankings.py compare old.json new.json --out bench/results/same_rankings.json

DATA and the homes are those of bench/real_corpora.py and bench/real_questions.py. Plain search,
vector and hybrid, top 10, no adapter.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

CORPORA = ("sqlite", "django", "sqlalchemy", "perl", "python")


def dump(homes: Path, data: Path, out: Path) -> None:
    from shared.embedders import make_embedder
    from shared.search import Searcher
    from shared.settings import load_settings
    from shared.store import Store
    from shared.vector_index import MemoryIndex

    embedder = make_embedder(load_settings(home="/tmp"))
    result = {}
    for name in CORPORA:
        questions = [json.loads(line)["query"] for line in (data / name / "questions.jsonl").open()]
        store = Store.open(homes / name / "store.db", create=False)
        searcher = Searcher(store, embedder, index=MemoryIndex(store))
        for mode in ("vector", "hybrid"):
            result[f"{name}:{mode}"] = {q: [h.chunk.url for h in searcher.search(q, 10, mode=mode).hits]
                                        for q in questions}
        store.close()
    out.write_text(json.dumps(result))


def compare(old: Path, new: Path, out: Path) -> None:
    a, b = json.loads(old.read_text()), json.loads(new.read_text())
    rows = {key: {"questions": len(a[key]), "identical_top10": sum(a[key][q] == b[key].get(q) for q in a[key])}
            for key in a}
    out.write_text(json.dumps({"old": str(old), "new": str(new), "rankings": rows}, indent=2) + "\n")
    for key, row in rows.items():
        print(f"{key:20s} identical top 10: {row['identical_top10']}/{row['questions']}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--homes", type=Path, required=True)
    d.add_argument("--data", type=Path, required=True)
    d.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare")
    c.add_argument("old", type=Path)
    c.add_argument("new", type=Path)
    c.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dump(args.homes, args.data, args.out) if args.command == "dump" else compare(args.old, args.new, args.out)
