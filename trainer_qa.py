"""A Trainer whose evaluate() and predict() answer questions, not windows.

The trainer does the device side only: `prediction_step` keeps each window's best candidates (spans
found on the device, or for a generative model its generated answers), the evaluation loop gathers them
across processes, and `predict_candidates` puts them back in window order. What becomes of them (post-process, score, write) is the `answer_questions`
function qa.py passes in, so the same steps run for the final evaluation and during training; it reads
the post-processing flags from `answer_settings`, which the device side uses too.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable

import numpy as np
import torch
from transformers import Trainer
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from qakit.checkpoints import whole_run_train_loss
from qakit.features import EvalSet
from qakit.files import atomic_path, write_json
from qakit.beam import beam_candidates
from qakit.generative import Generated, GenerationSettings, generated_candidates
from utils_qa import AnswerSettings, Candidates, QAPredictions, candidates_from_arrays, top_candidates

AnswerFn = Callable[["QuestionAnsweringTrainer", EvalSet, str], tuple[dict[str, float], QAPredictions]]
logger = logging.getLogger(__name__)


class QuestionAnsweringTrainer(Trainer):
    def __init__(self, *args: Any, eval_set: EvalSet | None = None, answer_settings: AnswerSettings | None = None,
                 answer_questions: AnswerFn | None = None, head: str = "span",
                 generation: GenerationSettings | None = None, **kwargs: Any):
        super().__init__(*args, eval_dataset=eval_set.loader_dataset if eval_set else None, **kwargs)
        self.head = head  # span, beam or generate: see qakit/heads.py
        self.generation = generation
        self.card_sections = ""  # markdown qa.py adds to the model card (qakit/card.py)
        # the windows carry bookkeeping (context range, null position, window index) the model does not take
        self.args.remove_unused_columns = False
        self.eval_set = eval_set
        self.answer_settings = answer_settings or AnswerSettings()
        self.answer_questions = answer_questions

    # ---- public hooks -----------------------------------------------------------------------

    def compute_loss(self, model, inputs, *args, **kwargs):
        inputs.pop("qa_meta", None)
        return super().compute_loss(model, inputs, *args, **kwargs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if eval_dataset is not None and not isinstance(eval_dataset, EvalSet):
            raise TypeError("QuestionAnsweringTrainer.evaluate takes an EvalSet (questions with their windows)")
        metrics, _ = self._answer(eval_dataset or self.eval_set, metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def predict(self, test_dataset: EvalSet, ignore_keys=None,
                metric_key_prefix: str = "predict") -> tuple[QAPredictions, dict[str, float]]:
        metrics, preds = self._answer(test_dataset, metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics)
        return preds, metrics

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """As Trainer.train, but train_loss is the mean over the whole run, also after a resume (Trainer's
        own covers only the steps since the resume)."""
        resumed_at = 0
        if isinstance(resume_from_checkpoint, str):  # qa.py passes the complete checkpoint it chose
            with open(os.path.join(resume_from_checkpoint, "trainer_state.json"), encoding="utf-8") as f:
                resumed_at = json.load(f)["global_step"]
        out = super().train(resume_from_checkpoint, *args, **kwargs)
        if resumed_at:
            loss = whole_run_train_loss(self.state.log_history, resumed_at, out.global_step, out.training_loss)
            out.metrics["train_loss"] = loss
            out = out._replace(training_loss=loss)
            if self.state.log_history and "train_loss" in self.state.log_history[-1]:
                self.state.log_history[-1]["train_loss"] = loss  # the summary entry Trainer just appended
        return out

    def save_metrics(self, split: str, metrics: dict[str, float], combined: bool = True) -> None:
        """Trainer's files, written whole or not at all; a damaged all_results.json of an earlier run is
        replaced (with a warning) rather than crashing this run at its very end."""
        if not self.is_world_process_zero():
            return
        write_json(os.path.join(self.args.output_dir, f"{split}_results.json"), metrics, indent=4, sort_keys=True)
        if combined:
            path = os.path.join(self.args.output_dir, "all_results.json")
            everything = _read_results(path)
            everything.update(metrics)
            write_json(path, everything, indent=4, sort_keys=True)

    def save_state(self) -> None:
        """Trainer's own trainer_state.json, written whole or not at all."""
        if self.is_world_process_zero():
            with atomic_path(os.path.join(self.args.output_dir, "trainer_state.json")) as tmp:
                self.state.save_to_json(tmp)

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """Trainer's README.md, then our sections; push_to_hub calls this before it uploads the folder."""
        super().create_model_card(*args, **kwargs)
        if self.card_sections and self.is_world_process_zero():
            with open(os.path.join(self.args.output_dir, "README.md"), "a", encoding="utf-8") as f:
                f.write("\n" + self.card_sections)

    def _answer(self, data: EvalSet | None, prefix: str) -> tuple[dict[str, float], QAPredictions]:
        if data is None:
            raise ValueError("nothing to evaluate: pass --validation_file or --dataset_name with a validation split")
        if self.answer_questions is None:
            raise ValueError("QuestionAnsweringTrainer needs answer_questions to turn candidates into answers")
        return self.answer_questions(self, data, prefix)

    # ---- Trainer internals: the same names and signatures in transformers 4.57 and 5.x ------

    def _prepare_inputs(self, inputs):
        """The beam head's p_mask in the model's dtype: a float32 mask breaks a model loaded in half precision."""
        inputs = super()._prepare_inputs(inputs)
        if "p_mask" in inputs:
            inputs["p_mask"] = inputs["p_mask"].to(self.model.dtype)
        return inputs

    def _get_train_sampler(self, *args: Any, **kwargs: Any):
        """Length-grouped batches whose order depends only on (seed, epoch), so a resumed run is exact."""
        sampler = super()._get_train_sampler(*args, **kwargs)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            sampler = EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
        return sampler

    def _get_eval_sampler(self, eval_dataset):
        """Keep the length order of the windows, even when training groups batches by length (5.x would
        give evaluation a length-grouped sampler too)."""
        if self.args.world_size > 1:
            return None  # accelerate shards the batches in order
        return torch.utils.data.SequentialSampler(eval_dataset)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Forward one batch and keep only each window's best candidates (on the device)."""
        inputs = self._prepare_inputs(inputs)  # to the device, nested `qa_meta` included
        meta = inputs.pop("qa_meta")
        for key in ("start_positions", "end_positions", "is_impossible", "labels"):
            inputs.pop(key, None)
        s = self.answer_settings
        with torch.no_grad(), self.compute_loss_context_manager():
            if self.head == "generate":  # the unwrapped model generates, as in HF's Seq2SeqTrainer
                synced = is_deepspeed_zero3_enabled() or getattr(self, "is_fsdp_enabled", False)
                cand = generated_candidates(self.model, inputs["input_ids"], inputs["attention_mask"],
                                            self.generation, synced_gpus=synced)
                return None, (meta["feature_index"], *cand), None
            out = model(**inputs)
        if self.head == "beam":
            cand = beam_candidates(out.start_top_log_probs, out.start_top_index, out.end_top_log_probs,
                                   out.end_top_index, out.cls_logits, meta["context_start"], meta["context_end"],
                                   s.n_best_size, s.max_answer_length)
        else:
            cand = top_candidates(out.start_logits, out.end_logits, meta["context_start"], meta["context_end"],
                                  meta["null_index"], s.n_best_size, s.max_answer_length)
        return None, (meta["feature_index"], *cand), None

    def predict_candidates(self, data: EvalSet, prefix: str) -> tuple[Candidates | Generated, dict[str, float]]:
        """Every window's candidates in window order, on every process, with the loop's own metrics."""
        loader = self.get_eval_dataloader(data.loader_dataset)
        out = self.evaluation_loop(loader, description=prefix.capitalize(), prediction_loss_only=False,
                                   metric_key_prefix=prefix)
        loop_metrics = {k: v for k, v in out.metrics.items() if not k.endswith("_loss")}
        arrays = restore_order(out.predictions, len(data.features))
        return (Generated.from_arrays(arrays) if self.head == "generate" else candidates_from_arrays(arrays)), \
            loop_metrics


def _read_results(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        if isinstance(results, dict):
            return results
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        pass
    logger.warning("%s from an earlier run is damaged; writing it anew with this run's results", path)
    return {}


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """HF's length-grouped order, drawn from (seed, epoch) alone, as accelerate's seedable random sampler is.

    HF's draws each epoch's permutation from the global torch RNG when the epoch's iterator starts, so a run
    resumed mid-epoch draws another order, skips the wrong batches and trains on others. The Trainer calls
    set_epoch before every epoch, also on the loader that skips the batches already trained.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        yield from get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)
        self.epoch += 1  # a loop that never calls set_epoch still gets a new order each pass


def restore_order(gathered: tuple[np.ndarray, ...], n_windows: int) -> tuple[np.ndarray, ...]:
    """Put gathered windows back in feature order, checking each arrived exactly once."""
    feature_index = np.asarray(gathered[0]).astype(np.int64)
    if len(feature_index) != n_windows or not np.array_equal(np.sort(feature_index), np.arange(n_windows)):
        raise RuntimeError(f"evaluation gathered {len(feature_index)} windows for {n_windows}: some were lost "
                           "or duplicated across processes (--dataloader_drop_last drops the last batch)")
    inverse = np.empty(n_windows, dtype=np.int64)
    inverse[feature_index] = np.arange(n_windows)
    return tuple(np.asarray(a)[inverse] for a in gathered[1:])
