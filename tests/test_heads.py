"""Which way a model answers (span, beam-search span head, generated text), and the beam-search heads end to end."""

from __future__ import annotations

import math

import pytest

import tiny_models
from helpers import read_json, run_cli
from qakit.errors import QAConfigError
from qakit.heads import HEADS_BY_NAME, resolve_head
from squad_data import squad_file


def test_head_comes_from_the_checkpoint_and_flags():
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoModelForSeq2SeqLM, T5Config

    t5 = T5Config(architectures=["T5ForConditionalGeneration"])
    assert resolve_head(t5, "auto", False).name == "generate"
    assert resolve_head(T5Config(architectures=["T5ForQuestionAnswering"]), "auto", False).name == "span"
    assert resolve_head(T5Config(), "auto", True).name == "generate"
    assert resolve_head(t5, "span", False).name == "span"
    assert HEADS_BY_NAME["generate"].model_class(t5) is AutoModelForSeq2SeqLM
    assert HEADS_BY_NAME["span"].model_class(t5) is AutoModelForQuestionAnswering
    bert = AutoConfig.for_model("bert")
    with pytest.raises(QAConfigError, match="encoder-decoder"):
        resolve_head(bert, "auto", True)
    with pytest.raises(QAConfigError, match="drop one"):
        resolve_head(t5, "span", True)
    with pytest.raises(QAConfigError, match="no beam-search span head.*xlnet"):
        resolve_head(bert, "beam", False)
    assert HEADS_BY_NAME["beam"].model_class(AutoConfig.for_model("xlnet")).__name__ == "XLNetForQuestionAnswering"
    assert HEADS_BY_NAME["beam"].model_class(AutoConfig.for_model("xlm")).__name__ == "XLMForQuestionAnswering"


def test_a_saved_beam_head_is_loaded_as_one():
    from transformers import XLNetConfig

    assert resolve_head(XLNetConfig(architectures=["XLNetForQuestionAnswering"]), "auto", False).name == "beam"
    assert resolve_head(XLNetConfig(architectures=["XLNetForQuestionAnsweringSimple"]), "auto", False).name == "span"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["XLNet", "XLM", "Flaubert"])
def test_beam_head_trains_evaluates_and_reloads(name, tmp_path, capsys):
    """Train the beam-search head a few steps and evaluate; the saved folder then evaluates as a beam head
    again (auto), to the same answers: the head's weights and widths came back with it."""
    model_dir = tiny_models.build_tiny(name, tmp_path / "model")
    data = squad_file(tmp_path / "long.json")
    common = ["--validation_file", data, "--version_2_with_negative", "--do_eval", "--max_seq_length", 48,
              "--doc_stride", 8, "--n_best_size", 4, "--report_to", "none"]
    out = tmp_path / "out"
    code, err = run_cli(["--model_name_or_path", model_dir, "--answer_head", "beam", "--start_n_top", 3,
                         "--end_n_top", 2, "--train_file", data, "--do_train", "--max_steps", 3,
                         "--per_device_train_batch_size", 4, "--save_strategy", "no", "--output_dir", out,
                         *common], capsys)
    assert code == 0, err
    again = tmp_path / "again"
    code, err = run_cli(["--model_name_or_path", out, "--output_dir", again, *common,
                         "--null_score_diff_threshold", 0], capsys)  # the first run's, not the one it recorded
    assert code == 0, err
    for f in ("predictions", "span_predictions"):
        assert read_json(again / f"eval_{f}.json") == read_json(out / f"eval_{f}.json")
    # float32 forward passes of two processes' models may differ in the last bit
    assert read_json(again / "eval_null_odds.json") == pytest.approx(read_json(out / "eval_null_odds.json"), rel=1e-5)
    reloaded = read_json(again / "eval_nbest_predictions.json")
    for qid, rows in read_json(out / "eval_nbest_predictions.json").items():
        assert [r["text"] for r in reloaded[qid]] == [r["text"] for r in rows]
        assert [r["score"] for r in reloaded[qid]] == pytest.approx([r["score"] for r in rows], rel=1e-5)
    nbest, odds = read_json(out / "eval_nbest_predictions.json"), read_json(out / "eval_null_odds.json")
    preds, spans = read_json(out / "eval_predictions.json"), read_json(out / "eval_span_predictions.json")
    assert list(nbest) == list(odds) == list(preds)
    for qid, rows in nbest.items():
        assert 0 < len(rows) <= 4 and all(r["text"] for r in rows)  # spans only: the null is in the odds
        assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
        assert all(r["score"] == pytest.approx(r["start_logit"] + r["end_logit"]) and r["score"] <= 0 for r in rows)
        assert spans[qid] == rows[0]["text"]
        assert preds[qid] == ("" if odds[qid] > 0.0 else spans[qid])
    assert math.isfinite(read_json(out / "eval_results.json")["eval_best_f1"])


def base_only(model_dir, dest):
    """The model folder without its answer head, as a pretrained checkpoint ships (MiniLM's package is one)."""
    from transformers import AutoModel, AutoTokenizer

    AutoModel.from_pretrained(model_dir).save_pretrained(dest)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(dest)
    return dest


@pytest.mark.slow
def test_an_answer_head_the_checkpoint_lacks_is_refused_for_answering_and_trained_afresh(tmp_path, capsys, caplog):
    """Evaluation with a random head gives answers that change with --seed and exit 0; now it is one line naming
    the missing weights, unless --allow_untrained_head. Training may start from a fresh head (logged)."""
    bert = base_only(tiny_models.build_tiny("Bert", tmp_path / "qa"), tmp_path / "base")
    data = squad_file(tmp_path / "d.json")
    common = ["--validation_file", data, "--version_2_with_negative", "--do_eval", "--max_seq_length", 48,
              "--doc_stride", 8, "--report_to", "none", "--model_name_or_path", bert]
    code, err = run_cli([*common, "--output_dir", tmp_path / "o"], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"the span answer head's weights (qa_outputs.weight, qa_outputs.bias) are not in {bert}" in err
    assert "--do_train" in err and not list((tmp_path / "o").glob("*"))
    code, err = run_cli([*common, "--output_dir", tmp_path / "smoke", "--allow_untrained_head"], capsys)
    assert code == 0 and (tmp_path / "smoke" / "eval_predictions.json").is_file()
    with caplog.at_level("INFO", logger="qa"):
        code, err = run_cli([*common, "--output_dir", tmp_path / "t", "--train_file", data, "--do_train",
                             "--max_steps", 1, "--save_strategy", "no"], capsys)
    assert code == 0 and "Training the answer head from fresh weights (qa_outputs.weight" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("saved,asked,missing", [("XLNetForQuestionAnswering", "span", "qa_outputs.weight"),
                                                 ("XLNetForQuestionAnsweringSimple", "beam", "start_logits.dense")])
def test_the_head_asked_for_must_be_the_one_saved(saved, asked, missing, tmp_path, capsys):
    model = tiny_models.build_tiny("XLNet", tmp_path / "m", class_name=saved)
    code, err = run_cli(["--model_name_or_path", model, "--answer_head", asked, "--validation_file",
                         squad_file(tmp_path / "d.json"), "--version_2_with_negative", "--do_eval", "--report_to",
                         "none", "--max_seq_length", 48, "--doc_stride", 8, "--output_dir", tmp_path / "o"], capsys)
    assert code == 2 and f"the {asked} answer head's weights (" in err and missing in err
    assert "if it was saved with another --answer_head, pass that one" in err
