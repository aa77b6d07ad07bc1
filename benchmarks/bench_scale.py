#!/usr/bin/env python
"""Scale: evaluation of a tiny BERT on dev-v2.0 repeated 1x, 4x and 10x — time and peak memory.

    python benchmarks/bench_scale.py [--squad_dir DIR] [--copies 1 4 10]

Each size runs qa.py --do_eval in a fresh process (reading, windows, forward, post-processing, scoring,
writing all files) and reports wall time and peak resident memory, and their ratios to 1x. The tiny
model (2 layers, hidden 32, MiniLM's tokenizer) keeps the forward pass from hiding everything else.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from common import SHARED_SQUAD, minilm_path, run_qa


def tiny_bert(dest: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertForQuestionAnswering(config).save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


def repeated(source: Path, copies: int, dest: Path) -> Path:
    """The file's articles `copies` times, question ids made unique per copy."""
    data = json.loads(source.read_text(encoding="utf-8"))
    articles = []
    for c in range(copies):
        for article in data["data"]:
            paragraphs = [{"context": p["context"], "qas": [dict(q, id=f"{q['id']}-{c}") for q in p["qas"]]}
                          for p in article["paragraphs"]]
            articles.append({"title": article["title"], "paragraphs": paragraphs})
    dest.write_text(json.dumps({"version": data["version"], "data": articles}), encoding="utf-8")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--squad_dir", type=Path, default=SHARED_SQUAD)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4, 10])
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    model = tiny_bert(tmp / "model")
    rows = []
    for n in opts.copies:
        data = repeated(opts.squad_dir / "dev-v2.0.json", n, tmp / f"dev-x{n}.json")
        results, wall, peak = run_qa(["--model_name_or_path", str(model), "--validation_file", str(data),
                                      "--do_eval", "--version_2_with_negative", "--per_device_eval_batch_size", "128",
                                      "--cache_dir", str(tmp / "cache"), "--use_cpu", "true"], tmp / f"out-x{n}")
        rows.append((n, results["eval_examples"], results["eval_windows"], wall, peak))
    n0, _, _, wall0, peak0 = rows[0]
    print(f"{'size':>5} {'questions':>10} {'windows':>9} {'time s':>8} {'x time':>7} {'peak MiB':>9} {'x memory':>9}")
    for n, q, w, wall, peak in rows:
        print(f"{n:>4}x {q:>10,} {w:>9,} {wall:>8.1f} {wall / wall0:>7.2f} {peak:>9.0f} {peak / peak0:>9.2f}")


if __name__ == "__main__":
    main()
