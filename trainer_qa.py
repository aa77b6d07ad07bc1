"""A Trainer whose evaluate() and predict() answer questions, not windows.

The evaluation loop runs over windows sorted by length (so padding stays small) and keeps only each
window's best start/end candidates, computed on the device; every rank then holds all windows exactly
once, restores their order, post-processes, scores with our metric and (main process only) writes files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import Trainer

from metrics.squad.compute_score import score_v1
from metrics.squad_v2.compute_score import score_v2

from utils_qa import (EVAL_META, Candidates, QAPredictions, WindowIndex, candidates_from_arrays, postprocess,
                      top_candidates, window_lengths, write_predictions)

logger = logging.getLogger(__name__)


@dataclass
class AnswerSettings:
    """The post-processing flags, as HF's run_qa names them."""

    n_best_size: int = 20
    max_answer_length: int = 30
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0


@dataclass
class EvalSet:
    """Questions, their windows, and what is needed to map windows back to text."""

    examples: Any  # datasets.Dataset of questions
    features: Any  # datasets.Dataset of windows (model columns + bookkeeping)
    has_answers: bool = True

    def __post_init__(self) -> None:
        self.windows = WindowIndex.from_features(self.features)
        self.by_length = np.argsort(-window_lengths(self.features), kind="stable")
        model_cols = self.features.remove_columns([c for c in EVAL_META if c in self.features.column_names])
        self.loader_dataset = model_cols.add_column("feature_index", np.arange(len(model_cols))).select(
            self.by_length)
        self.ids = list(self.examples["id"])  # plain lists: a datasets Column costs ~35 us per index
        self.contexts = shared_strings(self.examples, "context")


def shared_strings(ds: Any, column: str, batch_size: int = 1000) -> list[str]:
    """A string column as a list in which equal values are one object.

    SQuAD asks ~10 questions per paragraph; one str per question would hold each context ten times.
    """
    seen: dict[str, str] = {}
    values: list[str] = []
    for batch in ds.select_columns([column]).iter(batch_size=batch_size):
        values += [seen.setdefault(v, v) for v in batch[column]]
    return values


def score(examples: Any, preds: QAPredictions, settings: AnswerSettings) -> dict[str, float]:
    """Official-rule scores: v2 sweeps the real null odds, so best_f1_thresh is a usable threshold."""
    gold = {qid: list(a["text"]) for qid, a in zip(examples["id"], examples["answers"])}
    if settings.version_2_with_negative:
        return dict(score_v2(gold, preds.best_spans, na_probs=preds.null_odds,
                             na_prob_thresh=settings.null_score_diff_threshold))
    return dict(score_v1(gold, preds.predictions))


class QuestionAnsweringTrainer(Trainer):
    def __init__(self, *args, eval_set: EvalSet | None = None, answer_settings: AnswerSettings | None = None,
                 **kwargs):
        super().__init__(*args, eval_dataset=eval_set.loader_dataset if eval_set else None, **kwargs)
        # the windows carry bookkeeping (context range, null position, window index) the model does not take
        self.args.remove_unused_columns = False
        self.eval_set = eval_set
        self.answer_settings = answer_settings or AnswerSettings()

    def _get_eval_sampler(self, eval_dataset):
        """Keep the length order of the windows, even when training groups batches by length."""
        if self.args.world_size > 1:
            return None  # accelerate shards the batches in order
        return torch.utils.data.SequentialSampler(eval_dataset)

    def compute_loss(self, model, inputs, *args, **kwargs):
        inputs.pop("qa_meta", None)
        return super().compute_loss(model, inputs, *args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Forward one batch and keep only each window's best candidates (on the device)."""
        inputs = self._prepare_inputs(inputs)
        meta = inputs.pop("qa_meta")
        inputs.pop("start_positions", None)
        inputs.pop("end_positions", None)
        with torch.no_grad(), self.compute_loss_context_manager():
            out = model(**inputs)
        cand = top_candidates(out.start_logits, out.end_logits, meta["context_start"], meta["context_end"],
                              meta["null_index"], self.answer_settings.n_best_size,
                              self.answer_settings.max_answer_length)
        return None, (meta["feature_index"], *cand), None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if eval_dataset is not None and not isinstance(eval_dataset, EvalSet):
            raise TypeError("QuestionAnsweringTrainer.evaluate takes an EvalSet (questions with their windows)")
        metrics, _ = self._answer(eval_dataset or self.eval_set, metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "predict"):
        metrics, preds = self._answer(test_dataset, metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics)
        return preds, metrics

    def _answer(self, data: EvalSet, prefix: str) -> tuple[dict[str, float], QAPredictions]:
        """Windows -> candidates -> answers -> files and scores, timed end to end."""
        if data is None:
            raise ValueError("nothing to evaluate: pass --validation_file or --dataset_name with a validation split")
        start = time.time()
        loader = self.get_eval_dataloader(data.loader_dataset)
        out = self.evaluation_loop(loader, description=prefix.capitalize(), prediction_loss_only=False,
                                   metric_key_prefix=prefix)
        cand = self._restore_order(out.predictions, len(data.features))
        loop_metrics = out.metrics
        del out  # the gathered candidates, now reordered in `cand`
        s = self.answer_settings
        preds = postprocess(data.ids, data.contexts, data.windows, cand, s.n_best_size, s.version_2_with_negative,
                            s.null_score_diff_threshold)
        forward = time.time() - start
        metrics = {k: v for k, v in loop_metrics.items() if not k.endswith("_loss")}
        metrics.update({f"{prefix}_runtime": round(forward, 4), f"{prefix}_samples": len(data.features),
                        f"{prefix}_samples_per_second": round(len(data.features) / forward, 3)})
        if self.args.should_save:
            write_predictions(preds, self.args.output_dir, prefix)
        if data.has_answers:
            metrics.update({f"{prefix}_{k}": v for k, v in score(data.examples, preds, s).items()})
        elif prefix == "eval":
            logger.warning("the evaluation questions have no answers: predictions written, nothing scored")
        elapsed = time.time() - start
        metrics[f"{prefix}_examples"] = len(data.ids)
        metrics[f"{prefix}_windows"] = len(data.features)
        metrics[f"{prefix}_examples_per_second"] = round(len(data.ids) / elapsed, 3)
        metrics[f"{prefix}_windows_per_second"] = round(len(data.features) / elapsed, 3)
        metrics[f"{prefix}_total_runtime"] = round(elapsed, 4)
        return metrics, preds

    @staticmethod
    def _restore_order(gathered: tuple[np.ndarray, ...], n_windows: int) -> Candidates:
        """Put gathered windows back in feature order, checking each arrived exactly once."""
        feature_index = np.asarray(gathered[0]).astype(np.int64)
        if len(feature_index) != n_windows or not np.array_equal(np.sort(feature_index), np.arange(n_windows)):
            raise RuntimeError(f"evaluation gathered {len(feature_index)} windows for {n_windows}: some were lost "
                               "or duplicated across processes (--dataloader_drop_last drops the last batch)")
        inverse = np.empty(n_windows, dtype=np.int64)
        inverse[feature_index] = np.arange(n_windows)
        return candidates_from_arrays(tuple(np.asarray(a)[inverse] for a in gathered[1:]))
