"""qa.py's command line: HF's flags that the installed transformers dropped still mean what they meant."""

from __future__ import annotations

import pytest

import qa
from helpers import REPO
from qakit import flags

SAMPLE = str(REPO / "data" / "sample_squad_v2.json")


def parse(tmp_path, *given: str):
    return flags.parse_args(qa.ARGUMENTS, ["--model_name_or_path", "some/model", "--output_dir", str(tmp_path),
                                           "--train_file", SAMPLE, *given])


def test_legacy_flags_keep_their_meaning(tmp_path):
    """Checked through the whole parse, so it holds on transformers 4.57 (flags still there) and 5.x (mapped)."""
    _, _, args, overwrite = parse(tmp_path, "--overwrite_output_dir", "--warmup_ratio", "0.1",
                                  "--evaluation_strategy", "steps", "--eval_steps", "5")
    assert overwrite is True
    assert getattr(args, "warmup_ratio", None) == 0.1 or args.warmup_steps == 0.1  # 5.x: a float < 1 is a ratio
    assert str(args.eval_strategy.value if hasattr(args.eval_strategy, "value") else args.eval_strategy) == "steps"
    _, _, _, overwrite = parse(tmp_path, "--overwrite_output_dir", "--overwrite_output_dir", "false")
    assert overwrite is False  # the last value wins


def test_legacy_flag_mapping_removes_what_it_maps():
    argv, _ = flags._legacy_flags(["--overwrite_output_dir", "--x", "1", "--warmup_ratio=0.2", "--evaluation_strategy",
                                "steps"])
    fields = set(flags.TrainingArguments.__dataclass_fields__)
    assert "--x" in argv and "1" in argv
    for flag in ("--overwrite_output_dir", "--warmup_ratio", "--evaluation_strategy"):
        if flag[2:] not in fields:
            assert not any(a.startswith(flag) for a in argv), flag


def _grouped(args) -> bool:
    strategy = getattr(args, "train_sampling_strategy", None)
    return strategy == "group_by_length" if strategy is not None else bool(args.group_by_length)


@pytest.mark.parametrize("flags,grouped", [
    ([], True),
    (["--group_by_length", "false"], False),
    (["--group_by_length", "false", "--group_by_length"], True),  # the last one wins: grouped again
    (["--group_by_length", "no"], False),
])
def test_length_grouped_batches_by_default(tmp_path, flags, grouped):
    """Grouping is our default (README: Performance); HF's flag still turns it off, on 4.x and 5.x alike."""
    _, _, args, _ = parse(tmp_path, *flags)
    assert _grouped(args) is grouped
