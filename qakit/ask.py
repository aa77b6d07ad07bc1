"""Ad-hoc questions: ask a fine-tuned model without writing a SQuAD file.

    python qa.py --model_name_or_path out/ --question "Who built it?" --context "The tower was built by ..."
    python qa.py --model_name_or_path out/ --questions_file questions.jsonl     # `-`: standard input

The questions go through the same windows, candidates and post-processing as `--do_predict` (they are a
test split made in memory), so the answers are the ones `--do_predict` gives; each is printed as one
JSON line, in the order asked, and nothing is written to the output folder.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, TextIO

import datasets

import squad_v2
from qakit.errors import QAConfigError
from utils_qa import QAPredictions

ASK_PREFIX = "ask"  # the metrics prefix of an ad-hoc run; its answers are printed, not written


def read_asked(question: str | None, context: str | None,
               questions_file: str | None) -> tuple[datasets.Dataset, squad_v2.SquadReport]:
    if questions_file and (question or context):
        raise QAConfigError("ask either one question (--question with --context) or a file of them "
                            "(--questions_file), not both")
    if questions_file:
        return squad_v2.read_records(path=questions_file)
    if not (question and context):
        raise QAConfigError("--question needs --context (the text the answer is taken from), and the reverse")
    return squad_v2.read_records(records=[{"question": question, "context": context}])


def answer_records(preds: QAPredictions, examples: datasets.Dataset) -> list[dict[str, Any]]:
    """One record per question: the answer ("" for none), its score and character span, and for v2 the
    null odds; the best non-empty span is kept too, whatever the null odds say."""
    nbest = preds.nbest_dict()
    out = []
    for qid, question in zip(examples["id"], examples["question"]):
        top = next((row for row in nbest.get(qid, []) if row["text"]), None)
        record = {"id": qid, "question": question, "answer": preds.predictions[qid]}
        if top is not None:
            record.update(span=top["text"], start=(top.get("offsets") or [None, None])[0],
                          end=(top.get("offsets") or [None, None])[1], score=top["score"],
                          probability=top["probability"])
        if qid in preds.null_odds:
            odds = preds.null_odds[qid]
            record["null_odds"] = odds if math.isfinite(odds) else None
        out.append(record)
    return out


def print_answers(records: list[dict[str, Any]], stream: TextIO = sys.stdout) -> None:
    for record in records:
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    stream.flush()
