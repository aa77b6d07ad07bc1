"""qakit.pipeline against transformers 4.57's own pipeline("question-answering"), call by call: run in the
transformers 4.57 environment (`.ci/setup_v457.sh`), which still has it. Prints one JSON line: per set of call
arguments, how many questions got other answers (text, start, end of every answer) and the largest score
difference. Used by tests/test_answering_pipeline.py and benchmarks/bench_pipeline.py.

    .venv-v457/bin/python tests/pipeline_parity.py MODEL_DIR SQUAD_JSON N
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ({}, {"align_to_words": False}, {"handle_impossible_answer": True}, {"top_k": 3},
         {"max_seq_len": 96, "doc_stride": 32, "top_k": 2, "handle_impossible_answer": True, "batch_size": 4})


def squad_questions(path: str, n: int) -> list[dict[str, str]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    return [{"question": q["question"], "context": p["context"]}
            for a in data for p in a["paragraphs"] for q in p["qas"]][:n]


def as_list(answer: object) -> list[dict]:
    return answer if isinstance(answer, list) else [answer]


def compare(ref: list, ours: list) -> dict:
    differ, max_diff, shown = 0, 0.0, []
    for a, b in zip(ref, ours, strict=True):
        a, b = as_list(a), as_list(b)
        if [(r["answer"], r["start"], r["end"]) for r in a] != [(r["answer"], r["start"], r["end"]) for r in b]:
            differ += 1
            shown += [[a, b]][:3 - len(shown)]
            continue
        max_diff = max([max_diff] + [abs(r["score"] - s["score"]) for r, s in zip(a, b)])
    return {"differ": differ, "max_score_diff": max_diff, "shown": shown}


def main(model: str, data: str, n: int) -> dict:
    warnings.simplefilter("ignore")
    from transformers import pipeline as transformers_pipeline

    from qakit import pipeline

    questions = squad_questions(data, n)
    theirs = transformers_pipeline("question-answering", model=model, tokenizer=model, device=-1)
    ours = pipeline("question-answering", model=model, device=-1)
    out = {"questions": len(questions)}
    for mode in MODES:
        started = time.perf_counter()
        ref = theirs(questions, **mode)
        middle = time.perf_counter()
        got = ours(questions, **mode)
        out[json.dumps(mode)] = compare(ref, got) | {"seconds_4_57": middle - started,
                                                     "seconds_ours": time.perf_counter() - middle}
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
