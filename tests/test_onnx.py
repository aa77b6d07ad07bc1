"""ONNX export (`qakit/onnx.py`): the exported graph against its own torch model as the oracle (padded and
unpadded batches of several sizes and lengths), int8, a folder that still loads when moved, a LoRA adapter
merged, only the inputs a model takes, the folders refused, and the command's exit status."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

import tiny_models
from helpers import OFFLINE_ENV, REPO
from qakit import onnx as qa_onnx
from qakit.errors import QAConfigError
from qakit.family import QAFamily, prepare_model
from qakit.outputs import recorded_threshold, weights_fingerprint
from qakit.onnx import OnnxQAModel, export_onnx, graph_inputs

QUESTIONS = ["Who kept the lighthouse?", "When did the war end?", "How many bees are in a healthy hive in summer?"]
CONTEXTS = ["In 1874 the keeper, a careful man named Thomas Reed, wrote in his journal that the winter storms "
            "had broken three windows and flooded the lower room.",
            "The war ended in 1945.",
            "A healthy hive can hold about 50,000 bees in the summer. Most of them are workers; the queen lays the "
            "eggs, and the drones live only a few months. Bees move pollen from one flower to another."]


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    """A tiny BERT folder with a calibrated threshold and a card, as a training run leaves it."""
    folder = tiny_models.build_tiny("Bert", tmp_path_factory.mktemp("models") / "bert")
    record = {"null_score_diff_threshold": -1.5, "weights_sha256": weights_fingerprint(folder)}
    (folder / "null_threshold.json").write_text(json.dumps(record), encoding="utf-8")
    (folder / "README.md").write_text("# tiny bert\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def exported(bert, tmp_path_factory) -> Path:
    return export_onnx(str(bert), str(tmp_path_factory.mktemp("exports") / "bert-onnx"), int8=True)


def batches(tokenizer) -> list[dict[str, torch.Tensor]]:
    """Batch 1 unpadded (two lengths), and batch 3 padded to its longest pair: the axes must really be dynamic."""
    one = [tokenizer(QUESTIONS[i:i + 1], CONTEXTS[i:i + 1], return_tensors="pt") for i in (0, 1)]
    three = tokenizer(QUESTIONS, CONTEXTS, padding=True, return_tensors="pt")
    assert len({b["input_ids"].shape[1] for b in (*one, three)}) == 3
    assert (three["attention_mask"] == 0).any()
    return [*one, three]


def torch_logits(model, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = model(**inputs)
    return out.start_logits.numpy(), out.end_logits.numpy()


def assert_matches_torch(folder: Path, model, tokenizer, names: list[str]) -> None:
    """The exported folder's fp32 graph gives the torch model's logits (1e-4) on every batch."""
    onnx_model = OnnxQAModel.load(str(folder))
    for batch in batches(tokenizer):
        inputs = {name: batch[name] for name in names}
        out = onnx_model(**inputs)
        assert out.start_logits.dtype == out.end_logits.dtype == torch.float32
        for ours, theirs in zip((out.start_logits.numpy(), out.end_logits.numpy()), torch_logits(model, inputs)):
            assert ours.shape == theirs.shape
            assert np.abs(ours - theirs).max() <= 1e-4


@pytest.mark.slow  # exports a graph (seconds)
def test_fp32_graph_gives_the_torch_models_logits_and_is_driven_like_it(bert, exported):
    model = AutoModelForQuestionAnswering.from_pretrained(bert, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(bert)
    assert_matches_torch(exported, model, tokenizer, ["input_ids", "attention_mask", "token_type_ids"])
    onnx_model = OnnxQAModel.load(str(exported), threads=1)
    assert list(inspect.signature(onnx_model.forward).parameters) == [
        "input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"]
    batch = batches(tokenizer)[-1]
    positional = onnx_model.forward(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    defaults = onnx_model(batch["input_ids"][:1, :9])  # mask and types filled as transformers fills them
    assert np.abs(defaults.start_logits.numpy() - torch_logits(model, {"input_ids": batch["input_ids"][:1, :9]})[0]
                  ).max() <= 1e-4
    assert np.abs(positional.start_logits.numpy() - torch_logits(model, dict(batch))[0]).max() <= 1e-4
    # the project's own checks take it as a span-head model, with the torch model's inputs
    prepare_model(onnx_model, tokenizer)
    family = QAFamily.detect(onnx_model, tokenizer, max_seq_length=64)
    torch_family = QAFamily.detect(model, tokenizer, max_seq_length=64)
    assert family.model_inputs() == torch_family.model_inputs()
    assert onnx_model.eval() is onnx_model and onnx_model.to("cpu") is onnx_model
    assert onnx_model.device == torch.device("cpu") and onnx_model.dtype == torch.float32
    assert onnx_model.base_model is onnx_model and onnx_model.get_output_embeddings() is None
    assert list(onnx_model.parameters()) == list(onnx_model.named_parameters()) == []
    with pytest.raises(QAConfigError, match="CPU only"):
        onnx_model.to("cuda")
    assert sorted(p.name for p in exported.iterdir()) == sorted(
        ["README.md", "config.json", "model.onnx", "model_int8.onnx", "null_threshold.json", "tokenizer.json",
         "tokenizer_config.json"])
    # the threshold recorded again for the graph's files, so a run on the export (threshold="model") uses it
    carried = json.loads((exported / "null_threshold.json").read_text())
    assert carried["weights_sha256"] == weights_fingerprint(exported) != weights_fingerprint(bert)
    assert recorded_threshold(str(exported)) == -1.5 == recorded_threshold(str(bert))


@pytest.mark.slow  # exports a graph (seconds)
def test_int8_graph_quantizes_the_matmuls_and_stays_close(bert, exported):
    import onnx

    ops = {node.op_type for node in onnx.load(str(exported / "model_int8.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    model = AutoModelForQuestionAnswering.from_pretrained(bert, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(bert)
    int8 = OnnxQAModel.load(str(exported), int8=True)
    same_argmax = []
    for batch in batches(tokenizer):
        out = int8(**batch)
        for ours, theirs in zip((out.start_logits.numpy(), out.end_logits.numpy()), torch_logits(model, batch)):
            assert np.isfinite(ours).all()
            # random tiny weights: logits up to about 0.2-0.3, which int8 weights move by about 0.003 (measured)
            assert np.abs(ours - theirs).max() <= 0.05 * np.abs(theirs).max()
            assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.99
            same_argmax += list(ours.argmax(-1) == theirs.argmax(-1))
    assert np.mean(same_argmax) >= 0.8  # of 10 rows' start and end (all 10 when measured)


@pytest.mark.slow  # exports a graph (seconds)
def test_command_replaces_an_earlier_export_and_the_moved_folder_loads(bert, exported, tmp_path, monkeypatch,
                                                                      capsys):
    out = tmp_path / "out"
    shutil.copytree(exported, out)  # an earlier export with int8: replaced whole, so no stale model_int8.onnx
    monkeypatch.setattr(qa_onnx, "EXTERNAL_DATA_BYTES", 0)  # the weights in model.onnx.data, as a large model's
    qa_onnx.main([str(bert), str(out)])  # returns: exit status 0
    printed = capsys.readouterr().out
    assert f"Wrote {out}" in printed and "model.onnx.data" in printed and " MB" in printed
    assert (out / "model.onnx.data").is_file() and not (out / "model_int8.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging or old folder left beside it
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    out.rename(moved)
    model = AutoModelForQuestionAnswering.from_pretrained(bert, dtype=torch.float32).eval()
    assert_matches_torch(moved, model, AutoTokenizer.from_pretrained(moved),
                         ["input_ids", "attention_mask", "token_type_ids"])
    with pytest.raises(QAConfigError, match="export with --int8"):
        OnnxQAModel.load(str(moved), int8=True)


@pytest.mark.slow  # exports a graph (seconds)
def test_an_adapter_is_merged_and_a_model_without_token_types_exports_only_its_inputs(tmp_path):
    """A LoRA adapter (with its own trained head) on a DistilBERT, whose forward takes no token_type_ids."""
    from peft import LoraConfig, get_peft_model

    from qakit.adapters import linear_targets
    from qakit.heads import head_modules

    base = tiny_models.build_tiny("DistilBert", tmp_path / "distilbert")
    model = AutoModelForQuestionAnswering.from_pretrained(base, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base)
    assert "token_type_ids" in tokenizer.model_input_names
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=linear_targets(model),
                                                  modules_to_save=head_modules(model)))
    torch.manual_seed(1)
    with torch.no_grad():  # adapters and head that differ from the base: a merge that drops either shows
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.05)
    peft_model.save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    out = export_onnx(str(tmp_path / "adapter"), str(tmp_path / "onnx"))
    onnx_model = OnnxQAModel.load(str(out))
    assert onnx_model.input_names == ["input_ids", "attention_mask"]
    assert list(inspect.signature(onnx_model.forward).parameters) == [
        "input_ids", "attention_mask", "start_positions", "end_positions"]
    with pytest.raises(TypeError):
        onnx_model(input_ids=torch.ones((1, 4), dtype=torch.long), token_type_ids=torch.zeros((1, 4)))
    assert_matches_torch(out, peft_model.eval(), tokenizer, ["input_ids", "attention_mask"])


def test_graph_inputs_are_those_the_model_takes_and_the_tokenizer_makes():
    roberta, roberta_tokenizer = tiny_models.tiny_model("Roberta")  # forward takes token types, tokenizer makes none
    assert "token_type_ids" in inspect.signature(roberta.forward).parameters
    assert graph_inputs(roberta, roberta_tokenizer) == ["input_ids", "attention_mask"]
    bert, bert_tokenizer = tiny_models.tiny_model("Bert")
    assert graph_inputs(bert, bert_tokenizer) == ["input_ids", "attention_mask", "token_type_ids"]


def test_folders_that_cannot_be_exported_are_refused_in_one_line(bert, tmp_path):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(QAConfigError, match=f"{foreign} is not empty and holds no earlier export"):
        export_onnx(str(bert), str(foreign))
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    with pytest.raises(QAConfigError, match=f"{tmp_path / 'nowhere'}: no such folder"):
        export_onnx(str(tmp_path / "nowhere"), str(tmp_path / "out"))
    t5 = tiny_models.build_tiny("T5", tmp_path / "t5", "T5ForConditionalGeneration")
    with pytest.raises(QAConfigError, match=f"{t5} holds a generate head .*ONNX export supports span heads"):
        export_onnx(str(t5), str(tmp_path / "out"))
    xlnet = tiny_models.build_tiny("XLNet", tmp_path / "xlnet", "XLNetForQuestionAnswering")
    with pytest.raises(QAConfigError, match=f"{xlnet} holds a beam head .*ONNX export supports span heads"):
        export_onnx(str(xlnet), str(tmp_path / "out"))
    body_only = tmp_path / "body"
    config = AutoModelForQuestionAnswering.from_pretrained(bert).config
    from transformers import BertModel

    BertModel(config).save_pretrained(body_only)  # a pretrained body: the span head would be random
    with pytest.raises(QAConfigError, match=f"{body_only}: its weights have no trained span head"):
        export_onnx(str(body_only), str(tmp_path / "out"))
    with pytest.raises(QAConfigError, match=r"no ONNX graph \(model.onnx\): run python -m qakit.onnx MODEL_DIR"):
        OnnxQAModel.load(str(bert))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["body", "notes", "t5", "xlnet"]  # nothing half-written


def test_a_failed_export_leaves_the_earlier_folder_as_it_was(bert, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"earlier export")

    def fail_midway(model, tokenizer, path, opset):
        path.write_bytes(b"half a graph")
        raise RuntimeError("killed")

    monkeypatch.setattr(qa_onnx, "write_graph", fail_midway)
    with pytest.raises(RuntimeError, match="killed"):
        export_onnx(str(bert), str(out))
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["model.onnx"]
    assert (out / "model.onnx").read_bytes() == b"earlier export"


@pytest.mark.slow  # a subprocess
def test_command_exits_non_zero_with_one_line_on_a_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    done = subprocess.run([sys.executable, "-m", "qakit.onnx", str(missing), str(tmp_path / "out")], cwd=REPO,
                          env={**os.environ, **OFFLINE_ENV}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"qakit.onnx: error: {missing}: no such folder; pass the model folder (config.json and the weights)")
    assert not (tmp_path / "out").exists()
