#!/usr/bin/env python
"""Train/evaluation splits of the official dev sets, for benchmarks that fine-tune.

There is no official training set here, so dev-v2.0 is split by article: articles with index
i % 3 != 0 train (7,990 questions), i % 3 == 0 evaluate (3,883). The v1.1 setting trains on the
dev-v1.1 articles whose titles are not among those evaluation articles (36 articles, 8,693 questions)
and evaluates on the v1.1 versions of the 12 evaluation articles (1,877 questions).

    python benchmarks/make_splits.py ../shared/data/squad OUT_DIR
writes OUT_DIR/{v2_train,v2_eval,v11_train,v11_eval}.json in the official layout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _write(path: Path, version: str, articles: list[dict]) -> None:
    path.write_text(json.dumps({"version": version, "data": articles}, ensure_ascii=False), encoding="utf-8")
    n = sum(len(p["qas"]) for a in articles for p in a["paragraphs"])
    print(f"{path}: {len(articles)} articles, {n} questions")


def make_splits(squad_dir: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    v2 = json.loads((squad_dir / "dev-v2.0.json").read_text(encoding="utf-8"))
    v11 = json.loads((squad_dir / "dev-v1.1.json").read_text(encoding="utf-8"))
    v2_eval = [a for i, a in enumerate(v2["data"]) if i % 3 == 0]
    eval_titles = {a["title"] for a in v2_eval}
    _write(out / "v2_train.json", v2["version"], [a for i, a in enumerate(v2["data"]) if i % 3 != 0])
    _write(out / "v2_eval.json", v2["version"], v2_eval)
    _write(out / "v11_train.json", v11["version"], [a for a in v11["data"] if a["title"] not in eval_titles])
    _write(out / "v11_eval.json", v11["version"], [a for a in v11["data"] if a["title"] in eval_titles])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("squad_dir", type=Path, help="folder with dev-v2.0.json and dev-v1.1.json")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    make_splits(args.squad_dir, args.out_dir)
