#!/usr/bin/env python
"""qakit.pipeline on CPU, side by side in one run, on the first N dev-v2.0 questions:

- the bare forward of the pipeline's own windows, batched as it batches them: the limit;
- qakit.pipeline in float32 (every answer: windows, device-side search, assembly), and its share of wall time
  outside the forward;
- transformers 4.57's pipeline("question-answering") (run this script with the 4.57 environment's python,
  `.venv-v457/bin/python`, which has it; skipped elsewhere): answers compared, and the speed ratio;
- qakit.pipeline with torch_dtype=bfloat16, and with an ONNX export (fp32 and int8, `--onnx DIR` from
  `python -m qakit.onnx MODEL DIR --int8`): agreement with the float32 answers and throughput.

    .venv-v457/bin/python benchmarks/bench_pipeline.py [--model DIR] [--n 2000] [--batch_size 1] [--onnx DIR]
        [--device cuda] (on a GPU: every torch run there, bf16 with --bf16_batch_size windows a batch)

--model defaults to MiniLM with a span head drawn from a fixed seed (saved to a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch

from common import SHARED_SQUAD, minilm_path

from qakit import pipeline
from qakit.pipelines import AskedSet, Question


def seeded_minilm(folder: Path) -> str:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(minilm_path())
    with torch.no_grad():
        model.qa_outputs.weight.normal_(0, 0.2)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return str(folder)


def bare_forward(qa, questions: list[dict], batch_size: int) -> tuple[float, int]:
    """Seconds of the model's forward alone on the pipeline's windows and batches, and the window count."""
    settings = qa._resolved(qa.settings(batch_size=batch_size))
    family, head = qa._prepare(settings)
    asked = AskedSet.build([Question(q["question"], q["context"]) for q in questions], family, head, settings)
    collate = head.collator(family, argparse.Namespace(max_seq_length=0, pad_to_max_length=False))
    order = sorted(range(len(asked.rows)), key=lambda i: -len(asked.rows[i]["input_ids"]))
    batches = [collate([asked.rows[i] for i in order[lo:lo + batch_size]]) for lo in range(0, len(order), batch_size)]
    batches = [{k: v.to(qa.device) for k, v in batch.items() if k != "qa_meta"} for batch in batches]
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            qa.model(**batch)
    if qa.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, len(asked.rows)


def timed(fn, *args, **kwargs) -> tuple[list, float]:
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - started


def top(answers: list) -> list[tuple]:
    return [((a[0] if isinstance(a, list) else a)["answer"], (a[0] if isinstance(a, list) else a)["start"])
            for a in answers]


def agreement(a: list, b: list) -> float:
    return sum(x == y for x, y in zip(top(a), top(b), strict=True)) / len(a)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", type=Path, default=SHARED_SQUAD / "dev-v2.0.json")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU")
    parser.add_argument("--bf16_batch_size", type=int, default=8, help="bf16 also in batches of this many windows")
    parser.add_argument("--onnx", default=None, help="a folder written by python -m qakit.onnx MODEL DIR --int8")
    opts = parser.parse_args()
    warnings.simplefilter("ignore")
    data = json.loads(opts.data.read_text(encoding="utf-8"))["data"]
    questions = [{"question": q["question"], "context": p["context"]}
                 for a in data for p in a["paragraphs"] for q in p["qas"]][:opts.n]
    with tempfile.TemporaryDirectory() as tmp:
        model = opts.model or seeded_minilm(Path(tmp) / "minilm_qa")
        run(model, questions, opts)


def run(model: str, questions: list[dict], opts: argparse.Namespace) -> None:
    qa = pipeline("question-answering", model=model, device=opts.device, batch_size=opts.batch_size)
    qa(questions[:4])  # warm-up
    forward, windows = bare_forward(qa, questions, opts.batch_size)
    ours, ours_s = timed(qa, questions)
    print(f"{len(questions)} questions, {windows} windows, batch_size {opts.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print(f"bare forward (fp32)        {forward:8.1f} s")
    print(f"qakit.pipeline fp32        {ours_s:8.1f} s   {ours_s / forward:.3f}x the bare forward "
          f"({100 * (ours_s - forward) / ours_s:.1f}% of its time outside the forward)")
    reference_s = None
    try:
        from transformers import pipeline as transformers_pipeline

        theirs = transformers_pipeline("question-answering", model=model, tokenizer=model, device=opts.device,
                                       batch_size=opts.batch_size)
        ref, reference_s = timed(theirs, questions)
        print(f"transformers 4.57 pipeline {reference_s:8.1f} s   ours {reference_s / ours_s:.3f}x its throughput; "
              f"same top answer for {100 * agreement(ref, ours):.2f}%")
    except (ImportError, KeyError, ValueError) as err:
        print(f"transformers' pipeline: not here ({str(err).splitlines()[0][:80]}); run with .venv-v457/bin/python")
    variants = [("qakit.pipeline bf16", dict(model=model, torch_dtype="bfloat16")),
                (f"  bf16, batch {opts.bf16_batch_size}",
                 dict(model=model, torch_dtype="bfloat16", batch_size=opts.bf16_batch_size))]
    if opts.onnx:
        variants += [("onnxruntime fp32", dict(model=opts.onnx, backend="onnxruntime")),
                     ("onnxruntime int8", dict(model=opts.onnx, backend="onnxruntime", int8=True))]
    for name, kwargs in variants:
        device = "cpu" if kwargs.get("backend") == "onnxruntime" else opts.device
        other = pipeline("question-answering", device=device, **{"batch_size": opts.batch_size, **kwargs})
        other(questions[:4])
        got, seconds = timed(other, questions)
        versus = f"; {reference_s / seconds:.2f}x 4.57's throughput" if reference_s else ""
        print(f"{name:26s} {seconds:8.1f} s   {ours_s / seconds:.2f}x fp32's throughput{versus}; same top answer "
              f"as fp32 for {100 * agreement(ours, got):.2f}%")


if __name__ == "__main__":
    main()
