"""qa.py's command line: HF's flags that the installed transformers dropped still mean what they meant.

transformers 4.57 still has --overwrite_output_dir, --warmup_ratio, --group_by_length and --logging_dir, and
HF's parser takes them; 5.x dropped them and qakit/flags.py maps them onto their replacements. Both drop
--evaluation_strategy (now --eval_strategy). Each test says what must hold on each version."""

from __future__ import annotations

import os

import pytest
import transformers
from transformers import IntervalStrategy

import qa
from helpers import REPO
from qakit import flags

SAMPLE = str(REPO / "data" / "sample_squad_v2.json")
TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5


def parse(tmp_path, *given: str):
    return flags.parse_args(qa.ARGUMENTS, ["--model_name_or_path", "some/model", "--output_dir", str(tmp_path),
                                           "--train_file", SAMPLE, *given])


def test_the_version_split_is_the_one_these_tests_assume():
    """The branches below hold only if the installed transformers has the flags they say it has."""
    fields = set(transformers.TrainingArguments.__dataclass_fields__)
    legacy = {"overwrite_output_dir", "warmup_ratio", "group_by_length", "logging_dir"}
    assert "evaluation_strategy" not in fields and "eval_strategy" in fields
    if TRANSFORMERS_5:
        assert legacy.isdisjoint(fields) and "train_sampling_strategy" in fields
    else:
        assert legacy <= fields and "train_sampling_strategy" not in fields


def test_legacy_flags_keep_their_meaning(tmp_path):
    """Checked through the whole parse: 4.57 takes the flags itself, 5.x maps them."""
    _, _, args, overwrite = parse(tmp_path, "--overwrite_output_dir", "--warmup_ratio", "0.1",
                                  "--evaluation_strategy", "steps", "--eval_steps", "5")
    assert overwrite is True
    assert args.eval_strategy == IntervalStrategy.STEPS and args.eval_steps == 5
    if TRANSFORMERS_5:
        assert args.warmup_steps == 0.1  # 5.x: a float below 1 is a ratio of the steps
        assert not hasattr(args, "warmup_ratio") and not hasattr(args, "overwrite_output_dir")
    else:
        assert args.warmup_ratio == 0.1 and args.warmup_steps == 0
        assert args.overwrite_output_dir is True


def test_the_last_overwrite_flag_wins(tmp_path):
    _, _, args, overwrite = parse(tmp_path, "--overwrite_output_dir", "--overwrite_output_dir", "false")
    assert overwrite is False
    if not TRANSFORMERS_5:
        assert args.overwrite_output_dir is False
    _, _, _, overwrite = parse(tmp_path, "--overwrite_output_dir", "false", "--overwrite_output_dir")
    assert overwrite is True


def test_legacy_flag_mapping_removes_what_it_maps():
    """Exactly the flags the installed TrainingArguments lacks are rewritten; everything else is left alone."""
    argv, overwrite = flags._legacy_flags(["--overwrite_output_dir", "--x", "1", "--warmup_ratio=0.2",
                                           "--evaluation_strategy", "steps"])
    if TRANSFORMERS_5:
        assert argv == ["--x", "1", "--warmup_steps", "0.2", "--eval_strategy", "steps"]
        assert overwrite is True  # taken out of argv: find_checkpoint reads it from here
    else:
        assert argv == ["--overwrite_output_dir", "--x", "1", "--warmup_ratio=0.2", "--eval_strategy", "steps"]
        assert overwrite is False  # left to HF's own --overwrite_output_dir, which parse_args reads


def test_logging_dir_still_names_tensorboards_folder(tmp_path):
    """4.57 keeps --logging_dir; 5.x reads TensorBoard's folder from TENSORBOARD_LOGGING_DIR, which qa.py sets
    (and conftest's fixture removes again after the test)."""
    logs = str(tmp_path / "tb")
    before = os.environ.get("TENSORBOARD_LOGGING_DIR")
    _, _, args, _ = parse(tmp_path, "--logging_dir", logs)
    if TRANSFORMERS_5:
        assert os.environ["TENSORBOARD_LOGGING_DIR"] == logs
        assert not hasattr(args, "logging_dir")
    else:
        assert args.logging_dir == logs
        assert os.environ.get("TENSORBOARD_LOGGING_DIR") == before


@pytest.mark.parametrize("given,grouped", [
    ([], True),
    (["--group_by_length", "false"], False),
    (["--group_by_length", "false", "--group_by_length"], True),  # the last one wins: grouped again
    (["--group_by_length", "no"], False),
])
def test_length_grouped_batches_by_default(tmp_path, given, grouped):
    """Grouping is our default (README: Performance); HF's flag still turns it off, on 4.x and 5.x alike."""
    _, _, args, _ = parse(tmp_path, *given)
    if TRANSFORMERS_5:
        assert args.train_sampling_strategy == ("group_by_length" if grouped else "random")
        assert not hasattr(args, "group_by_length")
    else:
        assert args.group_by_length is grouped
        assert not hasattr(args, "train_sampling_strategy")
