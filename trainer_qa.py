"""A Trainer whose evaluations answer questions, not windows.

The trainer does the device side only: `prediction_step` keeps each window's best candidates (the head's:
spans found on the device, or a generative model's generated answers), the evaluation loop gathers them
across processes, and `predict_candidates` puts them back in window order. What becomes of them
(post-process, score, write) is `utils_qa`'s, called by `qa.py`'s `main()` and, during training, by
`evaluate()`; both read the post-processing flags from `answer_settings`, which the device side uses too.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Callable

import numpy as np
import torch
from transformers import EarlyStoppingCallback, Trainer
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from qakit.answers import AnswerSettings
from qakit.batches import restore_order
from qakit.checkpoints import describe_best, whole_run_train_loss
from qakit.engines import check_engine, check_launch, choose_fsdp_layers
from qakit.family import QAFamily
from qakit.evalsets import combine
from qakit.features import EvalSet
from qakit.files import atomic_path, write_json
from qakit.heads import SpanHead
from qakit.preemption import StopOnSignal
from qakit.report import Phases, report_split, training_footprint
from utils_qa import answer_split

logger = logging.getLogger(__name__)


class QuestionAnsweringTrainer(Trainer):
    def __init__(self, *args: Any, head: SpanHead, eval_sets: list[EvalSet] | None = None,
                 answer_settings: AnswerSettings | None = None, **kwargs: Any):
        super().__init__(*args, eval_dataset=eval_sets[0].loader_dataset if eval_sets else None, **kwargs)
        self.head = head  # how the model answers: qakit/heads.py
        self.card_sections = ""  # markdown qa.py adds to the model card (qakit/card.py)
        self.finish_card: Callable[[str], None] | None = None  # HF's part of the card made to travel (qakit/card.py)
        # the windows carry bookkeeping (context range, null position, window index) the model does not take
        self.args.remove_unused_columns = False
        self.eval_sets = eval_sets or []
        self.answer_settings = answer_settings or AnswerSettings()
        self.stop_on_signal = StopOnSignal()  # SIGTERM/SIGUSR1: checkpoint at the step's end, then stop
        self.add_callback(self.stop_on_signal)

    # ---- public hooks -----------------------------------------------------------------------

    def compute_loss(self, model, inputs, *args, **kwargs):
        inputs.pop("qa_meta", None)
        return super().compute_loss(model, inputs, *args, **kwargs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """The evaluations during training (--eval_strategy): the evaluation questions answered and scored."""
        if eval_dataset is not None and not isinstance(eval_dataset, EvalSet):
            raise TypeError("QuestionAnsweringTrainer.evaluate takes an EvalSet (questions with their windows)")
        sets = [eval_dataset] if eval_dataset is not None else self.eval_sets
        if not sets:
            raise ValueError("nothing to evaluate: pass --validation_file or --dataset_name with a validation split")
        if len(sets) == 1:
            return self.announce(answer_split(self, sets[0], metric_key_prefix, self.answer_settings),
                                 metric_key_prefix)
        per_set = [answer_split(self, data, data.prefix, self.answer_settings) for data in sets]
        return self.announce(combine(per_set, [data.prefix for data in sets]), metric_key_prefix)

    def announce(self, metrics: dict[str, float], prefix: str) -> dict[str, float]:
        """A split's metrics to the log and the callbacks (best model, early stopping, trackers), as
        Trainer.evaluate and Trainer.predict do."""
        self.log(metrics)
        event = self.callback_handler.on_evaluate if prefix == "eval" else self.callback_handler.on_predict
        self.control = event(self.args, self.state, self.control, metrics)
        return metrics

    @property
    def is_sharded(self) -> bool:
        """Parameters sharded over processes (ZeRO-3, FSDP): every process must step generation in sync."""
        return is_deepspeed_zero3_enabled() or getattr(self, "is_fsdp_enabled", False)

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
        """Trainer's README.md, then our sections, then HF's part made to travel (`qakit.card`); push_to_hub
        calls this before it uploads the folder."""
        super().create_model_card(*args, **kwargs)
        if not self.is_world_process_zero():
            return
        path = os.path.join(self.args.output_dir, "README.md")
        if self.card_sections:
            with open(path, "a", encoding="utf-8") as f:
                f.write("\n" + self.card_sections)
        if self.finish_card is not None:
            self.finish_card(path)

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
            sampler = EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed, self._epoch_starting)
        return sampler

    def _epoch_starting(self) -> int:
        """The epoch a training pass starts: the state's (fractional once steps ran) epoch, floored."""
        return math.floor((self.state.epoch or 0) + 1e-6)

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
        with torch.no_grad(), self.compute_loss_context_manager():
            answering = self.model if self.head.generative else model  # generate() needs the unwrapped model
            cand = self.head.device_candidates(answering, inputs, meta, self.answer_settings, self.is_sharded)
        return None, (meta["feature_index"], *cand), None

    def predict_candidates(self, data: EvalSet, prefix: str) -> tuple[tuple[np.ndarray, ...], dict[str, float]]:
        """Every window's candidates in window order, on every process, with the loop's own metrics."""
        loader = self.get_eval_dataloader(data.loader_dataset)
        out = self.evaluation_loop(loader, description=prefix.capitalize(), prediction_loss_only=False,
                                   metric_key_prefix=prefix)
        loop_metrics = {k: v for k, v in out.metrics.items() if not k.endswith("_loss")}
        return restore_order(out.predictions, len(data.features)), loop_metrics


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
    resumed mid-epoch draws another order, skips the wrong batches and trains on others. The epoch comes from
    `epoch_of` (the trainer's state) when given: in a multi-process run resumed mid-epoch, the loader that skips
    the batches already trained (accelerate's, around its BatchSamplerShard) never forwards set_epoch.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int, epoch_of: Callable[[], int] | None = None):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0
        self.epoch_of = epoch_of

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.epoch_of is not None:
            self.epoch = self.epoch_of()
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        yield from get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)
        self.epoch += 1  # a loop that never calls set_epoch still gets a new order each pass


def build_trainer(model: torch.nn.Module, tokenizer: Any, family: QAFamily, head: SpanHead,
                  train_features: Any | None, eval_sets: list[EvalSet], settings: AnswerSettings, data_args: Any,
                  training_args: Any) -> QuestionAnsweringTrainer:
    """The trainer with the batches this head and model family need, on an engine said in the log."""
    check_launch(training_args)
    trainer = QuestionAnsweringTrainer(
        model=model, args=training_args, train_dataset=train_features, eval_sets=eval_sets, processing_class=tokenizer,
        data_collator=head.collator(family, data_args), answer_settings=settings, head=head)
    choose_fsdp_layers(trainer)
    check_engine(trainer)  # DDP, FSDP or DeepSpeed, said in the log; never a silent fallback
    if training_args.early_stopping_patience:
        trainer.add_callback(EarlyStoppingCallback(training_args.early_stopping_patience))
    return trainer


def train(trainer: QuestionAnsweringTrainer, checkpoint: str | None, arguments: list[str],
          phases: Phases) -> dict[str, float]:
    """Train (resuming `checkpoint`); keep the model, the metrics, the state and which checkpoint was best."""
    with phases.time("train"):
        out = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.stop_on_signal.check(trainer.args.output_dir)  # stopped by the scheduler: the checkpoint is the run
    with phases.time("write"):
        if getattr(trainer, "is_fsdp_enabled", False):
            # with a sharded state dict (fast to resume) save_model writes no model at all, and says nothing:
            # the final model is gathered whole, so from_pretrained loads it on one device
            trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        trainer.save_model()
        metrics = report_split(trainer, "train", dict(out.metrics, train_samples=len(trainer.train_dataset),
                                                      **training_footprint(trainer)))
        trainer.save_state()
        if trainer.state.best_model_checkpoint and trainer.is_world_process_zero():
            write_json(os.path.join(trainer.args.output_dir, "best_checkpoint.json"),
                       describe_best(trainer.state, trainer.args.metric_for_best_model, arguments))
    return metrics
