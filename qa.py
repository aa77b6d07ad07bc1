#!/usr/bin/env python
"""Fine-tune and evaluate a 🤗 Transformers model for extractive question answering on SQuAD.

The pipeline, top to bottom in `main()`:
    load questions and model -> windows -> train -> predict -> post-process -> score -> write.

Same flags as HF's examples/pytorch/question-answering/run_qa.py. Launch with `python qa.py ...` or
`torchrun --nproc_per_node=N qa.py ...` (add --nnodes/--node_rank/--master_addr for several nodes).
Each step lives in a module named for it (README: docs/layout.md); this file holds the flags and the order.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TextIO

from transformers import PrinterCallback, Seq2SeqTrainingArguments, TrainingArguments, set_seed

import squad_v2
from qakit import launch
from qakit.adapters import merge_adapters, with_adapters
from qakit.answers import AnswerSettings
from qakit.card import write_card
from qakit.checkpoints import find_checkpoint
from qakit.errors import QAConfigError
from qakit.evalsets import combine
from qakit.family import QAFamily
from qakit.features import EvalSet, SplitWindows
from qakit.files import disk_errors
from qakit.flags import parse_args, redacted
from qakit.heads import HEADS
from qakit.lock import hold_output_dir
from qakit.models import check_unknown_share, load_model
from qakit.outputs import THRESHOLD_FILE, clear_earlier_outputs
from qakit.plots import draw_run_pictures
from qakit.report import Phases, finish, report_split
from trainer_qa import QuestionAnsweringTrainer, build_trainer, train
from utils_qa import ASK_PREFIX, SplitAnswers, prediction_threshold, record_threshold, starting_threshold


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "Model path or hub id."})
    config_name: str | None = field(default=None, metadata={"help": "Config name or path, if not the model's."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer name or path, if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and datasets are stored."})
    model_revision: str = field(default="main", metadata={"help": "Model version: branch, tag or commit id."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models and datasets."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run code from the model's hub repository."})
    torch_dtype: str = field(default="float32", metadata={
        "help": "Weights' dtype when loading: float32 (default, safe for training), bfloat16, float16 or auto "
                "(the checkpoint's). Use --bf16/--fp16 for mixed precision.",
        "choices": ["float32", "bfloat16", "float16", "auto"]})
    attn_implementation: str | None = field(default=None, metadata={
        "help": "Attention kernel, e.g. sdpa, eager or flash_attention_2 (default: the model's own choice)."})
    offsets_by_alignment: bool = field(default=False, metadata={
        "help": "Compute character offsets by aligning tokens with the text even for a fast tokenizer "
                "(tokenizers without offsets always do)."})
    answer_head: str = field(default="auto", metadata={
        "help": "How the model answers: span (start/end head, as run_qa.py), beam (XLNet/XLM/Flaubert beam-search "
                "head, as run_qa_beam_search.py), generate (encoder-decoder writes the answer, as "
                "run_seq2seq_qa.py; also --predict_with_generate). auto: generate for a checkpoint saved as a "
                "seq2seq LM, else span.", "choices": list(HEADS)})
    allow_untrained_head: bool = field(default=False, metadata={
        "help": "Evaluate or predict even when the answer head's weights are not in the checkpoint (they are "
                "random then: for smoke tests only)."})
    lora_r: int | None = field(default=None, metadata={
        "help": "Train LoRA adapters of this rank beside the frozen weights (the answer head in full): a big model's "
                "training state on one or two GPUs. See docs/big-models.md#adapters."})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA scaling numerator (default 2 x --lora_r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: list[str] | None = field(default=None, metadata={
        "help": "Layer names that get adapters (default: every linear layer of the model, named in the log)."})
    merge_lora: bool = field(default=False, metadata={
        "help": "Also write the model with the adapters folded in, standalone, to OUTPUT_DIR/merged."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: the frozen weights in 4-bit NF4 (CUDA)."})
    load_in_8bit: bool = field(default=False, metadata={"help": "The frozen weights in 8-bit (CUDA)."})
    start_n_top: int | None = field(default=None, metadata={
        "help": "Beam head: start positions kept per window (default: the config's, 5)."})
    end_n_top: int | None = field(default=None, metadata={
        "help": "Beam head: end positions kept per start (default: the config's, 5)."})


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset, e.g. squad_v2 or squad."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    train_file: list[str] | None = field(default=None, metadata={
        "help": "Training file(s): SQuAD JSON, flat JSON, JSONL or MRQA, .gz too; several are mixed, each capped at "
                "--max_train_samples."})
    validation_file: list[str] | None = field(default=None, metadata={
        "help": "Evaluation file(s), same formats; several (PATH, NAME=PATH or hub:DATASET[:CONFIG]) are scored "
                "each under eval_NAME, with eval_f1/eval_exact their macro average."})
    language: list[str] | None = field(default=None, metadata={
        "help": "Score by MLQA's rules for this language (zh, de, es, ar, hi, vi, en, ...; docs/languages.md): one "
                "for every set, or one per --validation_file. Default: SQuAD's official English rules."})
    test_file: str | None = field(default=None, metadata={"help": "Prediction file (answers optional)."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Tokenize again even if cached."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenizing."})
    max_seq_length: int = field(default=384, metadata={"help": "Tokens per window, question included."})
    pad_to_max_length: bool = field(default=False, metadata={
        "help": "Pad every window to max_seq_length. Default: pad each batch to its longest window (HF's "
                "run_qa defaults to True; the same answers, only slower; logits may differ in float32 rounding, "
                "as attention kernels sum in an order that depends on the padded length)."})
    max_train_samples: int | None = field(default=None, metadata={
        "help": "Use only this many training questions (of each training file)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only this many evaluation questions."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only this many test questions."})
    version_2_with_negative: bool = field(default=False, metadata={"help": "Some questions have no answer (v2)."})
    null_score_diff_threshold: str | None = field(default=None, metadata={
        "help": "v2: answer empty when null score - best span score is above this number. `best`: predict with "
                "the evaluation's best_f1_thresh (needs --do_eval). Default: the threshold the model folder "
                f"records ({THRESHOLD_FILE}, written by an evaluation), else 0.0."})
    update_model_folder: bool = field(default=False, metadata={
        "help": "A run that does not train keeps a model folder's calibrated threshold and model card (its own "
                "figures go to eval_results.json); pass this to replace them with this evaluation's."})
    doc_stride: int = field(default=128, metadata={"help": "Context tokens shared by consecutive windows."})
    n_best_size: int = field(default=20, metadata={"help": "Candidate answers kept per question."})
    max_answer_length: int = field(default=30, metadata={
        "help": "Longest answer, in tokens (generative models: longest training target)."})
    val_max_answer_length: int | None = field(default=None, metadata={
        "help": "Generative models: longest generated answer at evaluation (default: --max_answer_length; "
                "--generation_max_length overrides both)."})
    ignore_pad_token_for_loss: bool = field(default=True, metadata={
        "help": "Generative models: padded target positions do not count in the loss."})
    question_column: str = field(default="question", metadata={"help": "Question column of a hub dataset."})
    context_column: str = field(default="context", metadata={"help": "Context column of a hub dataset."})
    answer_column: str = field(default="answers", metadata={"help": "Answers column of a hub dataset."})
    question: str | None = field(default=None, metadata={
        "help": "Ask one question (with --context): the answer is printed as a JSON line, nothing is written."})
    context: str | None = field(default=None, metadata={"help": "The text --question is answered from."})
    questions_file: str | None = field(default=None, metadata={
        "help": "Ask the questions of a JSON Lines file of {question, context} (id optional; - reads standard "
                "input): answers printed as JSON lines, the same as --do_predict gives."})
    serve: bool = field(default=False, metadata={
        "help": "Answer questions over HTTP with the model (POST /answer); see README 'Serve'."})
    host: str = field(default="127.0.0.1", metadata={"help": "--serve: the address to listen on."})
    port: int = field(default=8000, metadata={"help": "--serve: the port to listen on (1-65535)."})
    backend: str = field(default="torch", metadata={
        "help": "--serve: what runs the model: torch, or onnxruntime (CPU; onnxruntime-int8: the int8 graph) on a "
                "folder `python -m qakit.onnx` wrote.", "choices": ["torch", "onnxruntime", "onnxruntime-int8"]})

    @property
    def asking(self) -> bool:
        """Questions asked on the command line or in a JSON Lines file, not a dataset."""
        return bool(self.question or self.context or self.questions_file)

    def __post_init__(self) -> None:
        data = self.dataset_name or self.train_file or self.validation_file or self.test_file or self.asking
        if not (data or self.serve):
            raise QAConfigError("no data: pass --dataset_name, or --train_file/--validation_file/--test_file (or "
                                "ask with --question and --context, or --questions_file, or --serve)")
        if self.serve and data:
            raise QAConfigError("--serve answers the questions sent to it over HTTP: drop --dataset_name, "
                                "--train_file, --validation_file, --test_file, --question and --questions_file")
        if not 1 <= self.port <= 65535:
            raise QAConfigError(f"--port must be 1 to 65535 (got {self.port})")
        if not self.host.strip():
            raise QAConfigError("--host must be an address to listen on, e.g. 127.0.0.1 or 0.0.0.0 (got nothing)")
        for name in ("n_best_size", "max_answer_length", "max_seq_length"):
            if getattr(self, name) < 1:
                raise QAConfigError(f"--{name} must be at least 1 (got {getattr(self, name)})")
        if self.doc_stride < 0:
            raise QAConfigError(f"--doc_stride must be 0 or more (got {self.doc_stride})")
        for name in ("max_train_samples", "max_eval_samples", "max_predict_samples", "val_max_answer_length"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise QAConfigError(f"--{name} must be at least 1 (got {getattr(self, name)})")
        if self.null_score_diff_threshold not in (None, "best"):
            try:
                finite = math.isfinite(float(self.null_score_diff_threshold))
            except ValueError:
                finite = False
            if not finite:
                raise QAConfigError(f"--null_score_diff_threshold must be a finite number or best (got "
                                    f"{self.null_score_diff_threshold!r})")


@dataclass
class _StoppingArguments(Seq2SeqTrainingArguments):  # TrainingArguments plus HF's generation flags
    early_stopping_patience: int | None = field(default=None, metadata={
        "help": "Stop after this many evaluations without improving --metric_for_best_model (needs "
                "--load_best_model_at_end and an --eval_strategy)."})

    def __getstate__(self) -> dict:
        """What training_args.bin (written into the model folder and every checkpoint) keeps: never the token."""
        return {**self.__dict__, "hub_token": None}


_GROUPED = "Batches of windows of similar length (our default; HF's is random): less padding, the same F1."
if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:  # transformers 5
    @dataclass
    class QATrainingArguments(_StoppingArguments):
        train_sampling_strategy: str = field(default="group_by_length", metadata={
            "help": f"{_GROUPED} Or random, sequential, batch_rebalance."})
else:  # transformers 4.x
    @dataclass
    class QATrainingArguments(_StoppingArguments):
        group_by_length: bool = field(default=True, metadata={"help": f"{_GROUPED} --group_by_length false: random."})


ARGUMENTS = (ModelArguments, DataTrainingArguments, QATrainingArguments)


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, float]:
    """load -> windows -> train -> predict -> post-process -> score -> write; the run's results."""
    model_args, data_args, training_args, overwrite = parse_args(ARGUMENTS, argv)
    if data_args.serve:  # answers over HTTP until stopped, and writes nothing: no output folder, no lock
        return serve(model_args, data_args, training_args)
    with ExitStack() as stack:
        answers = stack.enter_context(launch.answers_only_on_stdout(data_args.asking, training_args))
        launch.setup_logging(training_args, quiet=data_args.asking)
        stack.enter_context(hold_output_dir(training_args.output_dir, training_args.process_index == 0))
        checkpoint = find_checkpoint(training_args, overwrite)
        set_seed(training_args.seed)
        phases = Phases()
        # Load: questions, model, and how this model family and head are fed
        with phases.time("load"):
            raw, reports = squad_v2.load_questions(data_args, model_args.cache_dir, model_args.token)
            model, tokenizer, head = load_model(model_args, training_args)
            family = QAFamily.detect(model, tokenizer, data_args.max_seq_length, model_args.offsets_by_alignment)
            check_unknown_share(family, raw, model_args.tokenizer_name or model_args.model_name_or_path)
            head = head.prepare(family, model, data_args, training_args)
            model = with_adapters(model, model_args, training_args, head.generative)  # LoRA, or an adapter folder's
            threshold = starting_threshold(data_args.null_score_diff_threshold, data_args.version_2_with_negative,
                                           model_args.model_name_or_path)  # before any process clears OUTPUT_DIR

        # Windows: questions -> model inputs (cached)
        windows = SplitWindows(raw, family, head.text_inputs, data_args, training_args, model_args.cache_dir, phases)
        train_features = windows.training() if training_args.do_train else None
        eval_sets = windows.evaluation() if training_args.do_eval else []
        settings = AnswerSettings(data_args.n_best_size, data_args.max_answer_length,
                                  data_args.version_2_with_negative, threshold)
        trainer = build_trainer(model, tokenizer, family, head, train_features, eval_sets, settings, data_args,
                                training_args)
        clear_earlier_outputs(training_args, data_args.asking, hasattr(model, "peft_config"),
                              model_args.model_name_or_path)  # the input is sound: the earlier run's files go
        arguments = redacted(sys.argv[1:] if argv is None else argv)  # written into the card: no tokens
        results: dict[str, float] = {}
        with disk_errors(training_args.output_dir):
            if training_args.do_train:  # Train
                results |= train(trainer, checkpoint, arguments, phases)

            # Predict -> post-process -> score -> write (`answer`): the evaluation questions, then the test ones
            if training_args.do_eval:
                results |= evaluate(trainer, eval_sets, settings, phases)
                record_threshold(trainer, results, model_args.model_name_or_path, data_args.update_model_folder)
            if training_args.do_predict:
                threshold = prediction_threshold(data_args.null_score_diff_threshold, results, threshold)
                test_set = windows.test(reports)
                predicting = dataclasses.replace(settings, null_score_diff_threshold=threshold)
                if data_args.asking:
                    trainer.remove_callback(PrinterCallback)  # it would print the metrics among the answers
                    return answer(trainer, test_set, ASK_PREFIX, predicting, phases, answers)
                results |= answer(trainer, test_set, "predict", predicting, phases)

            # What the run leaves: the model card, the pictures, the report
            with phases.time("write"):
                write_card(trainer, results, reports, arguments, model_args, data_args)
                if model_args.merge_lora:  # last: the merge changes the trainer's model in place
                    merge_adapters(trainer)
                draw_run_pictures(trainer, eval_sets)
            results |= finish(trainer, phases, results)
        return results


def evaluate(trainer: QuestionAnsweringTrainer, sets: list[EvalSet], settings: AnswerSettings,
             phases: Phases) -> dict[str, float]:
    """Each evaluation set answered, scored and written under its own prefix; several sets: also their macro
    average, kept as eval_* in eval_results.json with every set's figures."""
    per_set = [answer(trainer, data, data.prefix, settings, phases) for data in sets]
    if len(sets) == 1:
        return per_set[0]
    return report_split(trainer, "eval", combine(per_set, [data.prefix for data in sets]))


def answer(trainer: QuestionAnsweringTrainer, data: EvalSet, prefix: str, settings: AnswerSettings, phases: Phases,
           answers: TextIO | None = None) -> dict[str, float]:
    """One split's predict -> post-process -> score -> write, timed as the run's evaluate or predict phase (its
    files as write), its metrics logged and kept (asked questions: their answers printed, nothing kept)."""
    phase = "evaluate" if prefix.startswith("eval") else "predict"
    split = SplitAnswers(trainer, data, prefix, settings)
    with phases.time(phase):
        candidates = split.predict()  # every window's best candidates, found on the device, gathered
        preds = split.postprocess(candidates)  # each question's answer, n-best and null odds, by the head
        split.score(preds)  # the official rules, when the questions have gold answers
        metrics = trainer.announce(split.write(preds, answers), prefix)  # the files (asked: printed answers)
    if prefix == ASK_PREFIX:
        return metrics
    phases.move(phase, "write", metrics[f"{prefix}_write_runtime"])
    return report_split(trainer, prefix, metrics)


def serve(model_args: ModelArguments, data_args: DataTrainingArguments,
          training_args: QATrainingArguments) -> dict[str, float]:
    """--serve: the model answering over HTTP until stopped (FastAPI and uvicorn are imported only for this)."""
    from qakit.server import serve_from_args

    return serve_from_args(model_args, data_args, training_args)


def cli(argv: list[str] | None = None) -> None:
    """The command: known user errors end with one clear line and a non-zero exit, not a traceback."""
    launch.run(main, argv)


if __name__ == "__main__":
    cli()
