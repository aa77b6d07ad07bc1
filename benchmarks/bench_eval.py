#!/usr/bin/env python
"""Evaluation on the dev-v2.0 evaluation split with MiniLM: batches padded to their longest window and
sorted by length (our default) vs every window padded to 384 (--pad_to_max_length, HF's default).

    python benchmarks/bench_eval.py [--model PATH] [--squad_dir DIR] [--max_eval_samples N]

Both runs go through qa.py; the ratio is of windows per second in the evaluation loop (the forward pass),
and of the whole evaluation (forward, post-processing and scoring). Predictions are compared question by
question. --model defaults to MiniLM with an untrained span head (deterministic; pass a fine-tuned folder
to compare real answers).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import SHARED_SQUAD, minilm_path, run_qa, splits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--squad_dir", type=Path, default=SHARED_SQUAD)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=64)
    opts = parser.parse_args()
    opts.model = opts.model or minilm_path()
    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    data = splits(opts.squad_dir, tmp / "splits") / "v2_eval.json"
    base = ["--model_name_or_path", opts.model, "--validation_file", str(data), "--do_eval",
            "--version_2_with_negative", "--per_device_eval_batch_size", str(opts.batch_size),
            "--max_seq_length", "384", "--doc_stride", "128", "--cache_dir", str(tmp / "cache")]
    if opts.max_eval_samples:
        base += ["--max_eval_samples", str(opts.max_eval_samples)]
    runs = {}
    for name, extra in (("padded to 384", ["--pad_to_max_length"]), ("dynamic + sorted", [])):
        out = tmp / name.split()[0]
        results, wall, _ = run_qa(base + extra, out)
        preds = json.loads((out / "eval_predictions.json").read_text())
        runs[name] = (results, preds)
        print(f"{name:<18} forward {results['eval_samples_per_second']:8.2f} windows/s   whole evaluation "
              f"{results['eval_windows_per_second']:8.2f} windows/s  ({results['eval_windows']} windows, "
              f"{results['eval_examples']} questions)  F1 {results['eval_f1']:.2f}")
    (pad, pad_preds), (dyn, dyn_preds) = runs["padded to 384"], runs["dynamic + sorted"]
    same = sum(pad_preds[q] == dyn_preds[q] for q in pad_preds) / len(pad_preds)
    print(f"forward speed-up:          {dyn['eval_samples_per_second'] / pad['eval_samples_per_second']:.2f}x")
    print(f"whole evaluation speed-up: {dyn['eval_windows_per_second'] / pad['eval_windows_per_second']:.2f}x")
    print(f"same predictions:          {100 * same:.2f}% of questions")


if __name__ == "__main__":
    main()
