"""The command line: flags (or a .json/.yaml file of them) into qa.py's three dataclasses, checked before any
data is read, with --help grouped by what a flag is about and run_qa.py's flags that transformers 5 dropped
mapped onto their replacements."""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments

from metrics.scoring import score_names
from metrics.squad_v2.squad_common import check_language
from qakit import launch
from qakit.errors import QAConfigError
from qakit.evalsets import MACRO_KEYS, eval_entries


def parse_args(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple[Any, Any, Any, bool]:
    """(model, data, training arguments, overwrite): flags, or one .json/.yaml file of them (read as the same
    flags); flags transformers 5 dropped still work (see `_legacy_flags`). Every mistake is a `QAConfigError`
    naming the flag or the file's key."""
    argv = list(sys.argv[1:] if argv is None else argv)
    source = "the command line"
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        source, argv = argv[0], args_file_to_flags(argv[0])
    argv, overwrite = _legacy_flags(argv)
    parser = build_parser(dataclass_types)
    _, unknown = parser.parse_known_args(args=argv)
    if unknown:
        raise QAConfigError(f"unknown argument(s) in {source}: {' '.join(unknown)}{_suggestion(parser, unknown)} "
                            "(python qa.py --help lists them all)")
    launch.train_together_on_cpu()
    try:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    except QAConfigError:
        raise
    except ValueError as err:  # TrainingArguments' own checks of flag combinations
        raise QAConfigError(f"in {source}: {err}") from err
    _check_batch_sizes(training_args)
    _check_stopping(training_args)
    sets = eval_entries(data_args.validation_file, data_args.language)  # names and languages paired, or one line
    _check_best_metric(training_args.metric_for_best_model, data_args.version_2_with_negative,
                       [e.name for e in sets if e.name])
    _check_languages(data_args.language)
    if data_args.null_score_diff_threshold == "best" and len(sets) > 1:
        raise QAConfigError("--null_score_diff_threshold best: with several evaluation sets no one best threshold "
                            "exists (each set's is eval_NAME_best_threshold); pass a number")
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
              "model_revision", "token", "trust_remote_code", "offsets_by_alignment", "allow_untrained_head"],
    "data": ["dataset_name", "dataset_config_name", "train_file", "validation_file", "language", "test_file",
             "max_seq_length", "doc_stride", "max_train_samples", "max_eval_samples", "max_predict_samples",
             "pad_to_max_length", "preprocessing_num_workers", "overwrite_cache", "question_column", "context_column",
             "answer_column"],
    "answers": ["version_2_with_negative", "null_score_diff_threshold", "update_model_folder", "n_best_size",
                "max_answer_length", "answer_head", "start_n_top", "end_n_top", "predict_with_generate",
                "generation_num_beams", "generation_max_length", "val_max_answer_length", "ignore_pad_token_for_loss"],
    "ask (no dataset: answers printed as JSON lines)": ["question", "context", "questions_file"],
    "serve (answers over HTTP: POST /answer)": ["serve", "host", "port", "backend"],
    "training": ["output_dir", "do_train", "do_eval", "do_predict", "per_device_train_batch_size",
                 "per_device_eval_batch_size", "learning_rate", "num_train_epochs", "max_steps", "warmup_steps",
                 "weight_decay", "gradient_accumulation_steps", "bf16", "fp16", "tf32", "eval_strategy", "eval_steps",
                 "save_strategy", "save_steps", "save_total_limit", "logging_steps", "load_best_model_at_end",
                 "metric_for_best_model", "early_stopping_patience", "seed", "resume_from_checkpoint",
                 "report_to", "push_to_hub", "hub_model_id", "train_sampling_strategy", "group_by_length",
                 "gradient_checkpointing", "torch_compile"],
}


def build_parser(dataclass_types: tuple[type, ...]) -> HfArgumentParser:
    """HF's parser over our three dataclasses, its --help grouped by what a flag is about."""
    parser = HfArgumentParser(dataclass_types)
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


def _ask_only(data_args: Any, args: TrainingArguments) -> None:
    """Asking is predicting on the asked questions, and only that."""
    if args.do_train or args.do_eval or data_args.test_file:
        raise QAConfigError("--question/--questions_file answer the questions asked: drop --do_train, --do_eval "
                            "and --test_file (or drop the questions)")
    if data_args.null_score_diff_threshold == "best":
        raise QAConfigError("--null_score_diff_threshold best needs an evaluation; when asking, give a number or "
                            "leave it out (the model folder's recorded threshold is used)")
    args.do_predict = True
    args.disable_tqdm = True  # stdout carries the answers; stderr only what goes wrong
    args.report_to = []  # and nothing is written: no trackers


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
    except RecursionError as err:  # json and yaml both recurse per level of [ or {
        raise QAConfigError(f"{path}: nested too deeply to be read (over Python's recursion limit, "
                            f"{sys.getrecursionlimit()} levels): an arguments file is one mapping of argument names "
                            "to values; check the path") from err
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


def _check_best_metric(name: str | None, version_2_with_negative: bool, sets: list[str]) -> None:
    """A metric the evaluation does not report is otherwise found at the first evaluation, after training has
    started, and the checkpoint it left then stands in the corrected rerun's way. HF reads `f1` as `eval_f1`;
    with several evaluation sets, `f1` is their macro average and `NAME_f1` one set's."""
    if name is None:
        return
    per_set, wanted = score_names(version_2_with_negative), name.removeprefix("eval_")
    reported = per_set if not sets else [r for r in per_set if r in MACRO_KEYS] + [
        f"{s}_{r}" for s in sets for r in per_set]
    if wanted in reported:
        return
    if wanted == "loss":
        why = " (HF's choice when --load_best_model_at_end comes without it); the evaluation computes no loss"
    elif wanted in score_names(True):
        why = ": only SQuAD v2.0 scoring (--version_2_with_negative) reports it"
    else:
        lowered = {r.lower(): r for r in reported}
        close = difflib.get_close_matches(wanted.lower(), lowered, n=1, cutoff=0.5)
        why = f" is not a score this run reports{f' (did you mean {lowered[close[0]]}?)' if close else ''}"
    raise QAConfigError(f"--metric_for_best_model {name}{why}; pass one of {', '.join(reported)} (with or without "
                        "eval_ before it)")


def _check_languages(languages: list[str] | None) -> None:
    """An unknown --language is found before any data is read, in the scorer's own words."""
    for language in languages or []:
        try:
            check_language(language)
        except ValueError as err:
            raise QAConfigError(f"--language: {err}") from err


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


SECRET_FLAGS = ("--token", "--hub_token")
_TOKEN = re.compile(r"hf_[A-Za-z0-9]{8,}")


def redacted(argv: list[str]) -> list[str]:
    """The command line as it may be written down (model card, best_checkpoint.json): the values of the token
    flags, and anything shaped like a hub token, replaced by `REDACTED`."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("REDACTED")
            hide_next = False
        elif arg in SECRET_FLAGS:
            out.append(arg)
            hide_next = True
        elif arg.split("=", 1)[0] in SECRET_FLAGS and "=" in arg:
            out.append(arg.split("=", 1)[0] + "=REDACTED")
        else:
            out.append(_TOKEN.sub("REDACTED", arg))
    return out
