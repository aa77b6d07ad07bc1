#!/usr/bin/env python
"""The CPU recipe: a fine-tuned model's four ways to answer on CPU, side by side in one run, on the v1.1
evaluation split (1,877 questions of 12 dev-v1.1 articles, benchmarks/make_splits.py):

- `qa.py --do_eval` in float32 and with `--bf16 --use_cpu` (wall time of the run, its evaluation's F1);
- the pipeline (`qakit.pipeline`, batches of `--batch_size` windows) with torch float32, torch bfloat16
  (weights in bf16), onnxruntime float32 and onnxruntime int8 (`--onnx DIR` from `python -m qakit.onnx MODEL DIR --int8`): seconds,
  F1/EM by the official rules, and how many top answers equal float32's.

    python benchmarks/bench_cpu_recipe.py MODEL_DIR --onnx ONNX_DIR [--squad_dir ../shared/data/squad] [--n N]
        [--batch_size 8] [--pipelines_only]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import SHARED_SQUAD, run_qa, splits

from metrics.scoring import score_answers
from qakit import pipeline


def questions_of(path: Path, n: int | None) -> tuple[list[str], list[dict], list[dict]]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    rows = [(q["id"], {"question": q["question"], "context": p["context"]},
             {"text": [a["text"] for a in q["answers"]], "answer_start": [a["answer_start"] for a in q["answers"]]})
            for a in data for p in a["paragraphs"] for q in p["qas"]][:n]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def pipeline_row(name: str, kwargs: dict, asked: tuple, reference: dict | None) -> dict:
    ids, questions, gold = asked
    qa = pipeline("question-answering", device=-1, **kwargs)
    qa(questions[:4])  # warm-up
    started = time.perf_counter()
    answers = qa(questions)
    seconds = time.perf_counter() - started
    predictions = {i: (a[0] if isinstance(a, list) else a)["answer"] if a else "" for i, a in zip(ids, answers)}
    scores = score_answers(ids, gold, predictions, predictions, {}, False, 0.0)
    same = sum(predictions[i] == reference[i] for i in ids) / len(ids) if reference else 1.0
    print(f"pipeline {name:22s} {seconds:7.1f} s   F1 {scores['f1']:.2f} EM {scores['exact_match']:.2f}   "
          f"same answer as fp32: {100 * same:.2f}%", flush=True)
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--squad_dir", type=Path, default=SHARED_SQUAD)
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--pipelines_only", action="store_true", help="skip the two qa.py runs")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        eval_file = splits(opts.squad_dir, Path(tmp) / "splits") / "v11_eval.json"
        for name, extra in () if opts.pipelines_only else (("fp32", []), ("bf16", ["--bf16", "--use_cpu"])):
            flags = ["--model_name_or_path", opts.model, "--validation_file", str(eval_file), "--do_eval",
                     "--max_seq_length", "384", "--doc_stride", "128", *extra]
            if opts.n:
                flags += ["--max_eval_samples", str(opts.n)]
            results, wall, _ = run_qa(flags, Path(tmp) / name)
            print(f"qa.py --do_eval {name:15s} {wall:7.1f} s (evaluate phase {results['eval_runtime']:.1f} s)   "
                  f"F1 {results['eval_f1']:.2f} EM {results['eval_exact_match']:.2f}", flush=True)
        asked = questions_of(eval_file, opts.n)
        batch = {"batch_size": opts.batch_size}
        reference = pipeline_row("torch fp32", {"model": opts.model, **batch}, asked, None)
        for name, kwargs in (("torch bf16", {"model": opts.model, "torch_dtype": "bfloat16"}),
                             ("onnxruntime fp32", {"model": opts.onnx, "backend": "onnxruntime"}),
                             ("onnxruntime int8", {"model": opts.onnx, "backend": "onnxruntime", "int8": True})):
            pipeline_row(name, kwargs | batch, asked, reference)


if __name__ == "__main__":
    main()
