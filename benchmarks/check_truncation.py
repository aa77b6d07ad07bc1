#!/usr/bin/env python
"""Generative QA on long contexts: answers HF's run_seq2seq_qa.py truncates away, against our windows.

    python benchmarks/check_truncation.py [--squad_dir DIR] [--max_seq_length 384] [--doc_stride 128]

HF tokenizes `question: Q context: C` and cuts it at --max_seq_length, so an answer past the cut is lost
(its training target is an answer the model cannot see; at evaluation it cannot be found). Ours cuts the
context into overlapping windows. Counted over the answerable questions of dev-v2.0 and dev-v1.1 with
MiniLM's real WordPiece tokenizer (no pretrained seq2seq tokenizer can be had offline here).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import SHARED_SQUAD, minilm

import squad_v2
from helpers import truncation_losses
from qakit.family import QAFamily


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--squad_dir", type=Path, default=SHARED_SQUAD)
    parser.add_argument("--max_seq_length", type=int, default=384)
    parser.add_argument("--doc_stride", type=int, default=128)
    args = parser.parse_args()
    family = QAFamily.detect(*minilm(), max_seq_length=args.max_seq_length)
    for name in ("dev-v2.0.json", "dev-v1.1.json"):
        ds, _ = squad_v2.read_squad_file(str(args.squad_dir / name), "train")
        answerable = ds.filter(lambda r: bool(r["answers"]["text"]))
        truncated, windowed = truncation_losses(answerable, family, args.max_seq_length, args.doc_stride)
        print(f"{name}: {len(answerable):,} answerable questions; max_seq_length {args.max_seq_length}: "
              f"truncation (HF) loses {truncated:,} answers ({100 * truncated / len(answerable):.2f}%), "
              f"windows (doc_stride {args.doc_stride}) lose {windowed:,}")


if __name__ == "__main__":
    main()
