"""Bad input and faults end with one clear line (what, where, the fix), a non-zero exit and no half-written
output; nothing ends silently wrong. qa.py runs in this process, on a tiny BERT built here."""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import transformers

import qa
from qakit import flags
import tiny_models
from helpers import run_cli as run
from squad_data import squad_file
from trainer_qa import QuestionAnsweringTrainer

TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return tiny_models.build_tiny("Bert", tmp_path_factory.mktemp("models") / "bert")


@pytest.fixture
def data(tmp_path) -> Path:
    return squad_file(tmp_path / "data.json")


def eval_args(model: Path, data: Path, out: Path, *extra) -> list:
    return ["--model_name_or_path", model, "--validation_file", data, "--do_eval", "--version_2_with_negative",
            "--max_seq_length", "64", "--doc_stride", "16", "--report_to", "none", "--use_cpu", "true",
            "--per_device_eval_batch_size", "8", "--output_dir", out, "--cache_dir", out.parent / "cache", *extra]


def one_clear_line(code: int, err: str, *words: str) -> str:
    assert code == 2, err[-3000:]
    assert "Traceback" not in err
    assert "qa.py: error:" in err, err[-3000:]
    line = err[err.index("qa.py: error:"):].splitlines()[0]  # a progress bar may share its line
    for word in words:
        assert word in line, line
    return line


# ---- the command line and argument files -------------------------------------------------------


def test_unknown_flag_is_named_with_a_suggestion(bert, data, tmp_path, capsys):
    code, err = run([*eval_args(bert, data, tmp_path / "o"), "--max_seq_lenght", "64"], capsys)
    one_clear_line(code, err, "--max_seq_lenght", "did you mean --max_seq_length")


@pytest.mark.parametrize("name,text,words", [
    ("args.yaml", "model_name_or_path: [unclosed\n", ("args.yaml line 2", "not valid YAML")),
    ("args.json", '{"model_name_or_path": "m",}', ("args.json line 1", "not valid JSON")),
    ("args.yaml", "- just\n- a list\n", ("args.yaml must hold a mapping",)),
    ("args.yaml", "model_name_or_path: m\noutput_dir: o\nvalidation_file: d\nmax_seq_lenght: 64\n",
     ("unknown argument(s) in", "args.yaml", "--max_seq_lenght")),
])
def test_bad_arguments_file(tmp_path, capsys, name, text, words):
    path = tmp_path / name
    path.write_text(text)
    code, err = run([path], capsys)
    one_clear_line(code, err, *words)


def test_legacy_keys_work_in_an_arguments_file(tmp_path):
    path = tmp_path / "args.yaml"
    path.write_text("model_name_or_path: some/model\noutput_dir: o\ntrain_file: t.json\n"
                    "overwrite_output_dir: true\nwarmup_ratio: 0.1\nreport_to: [none]\ndo_train: true\n")
    _, _, args, overwrite = flags.parse_args(qa.ARGUMENTS, [str(path)])
    assert overwrite is True and args.do_train is True
    if TRANSFORMERS_5:  # the keys 5.x dropped are mapped, as their flags are
        assert args.warmup_steps == 0.1 and not hasattr(args, "warmup_ratio")
    else:  # 4.57 still has them
        assert args.warmup_ratio == 0.1 and args.warmup_steps == 0 and args.overwrite_output_dir is True


def test_batch_size_zero_is_refused_before_any_data_is_read(bert, tmp_path, capsys):
    code, err = run(["--model_name_or_path", bert, "--train_file", tmp_path / "missing.json", "--do_train",
                     "--per_device_train_batch_size", "0", "--output_dir", tmp_path / "o"], capsys)
    one_clear_line(code, err, "--per_device_train_batch_size must be at least 1")


# ---- models and tokenizers ---------------------------------------------------------------------


def test_empty_model_folder(tmp_path, data, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run(eval_args(tmp_path / "empty", data, tmp_path / "o"), capsys)
    one_clear_line(code, err, str(tmp_path / "empty"), "no config.json")


@pytest.mark.parametrize("path", ["/no/such/models/bert", "./models/bert-typo", "~/models/bert"])
def test_mistyped_local_model_path_is_not_reported_as_a_hub_problem(path, tmp_path, data, capsys):
    code, err = run(eval_args(path, data, tmp_path / "o"), capsys)  # as typed: no Path normalising
    line = one_clear_line(code, err, "no such folder")
    assert "connect" not in line and "huggingface.co" not in line


def test_model_folder_without_tokenizer_files_is_refused(bert, data, tmp_path, capsys):
    """transformers 5 would build a 5-token tokenizer and the run would end with exit 0 and F1 0."""
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(bert / name, bare / name)
    code, err = run(eval_args(bare, data, tmp_path / "o"), capsys)
    line = one_clear_line(code, err, str(bare), "tokenizer files", "--tokenizer_name")
    if TRANSFORMERS_5:  # 5.x builds a tokenizer of a few tokens, refused for not matching the model
        assert "vocab_size" in line and "cannot load a tokenizer" not in line
    else:  # 4.x cannot build one at all
        assert "cannot load a tokenizer" in line and "vocab_size" not in line
    assert not (tmp_path / "o" / "eval_predictions.json").exists()


def test_nan_logits_fail_the_evaluation(bert, data, tmp_path, capsys):
    """A model that outputs NaN would answer "no answer" everywhere and score the unanswerable share."""
    broken = tmp_path / "nan"
    shutil.copytree(bert, broken)
    from safetensors.torch import load_file, save_file

    weights = load_file(broken / "model.safetensors")
    weights["qa_outputs.bias"] = torch.full_like(weights["qa_outputs.bias"], float("nan"))
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    code, err = run(eval_args(broken, data, tmp_path / "o"), capsys)
    line = one_clear_line(code, err, "NaN or infinite logits", "windows", "p0q0", "nothing was written")
    assert "for 0 of" not in line
    assert not list((tmp_path / "o").glob("eval_*.json"))


def test_do_predict_without_a_test_file_names_the_right_flag(bert, data, tmp_path, capsys):
    code, err = run([*eval_args(bert, data, tmp_path / "o"), "--do_predict"], capsys)
    line = one_clear_line(code, err, "--do_predict needs a test split", "--test_file")
    assert "--do_test" not in line


# ---- disks, caches and earlier runs ------------------------------------------------------------


@pytest.mark.slow  # trains a step
def test_full_disk_names_the_output_folder(bert, data, tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(QuestionAnsweringTrainer, "save_model", full)
    out = tmp_path / "o"
    code, err = run(["--model_name_or_path", bert, "--train_file", data, "--do_train", "--version_2_with_negative",
                     "--max_steps", "1", "--max_seq_length", "64", "--doc_stride", "16", "--report_to", "none",
                     "--use_cpu", "true", "--save_strategy", "no", "--output_dir", out], capsys)
    one_clear_line(code, err, "no space left", str(out), "--output_dir")


def test_damaged_windows_cache_is_named_with_the_fix(bert, data, tmp_path, capsys):
    out = tmp_path / "o"
    assert run(eval_args(bert, data, out), capsys)[0] == 0
    caches = list((tmp_path / "cache" / "qa_features").glob("qa-validation-*.arrow"))
    assert caches
    for path in caches:
        path.write_bytes(b"not an arrow file")
    code, err = run(eval_args(bert, data, out), capsys)
    one_clear_line(code, err, "windows cache", "qa-validation-", "--overwrite_cache")
    assert run([*eval_args(bert, data, out), "--overwrite_cache"], capsys)[0] == 0


def test_damaged_results_and_leftovers_of_an_earlier_run_are_not_fatal(bert, data, tmp_path, capsys):
    """A full disk once left a 0-byte all_results.json, and a killed write a .tmp- file: the next run works."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "all_results.json").write_bytes(b"")
    (out / ".tmp-abc123.json").write_text('{"half": ')
    code, err = run(eval_args(bert, data, out), capsys)
    assert code == 0, err[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_total"] == 7
    assert not list(out.glob(".tmp-*"))


def test_long_questions_and_crawling_windows_are_each_reported_once(bert, tmp_path, capsys, caplog):
    data = squad_file(tmp_path / "d.json")
    raw = json.loads(data.read_text())
    raw["data"][0]["paragraphs"][0]["qas"][0]["question"] = "Who " + "really " * 60 + "built it?"
    data.write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING):
        code, err = run(eval_args(bert, data, tmp_path / "o", "--max_seq_length", "40", "--doc_stride", "18"), capsys)
    assert code == 0, err[-3000:]
    cut = [r.getMessage() for r in caplog.records if "were cut to fit" in r.getMessage()]
    crawl = [r.getMessage() for r in caplog.records if "advance by only" in r.getMessage()]
    assert len(cut) == 1 and "1 question(s)" in cut[0] and "p0q0" in cut[0]
    assert len(crawl) == 1 and "--doc_stride 18" in crawl[0]


# ---- damaged files and runs stopped by hand (issue: runs survive stale files) -------------------------------


def _copy_with(bert: Path, folder: Path, name: str, content: bytes | None = None) -> Path:
    """A copy of the model folder whose file `name` is cut to half (or replaced by `content`)."""
    shutil.copytree(bert, folder)
    whole = (folder / name).read_bytes()
    (folder / name).write_bytes(whole[:len(whole) // 2] if content is None else content)
    return folder


@pytest.mark.parametrize("name,content,words", [
    ("model.safetensors", None, ("weights", "damaged or cut short", "copy the model folder again")),
    ("config.json", None, ("config.json", "not a valid JSON")),
    ("config.json", b'{"hidden_size": 8}', ("config.json", "damaged or cut short", "model_type")),
    ("tokenizer.json", None, ("tokenizer file", "damaged", "--tokenizer_name")),
])
def test_damaged_model_folder_is_one_line_naming_it(bert, data, tmp_path, capsys, name, content, words):
    """An interrupted copy leaves half a file: one line naming the folder and what to do, nothing written."""
    broken = _copy_with(bert, tmp_path / "broken", name, content)
    code, err = run(eval_args(broken, data, tmp_path / "o"), capsys)
    one_clear_line(code, err, str(broken), *words)
    assert not (tmp_path / "o" / "eval_predictions.json").exists()


@pytest.mark.parametrize("value", ["NaN", "Infinity"])
def test_a_recorded_threshold_that_is_not_finite_is_refused(bert, data, tmp_path, capsys, value):
    """Before, NaN was used: no question was ever answered "no answer", and the run ended with exit 0."""
    model = tmp_path / "model"
    shutil.copytree(bert, model)
    (model / "null_threshold.json").write_text(f'{{"null_score_diff_threshold": {value}}}')
    code, err = run(eval_args(model, data, tmp_path / "o"), capsys)
    one_clear_line(code, err, str(model / "null_threshold.json"), "not a finite number",
                   "--null_score_diff_threshold")
    assert run([*eval_args(model, data, tmp_path / "o"), "--null_score_diff_threshold", "0"], capsys)[0] == 0


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_threshold_flag_that_is_not_finite_is_refused(bert, data, tmp_path, capsys, value):
    code, err = run(eval_args(bert, data, tmp_path / "o", f"--null_score_diff_threshold={value}"), capsys)
    one_clear_line(code, err, "--null_score_diff_threshold must be a finite number or best", value)


def test_output_dir_that_is_a_file_names_the_flag(bert, data, tmp_path, capsys):
    taken = tmp_path / "results"
    taken.write_text("a file")
    code, err = run(eval_args(bert, data, taken), capsys)
    one_clear_line(code, err, f"--output_dir {taken} is a file", "choose another --output_dir")
    assert taken.read_text() == "a file"


def test_ctrl_c_during_evaluation_is_status_130_and_one_line(bert, data, tmp_path, capsys, monkeypatch):
    """Interrupted while the answers are written: status 130, one line, no traceback, no prediction file."""
    import utils_qa

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(utils_qa, "write_predictions", interrupted)
    code, err = run(eval_args(bert, data, tmp_path / "o"), capsys)
    assert code == 130 and "Traceback" not in err
    assert "qa.py: interrupted (Ctrl-C)" in err
    assert not list((tmp_path / "o").glob("eval_*.json"))


def test_tokens_are_redacted_from_what_is_written():
    from qakit.flags import redacted

    token = "hf_" + "AbCdEf0123456789xyz"
    argv = ["--token", token, f"--hub_token={token}", "--model_name_or_path", "m", "--note", f"x {token}."]
    assert redacted(argv) == ["--token", "REDACTED", "--hub_token=REDACTED", "--model_name_or_path", "m", "--note",
                              "x REDACTED."]


@pytest.mark.slow  # trains and runs qa.py in subprocesses
def test_no_file_a_run_writes_holds_a_token_and_asking_writes_nothing(bert, data, tmp_path):
    """A training run given a (fake) hub token with --token and --hub_token, which writes a card, checkpoints
    and best_checkpoint.json: no byte of any file under the output folder, nor the log, holds the token. Asking
    the trained model a question then writes nothing at all: no windows cache, no trainer_output/."""
    from helpers import run_qa

    token = "hf_" + "FakeToken0123456789abcdef"
    out = tmp_path / "o"
    trained = run_qa(["--model_name_or_path", str(bert), "--train_file", str(data), "--validation_file", str(data),
                      "--version_2_with_negative", "--do_train", "--do_eval", "--max_steps", "2", "--max_seq_length",
                      "64", "--doc_stride", "16", "--report_to", "none", "--use_cpu", "true", "--eval_strategy",
                      "steps", "--eval_steps", "1", "--save_steps", "1", "--load_best_model_at_end",
                      "--metric_for_best_model", "f1", "--token", token, "--hub_token", token,
                      "--output_dir", str(out)])
    assert trained.returncode == 0, trained.stderr[-3000:]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert (out / "best_checkpoint.json").is_file() and (out / "README.md").is_file() and len(written) > 10
    assert [p for p in written if token.encode() in p.read_bytes()] == []
    assert token not in trained.stdout + trained.stderr
    assert "--token REDACTED --hub_token REDACTED" in (out / "README.md").read_text()

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    asked = run_qa(["--model_name_or_path", str(out), "--question", "Who built the lighthouse?", "--context",
                    "The lighthouse was built in 1871 by the engineer Mara Olsen."], cwd=cwd,
                   env={"HF_HOME": str(home), "HF_DATASETS_CACHE": str(home / "datasets")})
    assert asked.returncode == 0 and json.loads(asked.stdout)["question"] == "Who built the lighthouse?"
    assert list(cwd.iterdir()) == [] and not [p for p in home.rglob("*") if p.is_file()]


# ---- one run per output folder ---------------------------------------------------------------------------


def _dead_pid() -> int:
    """The process id of a process that has ended."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_lock_held_by_a_live_run_stops_the_second_and_a_dead_ones_is_taken_over(bert, data, tmp_path, capsys,
                                                                                    caplog):
    """The lock names a live process (this one, as if another run held it): refused with one line naming the
    holder, nothing written. A lock whose process is gone (this host), or untouched for long (another host),
    is taken over with a warning, and released when the run ends."""
    import os
    import socket
    import time

    from qakit import lock

    out = tmp_path / "o"
    out.mkdir()
    held = out / lock.LOCK_NAME
    held.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "started": "earlier"}))
    code, err = run(eval_args(bert, data, out), capsys)
    one_clear_line(code, err, f"--output_dir {out} is in use by another run", f"process {os.getppid()}",
                   "choose another --output_dir")
    assert sorted(p.name for p in out.iterdir()) == [lock.LOCK_NAME]
    for stale in ({"host": socket.gethostname(), "pid": _dead_pid()}, {"host": "elsewhere", "pid": 1}):
        held.write_text(json.dumps(stale))
        if stale["host"] == "elsewhere":
            old = time.time() - lock.STALE_AFTER - 10
            os.utime(held, (old, old))
        with caplog.at_level(logging.WARNING, logger="qa"):
            code, err = run(eval_args(bert, data, out), capsys)
        assert code == 0, err[-3000:]
        assert f"Taking over the lock of {out}" in caplog.text and not held.exists()
        caplog.clear()
    held.write_text(json.dumps({"host": "elsewhere", "pid": 1}))  # touched just now: its run may be alive
    assert run(eval_args(bert, data, out), capsys)[0] == 2


@pytest.mark.slow  # two qa.py processes
def test_two_runs_into_one_folder_at_once_one_trains_the_other_is_refused(bert, data, tmp_path):
    import os
    import subprocess
    import sys

    from helpers import OFFLINE_ENV, REPO

    out = tmp_path / "o"
    args = [sys.executable, str(REPO / "qa.py"), "--model_name_or_path", str(bert), "--train_file", str(data),
            "--version_2_with_negative", "--do_train", "--max_steps", "300", "--max_seq_length", "64", "--doc_stride",
            "16", "--report_to", "none", "--use_cpu", "true", "--save_strategy", "no", "--output_dir", str(out)]
    runs = [subprocess.Popen([*args, "--seed", str(seed)], env={**os.environ, **OFFLINE_ENV}, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for seed in (1, 2)]
    done = [(proc.wait(timeout=600), *proc.communicate()) for proc in runs]
    assert sorted(status for status, _, _ in done) == [0, 2], [d[2][-2000:] for d in done]
    winner, loser = (runs[0], runs[1]) if done[0][0] == 0 else (runs[1], runs[0])
    refused = done[runs.index(loser)][2]
    assert f"is in use by another run (process {winner.pid} on" in refused
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 300 and (out / "model.safetensors").is_file()
    assert json.loads((out / "train_results.json").read_text())["train_samples"] > 0
    assert not (out / ".qa-lock").exists()
