#!/usr/bin/env python
"""Training throughput with MiniLM on the v1.1 training split: every window padded to 384 in random batches
(HF's default) vs batches padded to their longest window, random and length-grouped (our default).

    python benchmarks/bench_train.py [--steps 20] [--squad_dir DIR] [--full]

Each run trains `--steps` steps at batch 16, lr 1e-4, seq 384, stride 128, seed 42 and reports training
samples per second. With --full, each run is the whole one-epoch fine-tune of the pipeline issue followed by
evaluation on the v1.1 evaluation split, and the F1s are compared too (hours on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import SHARED_SQUAD, minilm_path, run_qa, splits

RANDOM = ["--group_by_length", "false"]  # HF's flag; qa.py maps it onto transformers 5's sampling strategy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--squad_dir", type=Path, default=SHARED_SQUAD)
    parser.add_argument("--full", action="store_true")
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    data = splits(opts.squad_dir, tmp / "splits")
    base = ["--model_name_or_path", minilm_path(), "--train_file", str(data / "v11_train.json"),
            "--do_train", "--per_device_train_batch_size", "16", "--learning_rate", "1e-4", "--warmup_ratio", "0.1",
            "--max_seq_length", "384", "--doc_stride", "128", "--seed", "42", "--save_strategy", "no",
            "--cache_dir", str(tmp / "cache"), "--logging_steps", "50"]
    if opts.full:
        base += ["--num_train_epochs", "1", "--do_eval", "--validation_file", str(data / "v11_eval.json")]
    else:
        base += ["--max_steps", str(opts.steps)]
    runs = {}
    for name, extra in (("padded to 384", ["--pad_to_max_length", *RANDOM]), ("dynamic", RANDOM),
                        ("dynamic + grouped", [])):
        results, wall, _ = run_qa(base + extra, tmp / name.replace(" ", "_").replace("+", "and"))
        runs[name] = results
        f1 = f"  F1 {results['eval_f1']:.2f}  EM {results['eval_exact_match']:.2f}" if opts.full else ""
        print(f"{name:<18} {results['train_samples_per_second']:7.2f} samples/s  "
              f"({results['train_runtime']:.0f} s){f1}")
    pad = runs["padded to 384"]["train_samples_per_second"]
    for name in ("dynamic", "dynamic + grouped"):
        print(f"{name} vs padded: {runs[name]['train_samples_per_second'] / pad:.2f}x samples/s")


if __name__ == "__main__":
    main()
