"""A null threshold that carries over: `best` predicts with the evaluation's best_f1_thresh, the model folder
records it, and a later --do_predict on that folder uses it unless told otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

import tiny_models
from helpers import read_json as read, run_qa
from squad_data import squad_file



def thresholded(out: Path, threshold: float) -> dict[str, str]:
    """The predictions the official rule gives for `threshold`, from the run's own odds and best spans."""
    odds, spans = read(out / "predict_null_odds.json"), read(out / "predict_span_predictions.json")
    return {qid: "" if odds[qid] > threshold else spans[qid] for qid in odds}


@pytest.mark.slow
def test_best_threshold_is_used_recorded_and_carried_over(tmp_path):
    model = tiny_models.build_tiny("Bert", tmp_path / "bert")
    data = squad_file(tmp_path / "d.json")
    test = squad_file(tmp_path / "t.json", answers=False)
    out = tmp_path / "out"
    common = ["--version_2_with_negative", "--max_seq_length", "64", "--doc_stride", "16", "--report_to", "none",
              "--use_cpu", "true", "--test_file", str(test), "--do_predict"]
    first = run_qa(["--model_name_or_path", str(model), "--train_file", str(data), "--validation_file", str(data),
                    "--do_train", "--do_eval", "--max_steps", "2", "--save_strategy", "no", "--output_dir", str(out),
                    "--null_score_diff_threshold", "best", *common])
    assert first.returncode == 0, first.stderr[-3000:]
    best = read(out / "eval_results.json")["eval_best_threshold"]
    assert f"best threshold {best}" in first.stdout + first.stderr
    assert read(out / "predict_predictions.json") == thresholded(out, best)
    assert read(out / "null_threshold.json")["null_score_diff_threshold"] == best

    later = tmp_path / "later"
    again = run_qa(["--model_name_or_path", str(out), "--output_dir", str(later), *common])
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Null threshold {best}, as recorded in" in again.stdout + again.stderr
    assert read(later / "predict_predictions.json") == thresholded(later, best)

    told = tmp_path / "told"
    explicit = run_qa(["--model_name_or_path", str(out), "--output_dir", str(told), *common,
                       "--null_score_diff_threshold=-1e9"])  # "=": argparse reads a bare -1e9 as a flag
    assert explicit.returncode == 0 and "as recorded in" not in explicit.stdout + explicit.stderr
    assert read(told / "predict_predictions.json") == thresholded(told, -1e9) == {q: "" for q in thresholded(told, 0)}


@pytest.mark.slow
def test_best_needs_an_evaluation(tmp_path):
    proc = run_qa(["--model_name_or_path", "some/model", "--test_file", "t.json", "--do_predict",
                   "--version_2_with_negative", "--null_score_diff_threshold", "best", "--output_dir", str(tmp_path)])
    assert proc.returncode == 2 and "needs --do_eval" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("odds,expect_official", [
    ({"a": 0.5, "n1": -1.0, "n2": 2.0}, False),  # answering nothing is best: the official 0.0 does not give it
    ({"a": -3.0, "n1": 1.0, "n2": 2.0}, True),   # the official threshold gives best_f1 itself
])
def test_threshold_for_best_f1_gives_best_f1(odds, expect_official):
    """Hand-worked: a has a gold answer our span misses half of, n1 and n2 have none."""
    from metrics.scoring import score_answers

    spans = {"a": "the tower", "n1": "x", "n2": "y"}
    answers = [{"text": ["tower"]}, {"text": []}, {"text": []}]
    scores = score_answers(list(spans), answers, {}, spans, odds, True, 0.0)
    again = score_answers(list(spans), answers, {}, spans, odds, True, scores["best_threshold"])
    assert again["f1"] == scores["best_f1"]
    assert (scores["best_threshold"] == scores["best_f1_thresh"]) == expect_official
    if not expect_official:
        assert scores["best_f1"] == pytest.approx(200 / 3) and scores["best_f1_thresh"] == 0.0
        assert score_answers(list(spans), answers, {}, spans, odds, True, 0.0)["f1"] < scores["best_f1"]
