#!/usr/bin/env python
"""Fine-tune and evaluate a 🤗 Transformers model for extractive question answering on SQuAD.

The data flow, top to bottom in `main()` and `answer_questions()`:
    load questions -> windows (features) -> train -> predict candidates -> post-process -> score -> write.

Same flags as HF's examples/pytorch/question-answering/run_qa.py. Launch with `python qa.py ...` or
`torchrun --nproc_per_node=N qa.py ...` (add --nnodes/--node_rank/--master_addr for several nodes).
"""

from __future__ import annotations

import atexit
import dataclasses
import difflib
import errno
import json
import logging
import os
import re
import shutil
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, TextIO

import datasets
import torch
import transformers
import yaml
from transformers import (AutoConfig, AutoTokenizer, EarlyStoppingCallback, HfArgumentParser, PrinterCallback,
                          Seq2SeqTrainingArguments, TrainingArguments, set_seed)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

import squad_v2
import utils_qa
from metrics.scoring import score_answers
from qakit.ask import ASK_PREFIX, answer_records, print_answers, read_asked
from qakit import plots
from qakit.batches import QACollator, Seq2SeqCollator
from qakit.card import card_kwargs, card_sections
from qakit.checkpoints import describe_best, is_complete, last_complete_checkpoint
from qakit.engines import check_engine, check_launch, choose_fsdp_layers
from qakit.errors import QAConfigError, QAError
from qakit.family import QAFamily, prepare_model
from qakit.features import EvalSet, build_features, limit, with_lengths
from qakit.generative import GenerationSettings, TextInputs, postprocess_generated
from qakit.heads import HEADS, configure_beam, head_class, resolve_head
from qakit.report import Phases, render as render_report
from qakit.files import write_json
from trainer_qa import QuestionAnsweringTrainer
from utils_qa import AnswerSettings, QAPredictions

logger = logging.getLogger("qa")
THRESHOLD_FILE = "null_threshold.json"  # the null threshold an evaluation calibrated, kept with the model


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
    start_n_top: int | None = field(default=None, metadata={
        "help": "Beam head: start positions kept per window (default: the config's, 5)."})
    end_n_top: int | None = field(default=None, metadata={
        "help": "Beam head: end positions kept per start (default: the config's, 5)."})


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset, e.g. squad_v2 or squad."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    train_file: str | None = field(default=None, metadata={"help": "Training file (SQuAD JSON, flat JSON or JSONL)."})
    validation_file: str | None = field(default=None, metadata={"help": "Evaluation file (same formats)."})
    test_file: str | None = field(default=None, metadata={"help": "Prediction file (answers optional)."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Tokenize again even if cached."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenizing."})
    max_seq_length: int = field(default=384, metadata={"help": "Tokens per window, question included."})
    pad_to_max_length: bool = field(default=False, metadata={
        "help": "Pad every window to max_seq_length. Default: pad each batch to its longest window (HF's "
                "run_qa defaults to True; the results are the same, only slower)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only this many training questions."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only this many evaluation questions."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only this many test questions."})
    version_2_with_negative: bool = field(default=False, metadata={"help": "Some questions have no answer (v2)."})
    null_score_diff_threshold: str | None = field(default=None, metadata={
        "help": "v2: answer empty when null score - best span score is above this number. `best`: predict with "
                "the evaluation's best_f1_thresh (needs --do_eval). Default: the threshold the model folder "
                f"records ({THRESHOLD_FILE}, written by an evaluation), else 0.0."})
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

    @property
    def asking(self) -> bool:
        """Questions asked on the command line or in a JSON Lines file, not a dataset."""
        return bool(self.question or self.context or self.questions_file)

    def __post_init__(self) -> None:
        if not (self.dataset_name or self.train_file or self.validation_file or self.test_file or self.asking):
            raise QAConfigError("no data: pass --dataset_name, or --train_file/--validation_file/--test_file (or "
                                "ask with --question and --context, or --questions_file)")
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
                float(self.null_score_diff_threshold)
            except ValueError:
                raise QAConfigError(f"--null_score_diff_threshold must be a number or best (got "
                                    f"{self.null_score_diff_threshold!r})") from None


@dataclass
class _StoppingArguments(Seq2SeqTrainingArguments):  # TrainingArguments plus HF's generation flags
    early_stopping_patience: int | None = field(default=None, metadata={
        "help": "Stop after this many evaluations without improving --metric_for_best_model (needs "
                "--load_best_model_at_end and an --eval_strategy)."})


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


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments, bool]:
    """Flags, or one .json/.yaml file of them (read as the same flags); flags transformers 5 dropped still
    work (see `_legacy_flags`). Every mistake is a `QAConfigError` naming the flag or the file's key."""
    argv = list(sys.argv[1:] if argv is None else argv)
    source = "the command line"
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        source, argv = argv[0], args_file_to_flags(argv[0])
    argv, overwrite = _legacy_flags(argv)
    parser = build_parser()
    _, unknown = parser.parse_known_args(args=argv)
    if unknown:
        raise QAConfigError(f"unknown argument(s) in {source}: {' '.join(unknown)}{_suggestion(parser, unknown)} "
                            "(python qa.py --help lists them all)")
    train_together_on_cpu()
    try:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    except QAConfigError:
        raise
    except ValueError as err:  # TrainingArguments' own checks of flag combinations
        raise QAConfigError(f"in {source}: {err}") from err
    _check_batch_sizes(training_args)
    _check_stopping(training_args)
    if data_args.asking:
        _ask_only(data_args, training_args)
    if data_args.null_score_diff_threshold == "best" and not (training_args.do_eval and
                                                              data_args.version_2_with_negative):
        raise QAConfigError("--null_score_diff_threshold best needs --do_eval and --version_2_with_negative: the "
                            "threshold is the evaluation's best_f1_thresh")
    return model_args, data_args, training_args, overwrite or bool(getattr(training_args, "overwrite_output_dir", False))


# --help in groups, the flags users change most first in each; every other TrainingArguments flag comes last
HELP_GROUPS = {
    "model": ["model_name_or_path", "tokenizer_name", "config_name", "torch_dtype", "attn_implementation", "cache_dir",
              "model_revision", "token", "trust_remote_code", "offsets_by_alignment"],
    "data": ["dataset_name", "dataset_config_name", "train_file", "validation_file", "test_file", "max_seq_length",
             "doc_stride", "max_train_samples", "max_eval_samples", "max_predict_samples", "pad_to_max_length",
             "preprocessing_num_workers", "overwrite_cache", "question_column", "context_column", "answer_column"],
    "answers": ["version_2_with_negative", "null_score_diff_threshold", "n_best_size", "max_answer_length",
                "answer_head", "start_n_top", "end_n_top", "predict_with_generate", "generation_num_beams",
                "generation_max_length", "val_max_answer_length", "ignore_pad_token_for_loss"],
    "ask (no dataset: answers printed as JSON lines)": ["question", "context", "questions_file"],
    "training": ["output_dir", "do_train", "do_eval", "do_predict", "per_device_train_batch_size",
                 "per_device_eval_batch_size", "learning_rate", "num_train_epochs", "max_steps", "warmup_steps",
                 "weight_decay", "gradient_accumulation_steps", "bf16", "fp16", "tf32", "eval_strategy", "eval_steps",
                 "save_strategy", "save_steps", "save_total_limit", "logging_steps", "load_best_model_at_end",
                 "metric_for_best_model", "early_stopping_patience", "seed", "resume_from_checkpoint",
                 "report_to", "push_to_hub", "hub_model_id", "train_sampling_strategy", "group_by_length",
                 "gradient_checkpointing", "torch_compile"],
}


def build_parser() -> HfArgumentParser:
    """HF's parser over our three dataclasses, its --help grouped by what a flag is about."""
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, QATrainingArguments))
    parser.usage = ("python qa.py --model_name_or_path MODEL (--dataset_name NAME | --train_file/--validation_file/"
                    "--test_file FILE | --question Q --context C | --questions_file FILE) [flags] | python qa.py "
                    "args.yaml")
    owner = {id(a): g for g in parser._action_groups for a in g._group_actions}
    placed: set[int] = set()

    def move(action: Any, group: Any) -> None:
        owner[id(action)]._group_actions.remove(action)
        group._group_actions.append(action)
        placed.add(id(action))

    for title, names in HELP_GROUPS.items():
        group = parser.add_argument_group(title)
        for name in names:
            for action in [a for a in parser._actions if a.dest == name and id(a) not in placed]:
                move(action, group)
    rest = parser.add_argument_group("training: every other TrainingArguments flag")
    for action in [a for a in parser._actions if a.option_strings and a.dest != "help" and id(a) not in placed]:
        move(action, rest)
    return parser


def _ask_only(data_args: DataTrainingArguments, args: TrainingArguments) -> None:
    """Asking is predicting on the asked questions, and only that."""
    if args.do_train or args.do_eval or data_args.test_file:
        raise QAConfigError("--question/--questions_file answer the questions asked: drop --do_train, --do_eval "
                            "and --test_file (or drop the questions)")
    if data_args.null_score_diff_threshold == "best":
        raise QAConfigError("--null_score_diff_threshold best needs an evaluation; when asking, give a number or "
                            "leave it out (the model folder's recorded threshold is used)")
    args.do_predict = True
    args.disable_tqdm = True  # stdout carries the answers; stderr only what goes wrong


def args_file_to_flags(path: str) -> list[str]:
    """A JSON or YAML mapping of argument names to values, as the flags it stands for."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise QAConfigError(f"cannot read the arguments file {path}: {err.strerror}") from err
    try:
        values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as err:
        raise QAConfigError(f"{path} line {err.lineno}, column {err.colno}: {err.msg} (not valid JSON)") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise QAConfigError(f"{path}{where}: {getattr(err, 'problem', None) or err} (not valid YAML)") from err
    if not isinstance(values, dict):
        raise QAConfigError(f"{path} must hold a mapping of argument names to values, e.g. "
                            "model_name_or_path: bert-base-uncased")
    flags: list[str] = []
    for key, value in values.items():
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        flags.append(f"--{key}")
        flags += [json.dumps(v) if isinstance(v, dict) else str(v).lower() if isinstance(v, bool) else str(v)
                  for v in items]
    return flags


def _suggestion(parser: HfArgumentParser, unknown: list[str]) -> str:
    known = [o for action in parser._actions for o in action.option_strings]
    close = [m for flag in unknown if flag.startswith("--")
             for m in difflib.get_close_matches(flag.split("=")[0], known, n=1)]
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _check_batch_sizes(args: TrainingArguments) -> None:
    """Checked here, before any data is read, rather than when the first batch is made."""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(args, name) < 1:
            raise QAConfigError(f"--{name} must be at least 1 (got {getattr(args, name)})")


def _check_stopping(args: TrainingArguments) -> None:
    if args.early_stopping_patience is None:
        return
    if args.early_stopping_patience < 1:
        raise QAConfigError(f"--early_stopping_patience must be at least 1 (got {args.early_stopping_patience})")
    if not (args.load_best_model_at_end and args.metric_for_best_model):
        raise QAConfigError("--early_stopping_patience needs --load_best_model_at_end and --metric_for_best_model "
                            "(e.g. f1, exact, HasAns_f1), with --eval_strategy steps|epoch matching --save_strategy")


_LAUNCH_SIZE = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")  # as accelerate reads them


def train_together_on_cpu() -> None:
    """Processes started together (torchrun) on a machine without an accelerator train as one gloo group.

    Without this, accelerate runs each process alone unless told to use the CPU, and every copy writes the
    same output folder. Set before TrainingArguments sets its device up, which it does while being made.
    """
    processes = max(int(os.environ.get(name) or 1) for name in _LAUNCH_SIZE)
    if processes > 1 and not _distributed_accelerator():
        os.environ["ACCELERATE_USE_CPU"] = "true"


def _distributed_accelerator() -> bool:
    """An accelerator that launched processes can share (CUDA, XPU, NPU, ...); the CPU and MPS are none."""
    try:
        from accelerate.utils import get_distributed_backend, get_torch_accelerator_backend  # accelerate >= 1.16
    except ImportError:
        from accelerate.utils import is_npu_available, is_xpu_available
        return torch.cuda.is_available() or is_npu_available() or is_xpu_available()
    return get_distributed_backend(get_torch_accelerator_backend()[0]) is not None


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _take(argv: list[str], flag: str) -> str | None:
    """Remove every `--flag [value]` / `--flag=value` from argv; the last value wins ("true" when bare)."""
    value = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == flag:
            has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            value = argv[i + 1] if has_value else "true"
            del argv[i:i + 1 + has_value]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
            del argv[i]
        else:
            i += 1
    return value


def _legacy_flags(argv: list[str]) -> tuple[list[str], bool]:
    """Map run_qa.py flags that the installed transformers no longer has onto their replacements.

    --overwrite_output_dir: start afresh instead of resuming (handled by `find_checkpoint`);
    --warmup_ratio R: --warmup_steps R (a float below 1 is a ratio); --group_by_length [true|false]:
    --train_sampling_strategy group_by_length|random; --evaluation_strategy: --eval_strategy; --logging_dir:
    TensorBoard's folder (TENSORBOARD_LOGGING_DIR).
    """
    fields = set(TrainingArguments.__dataclass_fields__)
    overwrite = False
    if "overwrite_output_dir" not in fields:
        overwrite = (_take(argv, "--overwrite_output_dir") or "false").lower() in _TRUE
    if "warmup_ratio" not in fields and (ratio := _take(argv, "--warmup_ratio")) is not None:
        argv += ["--warmup_steps", ratio]
    if "group_by_length" not in fields and (group := _take(argv, "--group_by_length")) is not None:
        argv += ["--train_sampling_strategy", "random" if group.lower() in _FALSE else "group_by_length"]
    if "evaluation_strategy" not in fields and (strategy := _take(argv, "--evaluation_strategy")) is not None:
        argv += ["--eval_strategy", strategy]
    if "logging_dir" not in fields and (logs := _take(argv, "--logging_dir")) is not None:
        os.environ["TENSORBOARD_LOGGING_DIR"] = logs  # where transformers 5 reads it
    return argv, overwrite


# --------------------------------------------------------------------------------------------
# Set-up
# --------------------------------------------------------------------------------------------


def setup_logging(training_args: TrainingArguments, quiet: bool = False) -> None:
    """Our progress at INFO on the main process (as HF's examples do); libraries at --log_level.

    `quiet` (asking questions): standard output carries only the answers; warnings go to standard error.
    Progress bars are drawn by the main process only.
    """
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stderr if quiet else sys.stdout)])
    library_level = training_args.get_process_log_level()
    if quiet and training_args.log_level == "passive":
        library_level = logging.WARNING
    ours = logging.INFO if training_args.should_log and training_args.log_level == "passive" else library_level
    if quiet:
        ours = max(ours, library_level)
    if quiet or not training_args.should_log:  # other ranks would draw the same bars again
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    for name in ("qa", "squad_v2", "qakit", "utils_qa", "trainer_qa"):
        logging.getLogger(name).setLevel(ours)
    datasets.utils.logging.set_verbosity(library_level)
    transformers.utils.logging.set_verbosity(library_level)
    logger.info("Process rank %s of %s, device %s, n_gpu %s, distributed %s, bf16 %s, fp16 %s",
                training_args.process_index, training_args.world_size, training_args.device, training_args.n_gpu,
                training_args.parallel_mode.value == "distributed", training_args.bf16, training_args.fp16)


def find_checkpoint(training_args: TrainingArguments, overwrite: bool) -> str | None:
    """HF's habit: resume from the last checkpoint in output_dir unless told to overwrite.

    Overwriting means a fresh start: the earlier run's checkpoints go (a later plain rerun would resume
    them and replace the new model with the old one), and so do files a killed run left half-written.
    """
    out = Path(training_args.output_dir)
    with training_args.main_process_first(desc="output folder"):  # one process per node changes the folder
        remove_leftovers(out)
        if training_args.do_train and overwrite and not training_args.resume_from_checkpoint:
            remove_checkpoints(out)
    complete = {"with_optimizer": not training_args.save_only_model}
    if training_args.resume_from_checkpoint:
        if not is_complete(training_args.resume_from_checkpoint, **complete):
            raise QAConfigError(f"--resume_from_checkpoint {training_args.resume_from_checkpoint} is not a complete "
                                "checkpoint (checkpoint-N with trainer_state.json, weights, optimizer, ...)")
        return training_args.resume_from_checkpoint
    if not training_args.do_train or overwrite or not out.is_dir():
        return None
    last = last_complete_checkpoint(out, **complete)
    if last is not None:
        logger.info("Resuming from %s (pass --overwrite_output_dir to start again)", last)
        return last
    leftovers = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    if leftovers:
        raise QAConfigError(f"output directory {out} is not empty ({', '.join(sorted(leftovers)[:3])} ...) and "
                            "has no checkpoint to resume from: pass --overwrite_output_dir or choose another --output_dir")
    return None


def remove_leftovers(out: Path) -> None:
    """Temporary files of an atomic write that a killed run never renamed (`qakit.files`)."""
    stale = sorted(out.glob(".tmp-*")) if out.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.info("Removed %d unfinished file(s) of an earlier run from %s", len(stale), out)


def remove_checkpoints(out: Path) -> None:
    old = sorted(p for p in out.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.is_dir()) if out.is_dir() else []
    if old:
        logger.warning("--overwrite_output_dir: removing %d checkpoint(s) of the earlier run in %s (%s)", len(old),
                       out, ", ".join(p.name for p in old))
    for path in old:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def disk_errors(output_dir: str):
    """A full disk anywhere in saving is one clear line naming the folder, whatever library was writing."""
    try:
        yield
    except Exception as err:
        text = str(err)
        full = (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left on device" in text \
            or "StorageFull" in text
        if not full:
            raise
        where = getattr(err, "filename", None) or output_dir
        raise QAConfigError(f"no space left on the device holding {where} (--output_dir {output_dir}): free space "
                            "there or choose another --output_dir; a rerun resumes from the last complete checkpoint"
                            ) from err


_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def check_model_source(name: str, flag: str) -> None:
    """A local model path that is wrong is reported as such, not as a hub or network problem."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise QAConfigError(f"{flag} {name}: the folder has no config.json, so it is not a saved model "
                                "(a model folder holds config.json, the weights and the tokenizer files)")
    elif path.exists():
        raise QAConfigError(f"{flag} {name} is a file; pass the folder that holds config.json and the weights")
    elif not _REPO_ID.match(name) or name.startswith((".", "~")):
        raise QAConfigError(f"{flag} {name}: no such folder (and not a hub model id); check the path")


def load_model(model_args: ModelArguments, predict_with_generate: bool) -> tuple[torch.nn.Module, Any, str]:
    """Config, tokenizer, and the model with the head it answers with (`qakit.heads`)."""
    check_model_source(model_args.model_name_or_path, "--model_name_or_path")
    for flag in ("config_name", "tokenizer_name"):
        if getattr(model_args, flag):
            check_model_source(getattr(model_args, flag), f"--{flag}")
    hub = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token,
           "trust_remote_code": model_args.trust_remote_code}
    config = AutoConfig.from_pretrained(model_args.config_name or model_args.model_name_or_path, **hub)
    head = resolve_head(config, model_args.answer_head, predict_with_generate)
    if head == "beam":
        configure_beam(config, model_args.start_n_top, model_args.end_n_top)
    logger.info("Answer head: %s", head)
    tokenizer_source = model_args.tokenizer_name or model_args.model_name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, **hub)
    except (TypeError, ValueError) as err:  # transformers 4.x: a tokenizer class given no vocabulary file
        raise QAConfigError(f"cannot load a tokenizer from {tokenizer_source} ({err}): the folder probably lacks "
                            "its tokenizer files (tokenizer.json, vocab.txt, spiece.model, ...); copy them there "
                            "or pass --tokenizer_name") from err
    check_vocabulary(tokenizer, config, tokenizer_source)
    dtype = model_args.torch_dtype if model_args.torch_dtype == "auto" else getattr(torch, model_args.torch_dtype)
    kwargs: dict[str, Any] = {"dtype": dtype}  # transformers 5 defaults to the checkpoint's dtype; we do not
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    model = head_class(config, head).from_pretrained(model_args.model_name_or_path, config=config, **hub, **kwargs)
    prepare_model(model, tokenizer, generative=head == "generate")
    return model, tokenizer, head


def check_vocabulary(tokenizer: Any, config: Any, source: str) -> None:
    """A tokenizer that does not fit the model gives F1 0 with exit 0; transformers 5 builds a 5-token one
    for a folder without tokenizer files. Refuse it."""
    vocab = getattr(config, "vocab_size", None)
    if not isinstance(vocab, int) or vocab <= 0:
        return
    size = len(tokenizer)
    if size < vocab // 2 or size > vocab:  # too few tokens, or ids beyond the embedding table
        raise QAConfigError(
            f"the tokenizer loaded from {source} has {size} tokens but the model's vocab_size is {vocab}: the "
            "folder probably lacks its tokenizer files (tokenizer.json, vocab.txt, spiece.model, ...); copy them "
            "there or pass --tokenizer_name")


def check_unknown_share(family: QAFamily, raw: datasets.DatasetDict, source: str, n: int = 200,
                        limit_share: float = 0.5) -> None:
    """Most context tokens unknown means the tokenizer does not belong to this data or model."""
    split = next(iter(raw))
    share = family.unknown_share(list(dict.fromkeys(raw[split][: n * 10]["context"]))[:n])
    if share > limit_share:
        raise QAConfigError(
            f"the tokenizer loaded from {source} maps {100 * share:.0f}% of the {split} contexts' tokens to its "
            "unknown token: it does not fit this data or model; pass the model's own tokenizer (--tokenizer_name)")


def check_answerability(raw: datasets.DatasetDict, reports: dict, data_args: DataTrainingArguments) -> None:
    """Unanswerable questions need the v2 flag; the reverse only costs a null position."""
    has_null = {split: sum(raw[split]["is_impossible"]) for split in raw}
    if not data_args.version_2_with_negative and any(has_null.values()):
        split = next(s for s, n in has_null.items() if n)
        first = raw[split][list(raw[split]["is_impossible"]).index(True)]["id"]
        where = ", ".join(f"{reports[s].source} ({s}): {n}" for s, n in has_null.items() if n)
        raise QAConfigError(f"unanswerable questions in {where}, e.g. id {first}: add --version_2_with_negative")
    if data_args.version_2_with_negative and not any(has_null.values()):
        logger.warning("--version_2_with_negative is set but no question is unanswerable (SQuAD v1.1 data?)")


def features_cache_dir(model_args: ModelArguments) -> str:
    """Windows are cached next to the datasets cache (or in --cache_dir) and reused by the next run."""
    return os.path.join(model_args.cache_dir or datasets.config.HF_DATASETS_CACHE, "qa_features")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args, overwrite = parse_args(argv)
    with ExitStack() as stack:  # asking: standard output carries the answers alone
        answers = stack.enter_context(answers_only_on_stdout()) if data_args.asking else None
        setup_logging(training_args, quiet=data_args.asking)
        checkpoint = find_checkpoint(training_args, overwrite)
        set_seed(training_args.seed)
        phases = Phases()

        # Load: questions, model, and how this model family is fed
        with phases.time("load"):
            raw, reports = load_questions(data_args, model_args)
            if not data_args.asking:  # asked questions carry no answers to check
                check_answerability(raw, reports, data_args)
            model, tokenizer, head = load_model(model_args, training_args.predict_with_generate)
            family = QAFamily.detect(model, tokenizer, data_args.max_seq_length, model_args.offsets_by_alignment)
            check_unknown_share(family, raw, model_args.tokenizer_name or model_args.model_name_or_path)
            text_inputs = (TextInputs.detect(family, data_args.max_seq_length, data_args.doc_stride,
                                             data_args.max_answer_length) if head == "generate" else None)

        # Features: questions -> windows (cached)
        def features_for(split: str, n: int | None) -> tuple[datasets.Dataset, datasets.Dataset]:
            if split not in raw:
                flag = {"train": "--do_train", "validation": "--do_eval", "test": "--do_predict"}[split]
                raise QAConfigError(f"{flag} needs a {split} split: pass --{split}_file or a --dataset_name that has one")
            examples = limit(raw[split], n)
            with phases.time("windows"):
                features = build_features(examples, split, family, data_args.max_seq_length, data_args.doc_stride,
                                          features_cache_dir(model_args),
                                          training_args.main_process_first, overwrite_cache=data_args.overwrite_cache,
                                          num_proc=data_args.preprocessing_num_workers, text_inputs=text_inputs)
            return examples, features

        train_features = (with_lengths(features_for("train", data_args.max_train_samples)[1],
                                       training_args.length_column_name) if training_args.do_train else None)
        eval_set = EvalSet(*features_for("validation", data_args.max_eval_samples)) if training_args.do_eval else None

        # Train
        trainer = make_trainer(model, tokenizer, family, head, text_inputs, train_features, eval_set, model_args,
                               data_args, training_args)
        arguments = sys.argv[1:] if argv is None else argv
        results: dict[str, float] = {}
        with disk_errors(training_args.output_dir):
            if training_args.do_train:
                results |= train(trainer, checkpoint, len(train_features), arguments, phases)

            # Predict -> post-process -> score -> write: `answer_questions`, run by evaluate() and predict()
            if training_args.do_eval:
                results |= answer_split(trainer, "eval", eval_set, phases)
                record_threshold(trainer, results)
            if training_args.do_predict:
                if data_args.null_score_diff_threshold == "best":
                    trainer.answer_settings = dataclasses.replace(trainer.answer_settings,
                                                                  null_score_diff_threshold=best_threshold(results))
                test_set = EvalSet(*features_for("test", data_args.max_predict_samples),
                                   has_answers=reports["test"].has_answers)
                if data_args.asking:
                    return ask(trainer, test_set, answers)
                results |= answer_split(trainer, "predict", test_set, phases)

            # What the run leaves: the model card, the pictures, the report
            with phases.time("write"):
                hand_on(trainer, results, reports, arguments, model_args, data_args)
                draw_pictures(trainer, eval_set)
            results |= finish(trainer, phases, results)
        return results


def make_trainer(model: torch.nn.Module, tokenizer: Any, family: QAFamily, head: str, text_inputs: TextInputs | None,
                 train_features: datasets.Dataset | None, eval_set: EvalSet | None, model_args: ModelArguments,
                 data_args: DataTrainingArguments, training_args: TrainingArguments) -> QuestionAnsweringTrainer:
    """The trainer with the batches, answer settings and engine this head and model family need."""
    settings = AnswerSettings(data_args.n_best_size, data_args.max_answer_length,
                              data_args.version_2_with_negative, starting_threshold(data_args, model_args))
    if head == "generate":
        collator = Seq2SeqCollator(family, data_args.max_seq_length, data_args.pad_to_max_length,
                                   data_args.ignore_pad_token_for_loss)
    else:
        collator = QACollator(family, data_args.max_seq_length, data_args.pad_to_max_length, beam=head == "beam")
    check_launch(training_args)
    trainer = QuestionAnsweringTrainer(
        model=model, args=training_args, train_dataset=train_features, eval_set=eval_set,
        processing_class=tokenizer, data_collator=collator, answer_settings=settings,
        answer_questions=answer_questions, head=head,
        generation=generation_settings(training_args, data_args, text_inputs, model, tokenizer) if text_inputs else None)
    choose_fsdp_layers(trainer)
    check_engine(trainer)  # DDP, FSDP or DeepSpeed, said in the log; never a silent fallback
    if training_args.early_stopping_patience:
        trainer.add_callback(EarlyStoppingCallback(training_args.early_stopping_patience))
    return trainer


def answer_split(trainer: QuestionAnsweringTrainer, prefix: str, data: EvalSet, phases: Phases) -> dict[str, float]:
    """Evaluate or predict one split (the files it writes count as `write` time), and report it."""
    phase = "evaluate" if prefix == "eval" else "predict"
    with phases.time(phase):
        metrics = trainer.evaluate(data) if prefix == "eval" else trainer.predict(data)[1]
    phases.move(phase, "write", metrics[f"{prefix}_write_runtime"])
    return report(trainer, prefix, metrics)


def ask(trainer: QuestionAnsweringTrainer, asked: EvalSet, answers: TextIO) -> dict[str, float]:
    """The asked questions' answers, printed as JSON lines; nothing is written."""
    trainer.remove_callback(PrinterCallback)  # it would print the metrics among the answers
    preds, metrics = trainer.predict(asked, metric_key_prefix=ASK_PREFIX)
    if trainer.is_world_process_zero():
        print_answers(answer_records(preds, asked.examples), answers)
    return metrics


@contextmanager
def answers_only_on_stdout() -> Iterator[TextIO]:
    """A stream to the real standard output, while everything else printed there goes to standard error:
    libraries print too (DeepSpeed announces its accelerator on stdout), and the answers must parse."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with os.fdopen(os.dup(saved), "w", encoding="utf-8") as answers:
            yield answers
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def load_questions(data_args: DataTrainingArguments,
                   model_args: ModelArguments) -> tuple[datasets.DatasetDict, dict[str, squad_v2.SquadReport]]:
    """The splits from the hub or local files, or the questions asked (as the test split)."""
    if data_args.asking:
        asked, report_ = read_asked(data_args.question, data_args.context, data_args.questions_file)
        return datasets.DatasetDict({"test": asked}), {"test": report_}
    columns = {"question": data_args.question_column, "context": data_args.context_column,
               "answers": data_args.answer_column}
    return squad_v2.load_squad(data_args.dataset_name, data_args.dataset_config_name, data_args.train_file,
                               data_args.validation_file, data_args.test_file, cache_dir=model_args.cache_dir,
                               token=model_args.token, columns=columns)


def hand_on(trainer: QuestionAnsweringTrainer, results: dict[str, float], reports: dict, arguments: list[str],
            model_args: ModelArguments, data_args: DataTrainingArguments) -> None:
    """The model card (as HF's run_qa.py writes it, plus our scores, threshold, data and command), pushed to
    the hub with the model when --push_to_hub is given."""
    trainer.card_sections = card_sections(results, reports, arguments, trainer.head)
    kwargs = card_kwargs(model_args.model_name_or_path, data_args.dataset_name, data_args.dataset_config_name,
                         data_args.train_file or data_args.validation_file)
    if trainer.args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    elif trainer.args.should_save:
        trainer.create_model_card(**kwargs)


def draw_pictures(trainer: QuestionAnsweringTrainer, eval_set: EvalSet | None) -> None:
    """The run's PNGs (README: What you get). Optional: without matplotlib it is one log line, never an error."""
    if not (trainer.args.should_save and trainer.is_world_process_zero()):
        return
    gold = None
    if eval_set is not None and eval_set.has_answers:
        gold = {qid: list(a["text"]) for qid, a in zip(eval_set.ids, eval_set.examples["answers"])}
    try:
        plots.draw_run(trainer.args.output_dir, prefix="eval", gold=gold)
    except (plots.PlotInputError, OSError) as err:
        logger.warning("pictures not drawn: %s", err)


def finish(trainer: QuestionAnsweringTrainer, phases: Phases, results: dict[str, float]) -> dict[str, float]:
    """The run's own figures (time per phase, peak memory) into all_results.json, and the report table."""
    figures = phases.figures()
    trainer.save_metrics("run", figures)
    if trainer.is_world_process_zero():
        print(render_report(results | figures), flush=True)
    return figures


def generation_settings(training_args: Seq2SeqTrainingArguments, data_args: DataTrainingArguments,
                        text_inputs: TextInputs, model: Any, tokenizer: Any) -> GenerationSettings:
    """HF's precedence: --generation_num_beams, else the checkpoint's generation config's num_beams; answer
    length --generation_max_length, else --val_max_answer_length, else --max_answer_length (in new tokens:
    HF's max_length also counts the decoder's start token)."""
    if training_args.generation_config is not None:
        raise QAConfigError("--generation_config is not supported: answers are generated with --generation_num_beams "
                            "and --generation_max_length (the checkpoint's own generation config does the rest)")
    own = getattr(getattr(model, "generation_config", None), "num_beams", None)
    beams = training_args.generation_num_beams or own or 1
    if beams < 1:
        raise QAConfigError(f"--generation_num_beams must be at least 1 (got {beams})")
    length = training_args.generation_max_length or data_args.val_max_answer_length or data_args.max_answer_length
    return GenerationSettings(num_beams=beams, num_return=min(data_args.n_best_size, beams), max_new_tokens=length,
                              empty_answer=text_inputs.empty_answer, eos_token_id=tokenizer.eos_token_id)


def starting_threshold(data_args: DataTrainingArguments, model_args: ModelArguments) -> float:
    """The null threshold for evaluation (and prediction, unless `best`): the one given, else the one the
    model folder records, else 0.0 (HF's default)."""
    given = data_args.null_score_diff_threshold
    if given not in (None, "best"):
        return float(given)
    recorded = Path(model_args.model_name_or_path) / THRESHOLD_FILE
    if data_args.version_2_with_negative and recorded.is_file():
        try:
            value = float(json.loads(recorded.read_text(encoding="utf-8"))["null_score_diff_threshold"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise QAConfigError(f"{recorded} is damaged ({err}): delete it or pass --null_score_diff_threshold") from err
        logger.info("Null threshold %s, as recorded in %s (pass --null_score_diff_threshold to override)",
                    value, recorded)
        return value
    return 0.0


def best_threshold(results: dict[str, float]) -> float:
    if "eval_best_threshold" not in results:
        raise QAConfigError("--null_score_diff_threshold best needs --do_eval on data with answers and "
                            "--version_2_with_negative (the threshold comes from the evaluation)")
    value = float(results["eval_best_threshold"])
    logger.info("Predicting with the evaluation's best threshold %s (best_f1 %.2f, official best_f1_thresh %s)",
                value, results["eval_best_f1"], results["eval_best_f1_thresh"])
    return value


def record_threshold(trainer: QuestionAnsweringTrainer, results: dict[str, float]) -> None:
    """Keep the calibrated threshold next to the model, so a later --do_predict on this folder uses it."""
    if "eval_best_threshold" in results and trainer.is_world_process_zero():
        write_json(os.path.join(trainer.args.output_dir, THRESHOLD_FILE),
                   {"null_score_diff_threshold": results["eval_best_threshold"], "best_f1": results["eval_best_f1"],
                    "best_exact": results["eval_best_exact"], "evaluated_questions": results["eval_examples"]})


def train(trainer: QuestionAnsweringTrainer, checkpoint: str | None, n_windows: int,
          arguments: list[str], phases: Phases) -> dict[str, float]:
    """Train (resuming `checkpoint`); keep the model, the metrics, the state and which checkpoint was best."""
    with phases.time("train"):
        out = trainer.train(resume_from_checkpoint=checkpoint)
    with phases.time("write"):
        full_weights_for_saving(trainer)
        trainer.save_model()
        metrics = report(trainer, "train", dict(out.metrics, train_samples=n_windows))
        trainer.save_state()
        if trainer.state.best_model_checkpoint and trainer.is_world_process_zero():
            write_json(os.path.join(trainer.args.output_dir, "best_checkpoint.json"),
                       describe_best(trainer.state, trainer.args.metric_for_best_model, arguments))
    return metrics


def full_weights_for_saving(trainer: QuestionAnsweringTrainer) -> None:
    """Sharded FSDP checkpoints resume fast, but with a sharded state dict Trainer.save_model writes no model at
    all (and says nothing): the final model is gathered whole, so from_pretrained loads it on one device."""
    if getattr(trainer, "is_fsdp_enabled", False):
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")


def report(trainer: QuestionAnsweringTrainer, split: str, metrics: dict[str, float]) -> dict[str, float]:
    """Print a split's metrics and keep them in `<split>_results.json` and `all_results.json`."""
    trainer.log_metrics(split, metrics)
    trainer.save_metrics(split, metrics)
    return metrics


def answer_questions(trainer: QuestionAnsweringTrainer, data: EvalSet,
                     prefix: str) -> tuple[dict[str, float], QAPredictions]:
    """Predict -> post-process -> score -> write for one split, timed end to end, with the trainer's
    `answer_settings` (the flags of HF's post-processing).

    `<prefix>_runtime` covers the forward passes and post-processing; the throughput figures and
    `<prefix>_total_runtime` cover everything, scoring and writing included.
    """
    settings = trainer.answer_settings
    start = time.time()
    cand, metrics = trainer.predict_candidates(data, prefix)
    utils_qa.check_finite(cand, data.windows.example_index, data.ids)
    if trainer.head == "generate":
        preds = postprocess_generated(data.ids, data.contexts, data.windows, cand, trainer.processing_class,
                                      settings.n_best_size, settings.version_2_with_negative,
                                      settings.null_score_diff_threshold)
    else:
        preds = utils_qa.postprocess(data.ids, data.contexts, data.windows, cand, settings.n_best_size,
                                     settings.version_2_with_negative, settings.null_score_diff_threshold,
                                     null_is_odds=trainer.head == "beam")
    forward = time.time() - start
    metrics.update({f"{prefix}_runtime": round(forward, 4), f"{prefix}_samples": len(data.features),
                    f"{prefix}_samples_per_second": round(len(data.features) / forward, 3)})
    if settings.version_2_with_negative:
        metrics[f"{prefix}_null_threshold"] = settings.null_score_diff_threshold
    if data.has_answers:
        scores = score_answers(data.ids, data.examples["answers"], preds.predictions, preds.best_spans,
                               preds.null_odds, settings.version_2_with_negative, settings.null_score_diff_threshold)
        metrics.update({f"{prefix}_{k}": v for k, v in scores.items()})
    elif prefix == "eval":
        logger.warning("the evaluation questions have no answers: predictions written, nothing scored")
    written = time.time()
    if trainer.args.should_save and prefix != ASK_PREFIX:
        utils_qa.write_predictions(preds, trainer.args.output_dir, prefix)
    metrics[f"{prefix}_write_runtime"] = round(time.time() - written, 4)
    elapsed = time.time() - start
    metrics[f"{prefix}_examples"] = len(data.ids)
    metrics[f"{prefix}_windows"] = len(data.features)
    metrics[f"{prefix}_examples_per_second"] = round(len(data.ids) / elapsed, 3)
    metrics[f"{prefix}_windows_per_second"] = round(len(data.features) / elapsed, 3)
    metrics[f"{prefix}_total_runtime"] = round(elapsed, 4)
    return metrics, preds


def cli(argv: list[str] | None = None) -> None:
    """Known user errors end with one clear line and a non-zero exit, not a traceback."""
    status = 0
    try:
        main(argv)
    except (squad_v2.SquadFormatError, QAError, OSError, ImportError) as err:  # not bugs: no traceback
        message = " ".join(str(err).split())  # one line, whatever the library's message looked like
        fresh_line = "\n" if sys.stderr.isatty() else ""  # after a progress bar's last, unfinished line
        print(f"{fresh_line}qa.py: error: {message}", file=sys.stderr)
        status = 2
    if torch.distributed.is_initialized():
        leave_process_group(status)
    if status:
        sys.exit(status)


def leave_process_group(status: int) -> None:
    """End a process of a multi-process run before the interpreter's teardown, which can abort it. torch keeps a
    gloo group's worker threads alive past destroy_process_group (DDP's reducer still holds the group); a worker
    that then touches a Python object, as releasing a collective's tensors can, while the interpreter finalizes
    kills the process (SIGABRT, "terminate called without an active exception": seen in CI after all the work was
    done), and torchrun then stops the ranks still writing the run's files. So the group is destroyed, the exit
    handlers run and the output is flushed here, with Python whole, and the process ends with `status`."""
    torch.distributed.destroy_process_group()
    atexit._run_exitfuncs()  # what a normal exit runs first: logging's, trackers' and libraries' own clean-ups
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    cli()
