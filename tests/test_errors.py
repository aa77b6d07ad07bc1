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
    pytest.param("args.json", "[" * 200_000, ("args.json: nested too deeply", "check the path"), id="json-nested"),
    pytest.param("args.yaml", "[" * 200_000, ("args.yaml: nested too deeply", "check the path"), id="yaml-nested"),
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


# ---- data that json reads but nothing after it can use; flags and models found wrong only mid-run ----------------


def _edited(path: Path, edit, version: str = "v2.0") -> Path:
    """A squad_file whose parsed JSON `edit` changed (json.dumps writes a lone surrogate as its \\u escape)."""
    raw = json.loads(squad_file(path, version=version).read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    return path


def _nothing_in(folder: Path) -> bool:
    """Nothing written: the folder is absent, or empty (the run's lock made it, and is gone)."""
    return not folder.exists() or not any(folder.iterdir())


def _paragraph(raw: dict) -> dict:
    return raw["data"][0]["paragraphs"][0]


@pytest.mark.parametrize("field,words", [
    ("question", ('data[0].paragraphs[0].qas[1]: "question"', "question id p0q1")),
    ("text", ('data[0].paragraphs[0].qas[1].answers[0]: "text"', "question id p0q1")),
    ("context", ('data[0].paragraphs[0]: "context"',)),
])
def test_a_lone_surrogate_is_refused_naming_the_place(bert, tmp_path, capsys, field, words):
    """json reads "\\ud800" (half of a UTF-16 pair) as a str that UTF-8 cannot encode: Arrow, the tokenizer or the
    prediction files failed on it with a UnicodeEncodeError traceback."""
    def edit(raw):
        holder = _paragraph(raw) if field == "context" else _paragraph(raw)["qas"][1]
        holder = holder["answers"][0] if field == "text" else holder
        holder[field] = holder[field] + " \ud800"

    data = _edited(tmp_path / "data.json", edit)
    code, err = run(eval_args(bert, data, tmp_path / "o"), capsys)
    one_clear_line(code, err, str(data), *words, "\\ud800", "half of a UTF-16 surrogate pair", "write the character")
    assert _nothing_in(tmp_path / "o")


def test_json_nested_200000_levels_deep_is_one_line(bert, tmp_path, capsys):
    """json.loads raised RecursionError, a traceback."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000)
    code, err = run(eval_args(bert, deep, tmp_path / "o"), capsys)
    one_clear_line(code, err, str(deep), "nested too deeply", "check the path")


@pytest.mark.parametrize("role", ["train", "validation"])
@pytest.mark.parametrize("start", [10**20, -10**20, 2**31, True], ids=["1e20", "-1e20", "2**31", "true"])
def test_an_answer_start_no_context_can_hold_is_one_line_naming_the_question(bert, tmp_path, capsys, role, start):
    """10**20 and 2**31 overflowed Arrow's int32 in an evaluation file (a traceback); a bool was refused without
    the question's id. An answer_start that only misses its text stays a warning (dropped from train, kept
    elsewhere): -1, or one past the context, is such a slip."""
    data = _edited(tmp_path / "data.json", lambda raw: _paragraph(raw)["qas"][1]["answers"][0].update(
        answer_start=start))
    args = eval_args(bert, data, tmp_path / "o")
    if role == "train":
        args = [*args[:2], "--train_file", data, "--do_train", *args[5:]]
    code, err = run(args, capsys)
    words = ('"answer_start": is a true/false; make it an integer',) if start is True else (
        f"answer_start {start} is no character offset", "counted from 0")
    one_clear_line(code, err, str(data), "data[0].paragraphs[0].qas[1].answers[0]", "question id p0q1", *words)


def test_a_training_file_whose_every_answer_is_bad_is_one_line(bert, tmp_path, capsys):
    """Every question dropped for its answers left an empty training split, and the run ended in
    `KeyError: 'Field "input_ids" does not exist in schema'` when the windows were made."""
    def shift(raw):
        for article in raw["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    for answer in qa["answers"]:
                        answer["answer_start"] += 1

    data = _edited(tmp_path / "train.json", shift, version="1.1")
    out = tmp_path / "o"
    code, err = run(["--model_name_or_path", bert, "--train_file", data, "--do_train", "--max_seq_length", "64",
                     "--doc_stride", "16", "--report_to", "none", "--use_cpu", "true", "--output_dir", out], capsys)
    one_clear_line(code, err, str(data), "no training question is left, so no training window",
                   "all 5 were dropped", "5 answer(s) whose answer_start does not point at their text",
                   'answer_start 66 does not point at "Mara Olsen"')
    assert _nothing_in(out)


@pytest.mark.parametrize("metric,v2,words", [
    ("HasAns_f1", False, ("only SQuAD v2.0 scoring (--version_2_with_negative) reports it", "exact_match, f1")),
    ("f2", True, ("is not a score this run reports (did you mean f1?)", "HasAns_f1", "NoAns_f1", "best_f1")),
    ("eval_exact", False, ("only SQuAD v2.0 scoring", "pass one of exact_match, f1")),
    (None, True, ("--metric_for_best_model loss", "the evaluation computes no loss", "exact, f1")),
])
def test_a_best_model_metric_the_run_will_not_report_is_refused_before_training(bert, data, tmp_path, capsys, metric,
                                                                                v2, words):
    """Found at the first evaluation, after training had started and written a checkpoint that stood in the
    corrected rerun's way. (Without the flag, --load_best_model_at_end makes HF pick `loss`, which is not computed.)"""
    out = tmp_path / "o"
    args = ["--model_name_or_path", bert, "--train_file", data, "--validation_file", data, "--do_train", "--do_eval",
            "--eval_strategy", "steps", "--eval_steps", "1", "--save_steps", "1", "--load_best_model_at_end",
            "--max_steps", "2", "--report_to", "none", "--use_cpu", "true", "--output_dir", out]
    args += ["--metric_for_best_model", metric] if metric else []
    args += ["--version_2_with_negative"] if v2 else []
    if not v2:
        data.write_bytes(squad_file(tmp_path / "v1.json", version="1.1").read_bytes())
    code, err = run(args, capsys)
    one_clear_line(code, err, *words)
    assert not out.exists()


@pytest.mark.parametrize("metric,v2", [("f1", False), ("eval_exact_match", False), ("HasAns_f1", True),
                                       ("eval_best_f1", True), ("NoAns_exact", True)])
def test_the_metrics_the_run_reports_are_accepted(metric, v2):
    argv = ["--model_name_or_path", "m", "--validation_file", "d.json", "--do_eval", "--output_dir", "o",
            "--metric_for_best_model", metric, *(["--version_2_with_negative"] if v2 else [])]
    assert flags.parse_args(qa.ARGUMENTS, argv)[2].metric_for_best_model == metric


def _with_remote_code(bert: Path, folder: Path) -> Path:
    """The tiny BERT as a model of its own type, whose config and class are code in the folder (auto_map)."""
    shutil.copytree(bert, folder)
    config = json.loads((folder / "config.json").read_text())
    config |= {"model_type": "tiny-custom-bert", "auto_map": {
        "AutoConfig": "configuration_custom.CustomConfig",
        "AutoModelForQuestionAnswering": "modeling_custom.CustomForQuestionAnswering"}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_custom.py").write_text(
        "from transformers import BertConfig\n\n\nclass CustomConfig(BertConfig):\n"
        "    model_type = 'tiny-custom-bert'\n")
    (folder / "modeling_custom.py").write_text(
        "from transformers import BertForQuestionAnswering\n\nfrom .configuration_custom import CustomConfig\n\n\n"
        "class CustomForQuestionAnswering(BertForQuestionAnswering):\n    config_class = CustomConfig\n")
    return folder


def test_a_model_with_its_own_code_names_the_folder_and_trust_remote_code(bert, data, tmp_path, capsys):
    """transformers' ValueError ("contains custom code which must be executed") was reported as a damaged
    config.json, with the fix of copying the folder again."""
    custom = _with_remote_code(bert, tmp_path / "custom")
    code, err = run(eval_args(custom, data, tmp_path / "o"), capsys)
    line = one_clear_line(code, err, f"--model_name_or_path {custom}", "'tiny-custom-bert'", "configuration_custom.py, "
                          "modeling_custom.py", "read that code, then pass --trust_remote_code")
    assert "damaged" not in line
    assert not (tmp_path / "o").exists()


# ---- the scorers' command lines ---------------------------------------------------------------------------------


def _score(version: str, *argv: object) -> tuple[int | str | None, str]:
    """metrics/squad{_v2}/compute_score.py's command line in this process: (exit: None, or sys.exit's argument, a
    message for exit status 1), stdout."""
    import contextlib
    import io

    from metrics.squad.compute_score import main as v1_main
    from metrics.squad_v2.compute_score import main as v2_main

    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            (v2_main if version == "v2" else v1_main)([str(a) for a in argv])
    except SystemExit as stop:
        return stop.code, out.getvalue()
    return None, out.getvalue()


def _squad(path: Path, version: str, ids: list, answers: list | None = None) -> Path:
    """An official-layout data file, one question per id; `answers`: each one's gold texts (default ["cat"])."""
    answers = answers or [["cat"]] * len(ids)
    qas = [{"id": qid, "question": "?", "answers": [{"text": t, "answer_start": 4} for t in texts]}
           for qid, texts in zip(ids, answers)]
    data = [{"title": "t", "paragraphs": [{"context": "the cat sat", "qas": qas}]}] if ids else []
    path.write_text(json.dumps({"version": version, "data": data}))
    return path


def _one_error(exit_code: object, *words: str) -> str:
    assert isinstance(exit_code, str) and exit_code.startswith("error: "), exit_code  # exit status 1
    assert "\n" not in exit_code
    for word in words:
        assert word in exit_code, exit_code
    return exit_code


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_scorers_say_an_empty_data_file_leaves_nothing_to_score(tmp_path, version):
    """Both official scripts (and ours) divided by zero: ZeroDivisionError."""
    data = _squad(tmp_path / "dev.json", "1.1" if version == "v1" else "v2.0", [])
    (tmp_path / "pred.json").write_text("{}")
    code, out = _score(version, data, tmp_path / "pred.json")
    _one_error(code, str(data), "holds no questions", "nothing to score")
    assert out == ""


def test_scorers_read_integer_question_ids_as_the_prediction_file_writes_them(tmp_path):
    """JSON keys are strings: a data file's id 7 is predicted as "7". v2 died with a TypeError joining the ids it
    called missing; v1 scored every question 0."""
    data_v1 = _squad(tmp_path / "dev1.json", "1.1", [7, 8])
    data_v2 = _squad(tmp_path / "dev2.json", "v2.0", [7, 8], [["cat"], []])
    (tmp_path / "pred.json").write_text(json.dumps({"7": "cat", "8": ""}))
    (tmp_path / "na.json").write_text(json.dumps({"7": 0.1, "8": 0.9}))
    code, out = _score("v1", data_v1, tmp_path / "pred.json")
    assert code is None and json.loads(out) == {"exact_match": 50.0, "f1": 50.0}
    code, out = _score("v2", data_v2, tmp_path / "pred.json", "-n", tmp_path / "na.json")
    assert code is None
    assert {k: json.loads(out)[k] for k in ("exact", "HasAns_total", "NoAns_total")} == {
        "exact": 100.0, "HasAns_total": 1, "NoAns_total": 1}


@pytest.mark.parametrize("value", ["1" + "0" * 400, "1" + "0" * 400 + ".5"], ids=["int-401-digits", "float-401-digits"])
def test_scorers_refuse_null_odds_beyond_a_float(tmp_path, value):
    """A 401-digit integer is read exactly by json and overflowed in math.isfinite (OverflowError); the same with a
    fraction is read as inf."""
    data = _squad(tmp_path / "dev.json", "v2.0", ["q1", "q2"], [["cat"], []])
    (tmp_path / "pred.json").write_text(json.dumps({"q1": "cat", "q2": ""}))
    na = tmp_path / "na.json"
    na.write_text('{"q1": ' + value + ', "q2": 0.5}')
    code, _ = _score("v2", data, tmp_path / "pred.json", "-n", na)
    _one_error(code, str(na), "1 value(s) are NaN or infinite, e.g. ids q1;", "within a float's range")


def test_scorer_out_file_in_a_missing_folder_is_one_line_and_writes_nothing(tmp_path):
    """open() raised FileNotFoundError after the scores were computed (a traceback); now checked first, and the
    file itself is written whole or not at all."""
    data = _squad(tmp_path / "dev.json", "v2.0", ["q1"])
    (tmp_path / "pred.json").write_text(json.dumps({"q1": "cat"}))
    missing = tmp_path / "no" / "such" / "eval.json"
    code, _ = _score("v2", data, tmp_path / "pred.json", "-o", missing)
    _one_error(code, str(missing), f"there is no folder {missing.parent}", "create it")
    assert not (tmp_path / "no").exists()
    code, _ = _score("v2", data, tmp_path / "pred.json", "-o", tmp_path / "eval.json")
    assert code is None and json.loads((tmp_path / "eval.json").read_text())["exact"] == 100.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.json", "eval.json", "pred.json"]


@pytest.mark.parametrize("version,which", [("v2", "data"), ("v2", "pred"), ("v1", "pred")])
def test_scorers_refuse_json_nested_200000_levels_deep(tmp_path, version, which):
    data = _squad(tmp_path / "dev.json", "1.1" if version == "v1" else "v2.0", ["q1"])
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"q1": "cat"}))
    deep = data if which == "data" else pred
    deep.write_text("[" * 200_000)
    code, _ = _score(version, data, pred)
    _one_error(code, str(deep), "nested too deeply")
