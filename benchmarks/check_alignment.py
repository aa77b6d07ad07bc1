#!/usr/bin/env python
"""The no-offsets path on a real tokenizer: MiniLM's WordPiece run through token/text alignment.

    python benchmarks/check_alignment.py [--model PATH] [--squad_dir DIR] [--max_eval_samples N]

1. Over every dev-v2.0 context: the share of tokens whose aligned character offsets equal the fast
   tokenizer's own offsets.
2. A model evaluated both ways (qa.py with and without --offsets_by_alignment) on the dev-v2.0
   evaluation split: the share of questions with the same prediction.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import SHARED_SQUAD, minilm, minilm_path, run_qa, splits

import squad_v2
from helpers import offset_agreement
from qakit.family import QAFamily


def offsets_agreement(squad_dir: Path) -> tuple[int, int]:
    model, tok = minilm()
    fast = QAFamily.detect(model, tok, 384)
    slow = QAFamily.detect(model, tok, 384, force_alignment=True)
    ds, _ = squad_v2.read_squad_file(str(squad_dir / "dev-v2.0.json"), "validation")
    return offset_agreement(fast, slow, sorted(set(ds["context"])))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--squad_dir", type=Path, default=SHARED_SQUAD)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    opts = parser.parse_args()
    same, total = offsets_agreement(opts.squad_dir)
    print(f"offsets: {same:,} of {total:,} tokens identical ({100 * same / total:.3f}%)")
    opts.model = opts.model or minilm_path()
    tmp = Path(tempfile.mkdtemp(prefix="check_alignment_"))
    data = splits(opts.squad_dir, tmp / "splits") / "v2_eval.json"
    args = ["--model_name_or_path", opts.model, "--validation_file", str(data), "--do_eval",
            "--version_2_with_negative", "--per_device_eval_batch_size", "64", "--cache_dir", str(tmp / "cache")]
    if opts.max_eval_samples:
        args += ["--max_eval_samples", str(opts.max_eval_samples)]
    preds = {}
    for name, extra in (("fast", []), ("aligned", ["--offsets_by_alignment"])):
        results, _, _ = run_qa(args + extra, tmp / name)
        preds[name] = json.loads((tmp / name / "eval_predictions.json").read_text())
        print(f"{name:<8} F1 {results['eval_f1']:.2f}  EM {results['eval_exact']:.2f}")
    agree = sum(preds["fast"][q] == preds["aligned"][q] for q in preds["fast"])
    print(f"predictions: {agree:,} of {len(preds['fast']):,} questions identical "
          f"({100 * agree / len(preds['fast']):.2f}%)")


if __name__ == "__main__":
    main()
