"""Answering a split of questions: predict -> post-process -> score -> write, and the null threshold used.

`SplitAnswers` holds one split's four steps as calls (`qa.py`'s `main()` makes them, and so does the
trainer's evaluation during training, through `answer_split`), timed into the metrics HF's trainer reports.
Post-processing is the head's (`qakit.heads`: every window's candidates -> one assembly of answers per
question, `qakit.answers`); scoring is the official rules' (`metrics/`); the files are HF's run_qa names.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from metrics.scoring import score_answers
from qakit.answers import AnswerSettings, QAPredictions
from qakit.errors import QAConfigError
from qakit.features import EvalSet
from qakit.files import write_atomic, write_json
from qakit.outputs import THRESHOLD_FILE, is_model_folder, recorded_threshold, weights_fingerprint

logger = logging.getLogger(__name__)

ASK_PREFIX = "ask"  # the metrics prefix of questions asked ad hoc; their answers are printed, not written


class SplitAnswers:
    """One split's predict -> post-process -> score -> write, and its metrics.

    `<prefix>_runtime` covers the forward passes and post-processing; the throughput figures and
    `<prefix>_total_runtime` cover everything, scoring and writing included.
    """

    def __init__(self, trainer: Any, data: EvalSet, prefix: str, settings: AnswerSettings):
        self.trainer, self.data, self.prefix, self.settings = trainer, data, prefix, settings
        self.metrics: dict[str, float] = {}
        self.started = time.time()

    def predict(self) -> tuple[np.ndarray, ...]:
        """Every window's candidates, found on the device and gathered from all processes, in window order."""
        arrays, loop_metrics = self.trainer.predict_candidates(self.data, self.prefix)
        self.metrics |= loop_metrics
        return arrays

    def postprocess(self, arrays: tuple[np.ndarray, ...]) -> QAPredictions:
        """Candidates -> each question's answer, n-best list and null odds, by the model's head."""
        preds = self.trainer.head.answer(arrays, self.data, self.settings, self.trainer.processing_class)
        seconds, n = time.time() - self.started, len(self.data.features)
        self.metrics |= {f"{self.prefix}_runtime": round(seconds, 4), f"{self.prefix}_samples": n,
                         f"{self.prefix}_samples_per_second": round(n / seconds, 3)}
        if self.settings.version_2_with_negative:
            self.metrics[f"{self.prefix}_null_threshold"] = self.settings.null_score_diff_threshold
        return preds

    def score(self, preds: QAPredictions) -> dict[str, float]:
        """The official scores, when the questions have gold answers."""
        if self.data.has_answers:
            s = self.settings
            scores = score_answers(self.data.ids, self.data.examples["answers"], preds.predictions, preds.best_spans,
                                   preds.null_odds, s.version_2_with_negative, s.null_score_diff_threshold,
                                   language=self.data.language)
            self.metrics |= {f"{self.prefix}_{k}": v for k, v in scores.items()}
        elif self.prefix.startswith("eval"):
            logger.warning("the evaluation questions have no answers: predictions written, nothing scored")
        return self.metrics

    def write(self, preds: QAPredictions, answers: TextIO | None = None) -> dict[str, float]:
        """The prediction files (asked questions: their answers printed as JSON lines to `answers`); the
        split's metrics, complete."""
        written = time.time()
        if self.prefix == ASK_PREFIX:
            if self.trainer.is_world_process_zero():
                print_answers(answer_records(preds, self.data.examples), answers or sys.stdout)
        elif self.trainer.args.should_save:
            write_predictions(preds, self.trainer.args.output_dir, self.prefix)
        self.metrics[f"{self.prefix}_write_runtime"] = round(time.time() - written, 4)
        elapsed, n_questions, n_windows = time.time() - self.started, len(self.data.ids), len(self.data.features)
        self.metrics |= {f"{self.prefix}_examples": n_questions, f"{self.prefix}_windows": n_windows,
                         f"{self.prefix}_examples_per_second": round(n_questions / elapsed, 3),
                         f"{self.prefix}_windows_per_second": round(n_windows / elapsed, 3),
                         f"{self.prefix}_total_runtime": round(elapsed, 4)}
        return self.metrics


def answer_split(trainer: Any, data: EvalSet, prefix: str, settings: AnswerSettings) -> dict[str, float]:
    """The four steps in one call, for the trainer's evaluations during training."""
    split = SplitAnswers(trainer, data, prefix, settings)
    preds = split.postprocess(split.predict())
    split.score(preds)
    return split.write(preds)


# --------------------------------------------------------------------------------------------
# The null threshold
# --------------------------------------------------------------------------------------------


def starting_threshold(threshold_flag: str | None, version_2_with_negative: bool, model_dir: str) -> float:
    """The null threshold for evaluation (and prediction, unless `best`): the one given, else the one the
    model folder records for these very weights, else 0.0 (HF's default)."""
    if threshold_flag not in (None, "best"):
        return float(threshold_flag)
    return recorded_threshold(model_dir) if version_2_with_negative else 0.0


def prediction_threshold(threshold_flag: str | None, results: dict[str, float], starting: float) -> float:
    """`best`: the evaluation's best threshold; otherwise the starting one."""
    if threshold_flag != "best":
        return starting
    if "eval_best_threshold" not in results:
        raise QAConfigError("--null_score_diff_threshold best needs --do_eval on data with answers and "
                            "--version_2_with_negative (the threshold comes from the evaluation)")
    value = float(results["eval_best_threshold"])
    logger.info("Predicting with the evaluation's best threshold %s (best_f1 %.2f, official best_f1_thresh %s)",
                value, results["eval_best_f1"], results["eval_best_f1_thresh"])
    return value


def record_threshold(trainer: Any, results: dict[str, float], model_dir: str, update: bool) -> None:
    """Keep the calibrated threshold next to the model, with the fingerprint of the weights it was calibrated
    on, so a later run on this folder uses it for those weights only. A run that did not train keeps a model
    folder's own threshold unless `update` (its best threshold is in eval_results.json either way)."""
    if "eval_best_threshold" not in results or not trainer.is_world_process_zero():
        return
    out, trained = trainer.args.output_dir, trainer.args.do_train
    path = os.path.join(out, THRESHOLD_FILE)
    if not trained and not update and is_model_folder(out) and _for_these_weights(path, out):
        logger.info("Kept the model folder's %s; this evaluation's best threshold %s is in eval_results.json "
                    "(--update_model_folder replaces it)", path, results["eval_best_threshold"])
        return
    calibrated_on = out if trained else model_dir
    write_json(path, {"null_score_diff_threshold": results["eval_best_threshold"], "best_f1": results["eval_best_f1"],
                      "best_exact": results["eval_best_exact"], "evaluated_questions": results["eval_examples"],
                      "model": Path(calibrated_on).resolve().name if os.path.isdir(calibrated_on) else calibrated_on,
                      "weights_sha256": weights_fingerprint(calibrated_on)})  # a name, not a path: it may be pushed


def _for_these_weights(path: str, folder: str) -> bool:
    """A recorded threshold that belongs to the folder's weights (one calibrated on others is stale: replaced)."""
    try:
        recorded = json.loads(Path(path).read_text(encoding="utf-8")).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        return False
    return recorded is None or recorded == weights_fingerprint(folder)


# --------------------------------------------------------------------------------------------
# Files and printed answers
# --------------------------------------------------------------------------------------------


def _stream_nbest(preds: QAPredictions, f: Any) -> None:
    """One question at a time, so memory does not grow with the number of questions times n_best."""
    f.write("{")
    for i, (qid, rows) in enumerate(preds.nbest.items()):
        f.write(("," if i else "") + json.dumps(qid, ensure_ascii=False) + ":" + json.dumps(rows, ensure_ascii=False))
    f.write("}")


def write_predictions(preds: QAPredictions, output_dir: str, prefix: str) -> list[str]:
    """`<prefix>_predictions.json`, `_nbest_predictions.json` (compact: it is large), and for v2
    `_null_odds.json` with the best non-empty spans in `_span_predictions.json` (the pair the official v2
    scorer takes with --na-prob-file)."""
    os.makedirs(output_dir, exist_ok=True)
    small = {"predictions": preds.predictions}
    if preds.null_odds:
        small.update(null_odds=preds.null_odds, span_predictions=preds.best_spans)
    paths = []
    for name, obj in small.items():
        paths.append(os.path.join(output_dir, f"{prefix}_{name}.json"))
        write_json(paths[-1], obj)
    paths.append(os.path.join(output_dir, f"{prefix}_nbest_predictions.json"))
    write_atomic(paths[-1], lambda f: _stream_nbest(preds, f))
    return paths


def answer_records(preds: QAPredictions, examples: Any) -> list[dict[str, Any]]:
    """One record per asked question: the answer ("" for none), its score and character span, and for v2 the
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
