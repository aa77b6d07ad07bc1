#!/usr/bin/env python
"""LoRA against full fine-tuning with MiniLM on the v1.1 training split: trainable parameters, the optimizer's
state, peak memory and samples/s, side by side in one run of this script.

    python benchmarks/bench_lora.py [--steps 20] [--rank 16] [--lr 1e-3] [--squad_dir DIR] [--full]

Each run trains `--steps` steps at batch 16, seq 384, stride 128, seed 42 (full fine-tuning at lr 1e-4, as
README's Performance fine-tune; LoRA at `--lr`, the head trained in full). With --full, each run is the whole
one-epoch fine-tune followed by evaluation on the v1.1 evaluation split, and the F1s are compared too (hours
on a 2-core CPU). The optimizer's state is measured by qa.py from the optimizer itself
(`train_optimizer_state_mib`), not computed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import SHARED_SQUAD, minilm_path, run_qa, splits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--squad_dir", type=Path, default=SHARED_SQUAD)
    parser.add_argument("--full", action="store_true")
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_lora_"))
    data = splits(opts.squad_dir, tmp / "splits")
    base = ["--model_name_or_path", minilm_path(), "--train_file", str(data / "v11_train.json"), "--do_train",
            "--per_device_train_batch_size", "16", "--warmup_ratio", "0.1", "--max_seq_length", "384",
            "--doc_stride", "128", "--seed", "42", "--save_strategy", "no", "--cache_dir", str(tmp / "cache"),
            "--logging_steps", "50"]
    if opts.full:
        base += ["--num_train_epochs", "1", "--do_eval", "--validation_file", str(data / "v11_eval.json")]
    else:
        base += ["--max_steps", str(opts.steps)]
    runs = {"full fine-tune (lr 1e-4)": ["--learning_rate", "1e-4"],
            f"LoRA r={opts.rank} (lr {opts.lr:g})": ["--learning_rate", str(opts.lr), "--lora_r", str(opts.rank)]}
    rows = {}
    for name, extra in runs.items():
        results, wall, peak = run_qa([*base, *extra], tmp / name.split()[0])
        rows[name] = (results, wall, peak)
    full = next(iter(rows.values()))[0]
    print(f"{'run':<26} {'trainable':>11} {'optimizer MiB':>14} {'peak RSS MiB':>13} {'samples/s':>10} {'F1':>7}")
    for name, (results, _, peak) in rows.items():
        f1 = f"{results['eval_f1']:.2f}" if "eval_f1" in results else "-"
        print(f"{name:<26} {results['train_trainable_parameters']:>11,} {results['train_optimizer_state_mib']:>14.1f} "
              f"{peak:>13,.0f} {results['train_samples_per_second']:>10.2f} {f1:>7}")
    lora = list(rows.values())[1][0]
    print(f"LoRA's optimizer state is {lora['train_optimizer_state_mib'] / full['train_optimizer_state_mib']:.2%} of "
          "full fine-tuning's" + (f"; its F1 is {lora['eval_f1'] / full['eval_f1']:.1%} of full fine-tuning's"
                                  if opts.full else ""))


if __name__ == "__main__":
    main()
