"""A folder holds one run's files, and a recorded threshold is used only with the weights it was calibrated on
(issue: runs survive stale files). Hand-made folders for the rules; tiny-BERT runs for the cases users hit."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

import tiny_models
from helpers import read_json as read, run_cli as run
from qakit.outputs import THRESHOLD_FILE, clear_earlier_outputs, is_model_folder, weights_fingerprint
from squad_data import squad_file
from utils_qa import record_threshold, starting_threshold

SPLIT_SET = ["predictions.json", "nbest_predictions.json", "null_odds.json", "span_predictions.json",
             "results.json", "f1_vs_threshold.png", "pr_exact.png", "pr_f1.png", "pr_oracle.png"]
RESULTS = {"train_loss": 1.0, "eval_f1": 50.0, "eval_HasAns_f1": 40.0, "predict_samples": 3, "run_total_runtime": 9}


def earlier_run(folder: Path, model: bool) -> None:
    """Every file a trained, evaluated and predicting run leaves, with or without the model itself."""
    folder.mkdir()
    names = [f"{split}_{name}" for split in ("eval", "predict") for name in SPLIT_SET]
    names += ["train_results.json", "run_results.json", THRESHOLD_FILE, "best_checkpoint.json", "training_loss.png",
              "training_eval.png", "README.md", "trainer_state.json", "training_args.bin", "notes.txt"]
    if model:
        names += ["config.json", "model.safetensors"]
    for name in names:
        (folder / name).write_text(name)
    (folder / "checkpoint-4").mkdir()
    (folder / "all_results.json").write_text(json.dumps(RESULTS))


def args(folder: Path, train: bool = False, evaluate: bool = False, predict: bool = False) -> SimpleNamespace:
    return SimpleNamespace(output_dir=str(folder), should_save=True, do_train=train, do_eval=evaluate,
                           do_predict=predict)


def left(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_a_training_run_removes_everything_that_described_the_old_model(tmp_path):
    earlier_run(tmp_path / "out", model=True)
    clear_earlier_outputs(args(tmp_path / "out", train=True), asking=False)
    # kept: the resume state, the model (replaced when saved), the card (rewritten), files not ours
    assert left(tmp_path / "out") == {"checkpoint-4", "config.json", "model.safetensors", "README.md",
                                      "trainer_state.json", "training_args.bin", "notes.txt"}


def test_an_evaluation_into_a_model_folder_replaces_its_split_only(tmp_path):
    out = tmp_path / "out"
    earlier_run(out, model=True)
    before = left(out)
    clear_earlier_outputs(args(out, evaluate=True), asking=False)
    gone = {f"eval_{name}" for name in SPLIT_SET} | {"run_results.json"}
    assert left(out) == before - gone  # the model's threshold, card and training pictures stay
    assert read(out / "all_results.json") == {"train_loss": 1.0, "predict_samples": 3}


def test_a_threshold_in_a_folder_without_a_model_is_an_earlier_evaluation_s(tmp_path):
    out = tmp_path / "out"
    earlier_run(out, model=False)
    clear_earlier_outputs(args(out, evaluate=True), asking=False)
    assert THRESHOLD_FILE not in left(out) and "predict_predictions.json" in left(out)
    clear_earlier_outputs(args(out, predict=True), asking=False)
    assert not any(name.startswith(("eval_", "predict_")) for name in left(out))
    assert read(out / "all_results.json") == {"train_loss": 1.0}


def test_asking_and_other_processes_remove_nothing(tmp_path):
    out = tmp_path / "out"
    earlier_run(out, model=False)
    before = left(out)
    clear_earlier_outputs(args(out, train=True, evaluate=True, predict=True), asking=True)
    clear_earlier_outputs(SimpleNamespace(**{**vars(args(out, train=True)), "should_save": False}), asking=False)
    clear_earlier_outputs(args(tmp_path / "missing", train=True), asking=False)
    assert left(out) == before


def test_a_damaged_all_results_goes_whole(tmp_path):
    out = tmp_path / "out"
    earlier_run(out, model=True)
    (out / "all_results.json").write_text("{cut sh")
    clear_earlier_outputs(args(out, predict=True), asking=False)
    assert not (out / "all_results.json").exists()


def test_the_fingerprint_covers_every_weight_byte_and_nothing_else(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    assert weights_fingerprint(folder) is None and weights_fingerprint("org/model") is None
    weights = bytearray(range(256)) * 1000
    (folder / "model.safetensors").write_bytes(weights)
    first = weights_fingerprint(folder)
    (folder / "training_args.bin").write_bytes(b"other run")
    (folder / "config.json").write_text("{}")
    assert weights_fingerprint(folder) == first
    weights[123_456] ^= 1  # one bit in the middle, as a head-only fine-tune changes few bytes
    (folder / "model.safetensors").write_bytes(weights)
    assert weights_fingerprint(folder) != first
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    assert weights_fingerprint(folder) not in (None, first)


def write_threshold(folder: Path, value: float, weights: str | None) -> None:
    record = {"null_score_diff_threshold": value}
    if weights is not None:
        record["weights_sha256"] = weights
    (folder / THRESHOLD_FILE).write_text(json.dumps(record))


def test_a_threshold_is_used_only_with_its_weights(tmp_path, caplog):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    write_threshold(folder, -2.5, weights_fingerprint(folder))
    assert starting_threshold(None, True, str(folder)) == -2.5
    assert starting_threshold("1.5", True, str(folder)) == 1.5
    (folder / "model.safetensors").write_bytes(b"other weights")
    with caplog.at_level(logging.WARNING):
        assert starting_threshold(None, True, str(folder)) == 0.0
    assert "calibrated on other weights" in caplog.text and str(folder / THRESHOLD_FILE) in caplog.text
    write_threshold(folder, -2.5, None)  # written before thresholds recorded their weights: trusted
    assert starting_threshold(None, True, str(folder)) == -2.5


class Recorder(SimpleNamespace):
    def is_world_process_zero(self) -> bool:
        return True


BEST = {"eval_best_threshold": -1.25, "eval_best_f1": 70.0, "eval_best_exact": 60.0, "eval_examples": 3}


def test_an_evaluation_keeps_a_model_folder_s_threshold_unless_asked(tmp_path):
    model, out = tmp_path / "model", tmp_path / "out"
    earlier_run(model, model=True)
    write_threshold(model, 4.0, weights_fingerprint(model))
    before = (model / THRESHOLD_FILE).read_bytes()
    evaluating = Recorder(args=SimpleNamespace(output_dir=str(model), do_train=False))
    record_threshold(evaluating, BEST, str(model), update=False)
    assert (model / THRESHOLD_FILE).read_bytes() == before
    record_threshold(evaluating, BEST, str(model), update=True)
    assert read(model / THRESHOLD_FILE)["null_score_diff_threshold"] == -1.25

    out.mkdir()  # into another folder: the threshold names the weights it was calibrated on, the model's
    record_threshold(Recorder(args=SimpleNamespace(output_dir=str(out), do_train=False)), BEST, str(model), False)
    assert read(out / THRESHOLD_FILE)["weights_sha256"] == weights_fingerprint(model)
    assert read(out / THRESHOLD_FILE)["model"] == model.resolve().name  # a name: the file may be pushed


# ---- the cases as users met them: a tiny BERT trained on the small file, then evaluated again -------------

def flags(model: Path, data: Path, out: Path, *extra) -> list:
    return ["--model_name_or_path", model, "--validation_file", data, "--do_eval", "--max_seq_length", "64",
            "--doc_stride", "16", "--report_to", "none", "--use_cpu", "true", "--output_dir", out,
            "--cache_dir", out.parent / "cache", *extra]


@pytest.mark.slow
def test_stale_files_of_an_earlier_run_never_steer_a_new_one(tmp_path, capsys):
    bert = tiny_models.build_tiny("Bert", tmp_path / "bert")
    v2, v1 = squad_file(tmp_path / "v2.json"), squad_file(tmp_path / "v1.json", version="1.1")
    out = tmp_path / "run"
    train = ["--train_file", v2, "--do_train", "--max_steps", "2", "--save_strategy", "no", "--version_2_with_negative"]
    assert run(flags(bert, v2, out, *train), capsys)[0] == 0
    threshold, card = (out / THRESHOLD_FILE).read_bytes(), (out / "README.md").read_bytes()
    assert read(out / THRESHOLD_FILE)["weights_sha256"] == weights_fingerprint(out)
    assert read(out / THRESHOLD_FILE)["evaluated_questions"] == 7

    # an evaluation of three questions into the model's folder keeps its threshold and card, unless asked
    assert run(flags(out, v2, out, "--version_2_with_negative", "--max_eval_samples", "3"), capsys)[0] == 0
    assert (out / THRESHOLD_FILE).read_bytes() == threshold and (out / "README.md").read_bytes() == card
    assert read(out / "eval_results.json")["eval_examples"] == 3 and "train_loss" in read(out / "all_results.json")
    assert run(flags(out, v2, out, "--version_2_with_negative", "--max_eval_samples", "3",
                     "--update_model_folder"), capsys)[0] == 0
    assert read(out / THRESHOLD_FILE)["evaluated_questions"] == 3 and (out / "README.md").read_bytes() != card

    # a v1 evaluation into the v2 folder leaves no v2 null odds, spans, scores or pictures beside its own
    assert run(flags(out, v1, out), capsys)[0] == 0
    assert not list(out.glob("eval_*null_odds*")) and not list(out.glob("eval_span*")) and not list(out.glob("eval_*.png"))
    assert not any(key.startswith("eval_HasAns") or key.startswith("eval_best") for key in read(out / "all_results.json"))

    # training afresh without evaluating: nothing of the old model's evaluation or threshold is left to be used
    assert run(flags(bert, v2, out, *train, "--overwrite_output_dir", "--do_eval", "false", "--seed", "7"),
               capsys)[0] == 0
    assert not (out / THRESHOLD_FILE).exists() and not list(out.glob("eval_*"))
    assert "train_loss" in read(out / "all_results.json") and not any(k.startswith("eval_") for k in
                                                                       read(out / "all_results.json"))


def test_ctrl_c_while_writing_leaves_no_earlier_run_s_files_beside_the_new_ones(tmp_path, capsys, monkeypatch):
    """Stopped after its first prediction file: the folder holds that file and nothing of the earlier
    evaluation (its scores, null odds and pictures would read as this run's)."""
    import utils_qa

    bert = tiny_models.build_tiny("Bert", tmp_path / "bert")
    out = tmp_path / "out"
    earlier_run(out, model=False)
    real = utils_qa.write_json

    def first_file_then_ctrl_c(path, *args, **kwargs):
        real(path, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(utils_qa, "write_json", first_file_then_ctrl_c)
    code, _ = run(flags(bert, squad_file(tmp_path / "d.json"), out, "--version_2_with_negative"), capsys)
    assert code == 130
    assert sorted(p.name for p in out.glob("eval_*")) == ["eval_predictions.json"]
    assert THRESHOLD_FILE not in left(out) and "eval_f1" not in read(out / "all_results.json")


def test_an_adapter_folder_is_a_model_folder_and_a_training_run_removes_the_other_layout(tmp_path):
    """A LoRA run into a folder that held a whole model (or the reverse) would leave both: the loader takes the
    adapter first and would answer with the stale one. The model a run starts from stays."""
    out = tmp_path / "out"
    earlier_run(out, model=True)
    (out / "adapter_config.json").write_text("{}")
    (out / "adapter_model.safetensors").write_text("old adapter")
    (out / "merged").mkdir()
    (out / "merged" / "model.safetensors").write_text("old merged")
    clear_earlier_outputs(args(out, train=True), asking=False, saves_adapter=False)
    assert not (out / "adapter_config.json").exists() and not (out / "merged").exists()
    assert (out / "model.safetensors").exists()
    (out / "adapter_config.json").write_text("{}")
    (out / "adapter_model.safetensors").write_text("adapter")
    clear_earlier_outputs(args(out, train=True), asking=False, saves_adapter=True, model_dir=str(out))
    assert (out / "model.safetensors").exists()  # the base this LoRA run starts from
    clear_earlier_outputs(args(out, train=True), asking=False, saves_adapter=True, model_dir=str(tmp_path / "base"))
    assert not (out / "model.safetensors").exists() and (out / "adapter_model.safetensors").exists()
    (out / "config.json").unlink()
    assert is_model_folder(out)  # adapter_config.json and its weights


def test_a_stale_threshold_in_a_model_folder_is_replaced_by_its_evaluation(tmp_path):
    model = tmp_path / "model"
    earlier_run(model, model=True)
    write_threshold(model, 4.0, "sha of other weights")
    evaluating = Recorder(args=SimpleNamespace(output_dir=str(model), do_train=False))
    record_threshold(evaluating, BEST, str(model), update=False)
    assert read(model / THRESHOLD_FILE)["weights_sha256"] == weights_fingerprint(model)
