"""Big-model engines: the shipped DeepSpeed and FSDP configs pass the Trainer's own checks, the engine is
said in the log, and an engine that would not run is an error, never a silent fallback to DDP."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers

import tiny_models
from helpers import (ONE_THREAD, REPO, assert_evaluates_as_one_process, rank_pid, read_json, run_cli, run_qa,
                     signal_after_steps, tiny_run_flags, torchrun)
from squad_data import squad_file

CONFIGS = REPO / "configs"


def _autos(value) -> list:
    """Every "auto" left in a config (the integration fills them all)."""
    if isinstance(value, dict):
        return [a for v in value.values() for a in _autos(v)]
    if isinstance(value, list):
        return [a for v in value for a in _autos(v)]
    return [value] if value == "auto" else []


def _args(**extra):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir="/tmp/qa-engines", per_device_train_batch_size=8, gradient_accumulation_steps=2,
                             learning_rate=3e-5, max_steps=100, warmup_steps=10, max_grad_norm=1.0, bf16=False,
                             report_to="none", use_cpu=True, **extra)


@pytest.mark.parametrize("name,stage,offload", [("ds_zero2.json", 2, False), ("ds_zero3.json", 3, False),
                                                ("ds_zero3_offload.json", 3, True)])
def test_deepspeed_configs_pass_the_trainers_integration(name, stage, offload):
    """HF's DeepSpeed integration fills every "auto" from the flags and checks the rest against them."""
    pytest.importorskip("deepspeed")
    from transformers import AutoConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    args = _args()
    config = HfTrainerDeepSpeedConfig(json.loads((CONFIGS / name).read_text()))
    config.trainer_config_process(args)
    model = SimpleNamespace(config=AutoConfig.for_model("llama", hidden_size=64, num_hidden_layers=2))
    config.trainer_config_finalize(args, model, num_training_steps=100)
    filled = config.config
    assert _autos(filled) == []
    assert filled["train_micro_batch_size_per_gpu"] == 8 and filled["gradient_accumulation_steps"] == 2
    assert filled["optimizer"]["params"]["lr"] == 3e-5
    assert "scheduler" not in filled  # the Trainer's own --lr_scheduler_type and warmup run, as under DDP
    assert config.is_zero3() == (stage == 3) and config.is_zero2() == (stage == 2)
    assert config.is_offload() == offload
    if stage == 3:
        assert filled["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]  # a whole final model


def test_deepspeed_check_can_fail():
    """The check above is real: a config that disagrees with the flags is refused, naming the values."""
    pytest.importorskip("deepspeed")
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    config = json.loads((CONFIGS / "ds_zero2.json").read_text()) | {"train_micro_batch_size_per_gpu": 4}
    ds = HfTrainerDeepSpeedConfig(config)
    ds.trainer_config_process(_args())
    with pytest.raises(ValueError, match="train_micro_batch_size_per_gpu=4 vs hf per_device_train_batch_size=8"):
        ds.trainer_config_finalize(_args(), SimpleNamespace(config=SimpleNamespace(hidden_size=64)),
                                   num_training_steps=100)


@pytest.mark.parametrize("fsdp,offload", [("full_shard auto_wrap", False), ("full_shard auto_wrap offload", True)])
def test_fsdp_config_builds_the_plugin_the_trainer_builds(fsdp, offload):
    """The Trainer turns --fsdp_config into accelerate's FSDP plugin; ours gives FSDP2, transformer-layer
    wrapping (the model's own _no_split_modules), sharded checkpoints, and CPU offload when --fsdp says
    `offload` (the config sets no offload key, which would override the flag)."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from qakit.engines import _offloads
    args = _args(fsdp=fsdp, fsdp_config=str(CONFIGS / "fsdp_full_shard.json"))
    if not hasattr(args, "fsdp_plugin_args"):
        pytest.skip("transformers 4.x builds the plugin inside the Trainer")
    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT" and plugin.auto_wrap_policy.__name__ == \
        "transformer_auto_wrap_policy"
    assert _offloads(plugin.cpu_offload) == offload


@pytest.mark.parametrize("name,layers,left_out", [("Bert", ["BertLayer"], {"BertEmbeddings"}),
                                                  ("Llama", ["LlamaDecoderLayer"], set())])
def test_fsdp_wraps_the_layers_not_the_embeddings(name, layers, left_out):
    """BERT lists BertEmbeddings among its _no_split_modules; wrapping it as a layer stops accelerate's FSDP2
    ("value was None"), so only the repeated blocks are wrapped one by one."""
    from qakit.engines import fsdp_layers

    model, _ = tiny_models.tiny_model(name)
    assert fsdp_layers(model) == layers
    if model._no_split_modules:  # transformers 5; 4.57's BERT lists none, and its repeated blocks are taken
        assert set(model._no_split_modules) - set(layers) == left_out
    else:
        assert name == "Bert" and not transformers.__version__.startswith("5.")


def _deepspeed_trainer(stage: int, do_train: bool) -> SimpleNamespace:
    """What check_engine reads of a Trainer that took a DeepSpeed config."""
    plugin = SimpleNamespace(zero_stage=stage, deepspeed_config={"zero_optimization": {"stage": stage}})
    args = SimpleNamespace(deepspeed=str(CONFIGS / f"ds_zero{stage}.json"), fsdp=None, do_train=do_train,
                           world_size=2, device=SimpleNamespace(type="cuda"), bf16=False, fp16=False,
                           gradient_checkpointing=False)
    return SimpleNamespace(args=args, is_deepspeed_enabled=True, model=torch.nn.Linear(2, 2),
                           accelerator=SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin)))


def test_evaluating_under_zero2_is_refused_with_the_fix():
    """ZeRO-2 shards no weights, so HF refuses inference with it deep inside the Trainer; ours says what to use."""
    from qakit.engines import check_engine
    from qakit.errors import QAConfigError

    with pytest.raises(QAConfigError, match=r"ds_zero2\.json.*needs ZeRO stage 3.*configs/ds_zero3\.json"):
        check_engine(_deepspeed_trainer(2, do_train=False))
    assert check_engine(_deepspeed_trainer(2, do_train=True)) == "DeepSpeed ZeRO-2 over 2 process(es)"
    assert check_engine(_deepspeed_trainer(3, do_train=False)) == "DeepSpeed ZeRO-3 over 2 process(es)"


@pytest.mark.slow
@pytest.mark.parametrize("engine", [["--fsdp", "full_shard auto_wrap", "--fsdp_config",
                                     str(CONFIGS / "fsdp_full_shard.json")],
                                    ["--deepspeed", str(CONFIGS / "ds_zero2.json")]], ids=["fsdp", "deepspeed"])
def test_sharding_on_cpu_processes_is_refused_not_run_as_ddp(engine, tmp_path):
    """On CPUs accelerate drops the FSDP plugin (and, in its CPU mode, DeepSpeed) and the Trainer would wrap the
    model in DDP: qa.py stops, saying so, before any training, and writes nothing."""
    if engine[0] == "--deepspeed":
        pytest.importorskip("deepspeed")
    model = tiny_models.build_tiny("Bert", tmp_path / "bert")
    data = squad_file(tmp_path / "d.json")
    out = tmp_path / "out"
    proc = run_qa(["--model_name_or_path", str(model), "--train_file", str(data), "--version_2_with_negative",
                   "--do_train", "--max_steps", "2", "--max_seq_length", "64", "--doc_stride", "16", "--report_to",
                   "none", "--output_dir", str(out), *engine], launcher=torchrun(), env=ONE_THREAD)
    assert proc.returncode != 0
    assert f"{engine[0]} was given, but this run would train with DDP over 2 processes" in proc.stderr, \
        proc.stderr[-2000:]
    assert f'File "{REPO / "qa.py"}"' not in proc.stderr  # our one-line error, not a traceback (torchrun adds its own)
    assert not (out / "model.safetensors").exists() and not list(out.glob("checkpoint-*"))


@pytest.mark.slow
def test_engine_is_logged_and_fsdp_needs_processes(tmp_path):
    model = tiny_models.build_tiny("Bert", tmp_path / "bert")
    data = squad_file(tmp_path / "d.json")
    common = ["--model_name_or_path", str(model), "--train_file", str(data), "--version_2_with_negative",
              "--do_train", "--max_steps", "1", "--max_seq_length", "64", "--doc_stride", "16", "--report_to", "none",
              "--save_strategy", "no"]
    plain = run_qa([*common, "--output_dir", str(tmp_path / "one")])
    assert plain.returncode == 0 and "Engine: one process on cpu" in plain.stdout, plain.stderr[-2000:]
    assert read_json(tmp_path / "one" / "train_results.json")["train_samples"] > 0
    alone = run_qa([*common, "--output_dir", str(tmp_path / "fsdp"), "--fsdp", "full_shard"])
    assert alone.returncode == 2 and "--fsdp shards the model over several processes" in alone.stderr
    assert not Path(tmp_path / "fsdp" / "model.safetensors").exists()


# --- Sharded runs on this machine's CPUs (two gloo processes), through tests/sharding_on_cpu.py ----------------

SHARDING_LAUNCHER = REPO / "tests" / "sharding_on_cpu.py"
ENGINES = {"fsdp": ["--fsdp", "full_shard auto_wrap", "--fsdp_config", str(CONFIGS / "fsdp_full_shard.json")],
           "zero2": ["--deepspeed", str(CONFIGS / "ds_zero2.json")],
           "zero3": ["--deepspeed", str(CONFIGS / "ds_zero3.json")]}


def _flags(model: Path, data: Path, out: Path) -> list[str]:
    return [*tiny_run_flags(model, data), "--output_dir", str(out)]


TRAIN = ["--do_train", "--do_eval", "--max_steps", "4", "--logging_steps", "1"]
RESUMED = {("fsdp", "Bert"), ("zero3", "Llama")}  # a resume from each engine's sharded checkpoint layout
SAVE_AT_2 = ["--save_strategy", "steps", "--save_steps", "2"]


def _sharded(args: list[str]) -> str:
    """qa.py over two CPU processes through the sharding launcher; its log."""
    proc = run_qa(args, launcher=torchrun(script=SHARDING_LAUNCHER), env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _losses(out: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in read_json(out / "trainer_state.json")["log_history"] if "loss" in e}


@pytest.fixture(scope="module")
def sharding_setup(tmp_path_factory):
    """Tiny models and data, and each model's DDP run (same flags, same data order) to compare with."""
    root = tmp_path_factory.mktemp("sharding")
    data = squad_file(root / "d.json")
    ddp: dict[str, Path] = {}

    def reference(name: str) -> tuple[Path, Path]:
        model = root / name.lower()
        if not model.exists():
            tiny_models.build_tiny(name, model)
        if name not in ddp:
            out = root / f"ddp-{name}"
            proc = run_qa([*_flags(model, data, out), *TRAIN, "--save_strategy", "no"],
                          launcher=torchrun(), env=ONE_THREAD)
            assert proc.returncode == 0, proc.stderr[-3000:]
            ddp[name] = out
        return model, ddp[name]

    return data, reference


@pytest.mark.slow
@pytest.mark.parametrize("engine,name", [("fsdp", "Bert"), ("fsdp", "Llama"), ("zero2", "Llama"), ("zero3", "Llama")])
def test_sharded_training_matches_ddp_saves_whole_and_resumes(engine, name, sharding_setup, tmp_path):
    """FSDP2 (FULL_SHARD) and DeepSpeed ZeRO-2/3 over two gloo processes: every step's loss is DDP's (relative
    1e-5: the same sums, reduced in another order); checkpoints are the engine's sharded ones; the final model is
    whole, loads on one device, and one process evaluating it writes the run's evaluation files (the sharded
    forward, candidates and gathering give what DDP and one process give, up to float32 rounding); a run resumed
    from the sharded checkpoint-2 (FSDP's and DeepSpeed's layouts, `RESUMED`) logs the same later losses and ends
    on the same weights (FSDP: exactly; DeepSpeed's restored optimizer: within 1e-4). Llama covers the decoder family rules (left padding, added pad token,
    null position) under each engine."""
    if engine != "fsdp":
        pytest.importorskip("deepspeed")
    from safetensors.torch import load_file
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    data, reference = sharding_setup
    model, ddp = reference(name)
    out = tmp_path / "run"
    log = _sharded([*_flags(model, data, out), *TRAIN, *SAVE_AT_2, *ENGINES[engine]])
    layer = {"Bert": "BertLayer", "Llama": "LlamaDecoderLayer"}[name]
    said = {"fsdp": f"Engine: FSDP2 (reshard_after_forward=True, wrapping ['{layer}']) over 2 processes",
            "zero2": "Engine: DeepSpeed ZeRO-2 over 2 process(es)",
            "zero3": "Engine: DeepSpeed ZeRO-3 over 2 process(es)"}[engine]
    assert said in log, log[-3000:]

    losses, ddp_losses = _losses(out), _losses(ddp)
    assert sorted(losses) == [1, 2, 3, 4] and losses == pytest.approx(ddp_losses, rel=1e-5)

    checkpoint = out / "checkpoint-2"
    if engine == "fsdp":
        assert (checkpoint / "pytorch_model_fsdp_0" / ".metadata").is_file()
        assert (checkpoint / "optimizer_0" / ".metadata").is_file() and not (checkpoint / "model.safetensors").exists()
    else:
        assert (checkpoint / "latest").read_text().strip() == "global_step2"
        assert len(list((checkpoint / "global_step2").glob("*optim_states.pt"))) == 2

    loaded, info = AutoModelForQuestionAnswering.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert sum(p.numel() for p in loaded.parameters()) == \
        sum(p.numel() for p in AutoModelForQuestionAnswering.from_pretrained(model).parameters())
    assert AutoTokenizer.from_pretrained(out).pad_token is not None

    assert_evaluates_as_one_process(out, data, tmp_path)

    if (engine, name) not in RESUMED:
        return
    again = tmp_path / "again"
    again.mkdir()
    shutil.copytree(checkpoint, again / "checkpoint-2")
    log = _sharded([*_flags(model, data, again), *TRAIN, *SAVE_AT_2, *ENGINES[engine]])
    assert f"Resuming from {again / 'checkpoint-2'}" in log
    assert _losses(again) == pytest.approx(losses, rel=1e-5)
    first, resumed = load_file(out / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == resumed.keys()
    worst = max((first[k] - resumed[k]).abs().max().item() for k in first)
    assert worst <= (0.0 if engine == "fsdp" else 1e-4), worst


@pytest.mark.slow
def test_offload_and_checkpointing_leave_every_step_unchanged(sharding_setup, tmp_path):
    """ZeRO-3 with weights and optimizer states offloaded to CPU memory (configs/ds_zero3_offload.json, DeepSpeed's
    CPU Adam) and --gradient_checkpointing (activations recomputed in the backward) move memory, not arithmetic:
    every step's loss is DDP's. FSDP2's own CPU offload cannot run on CPUs (torch pins the offloaded shards in
    page-locked memory, which needs an accelerator); its log line is checked in the plugin test above."""
    pytest.importorskip("deepspeed")
    data, reference = sharding_setup
    model, ddp = reference("Llama")
    out = tmp_path / "offload"
    log = _sharded([*_flags(model, data, out), *TRAIN, "--save_strategy", "no", "--gradient_checkpointing",
                    "--deepspeed", str(CONFIGS / "ds_zero3_offload.json")])
    assert ("Engine: DeepSpeed ZeRO-3, optimizer and param offloaded over 2 process(es); memory: gradient "
            "checkpointing") in log
    assert _losses(out) == pytest.approx(_losses(ddp), rel=1e-5)


@pytest.mark.slow
def test_bf16_weights_and_gradient_checkpointing_are_in_force(tmp_path, capsys, caplog, monkeypatch):
    """--torch_dtype bfloat16 loads (and so trains and saves) bf16 weights, --bf16 runs under autocast, and
    --gradient_checkpointing wraps every decoder layer's training forward in torch's checkpoint: counted here,
    one call per layer per step (evaluation runs no checkpoint)."""
    import transformers.modeling_utils
    from safetensors.torch import load_file
    from transformers import AutoConfig

    model = tiny_models.build_tiny("Llama", tmp_path / "llama")
    data = squad_file(tmp_path / "d.json")
    calls = []
    checkpoint = transformers.modeling_utils.checkpoint

    def counted(*args, **kwargs):
        calls.append(1)
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counted)
    out = tmp_path / "out"
    code, err = run_cli([*_flags(model, data, out), "--do_train", "--do_eval", "--max_steps", "3", "--use_cpu",
                         "true", "--save_strategy", "no", "--bf16", "--torch_dtype", "bfloat16",
                         "--gradient_checkpointing"], capsys)
    assert code == 0, err[-3000:]
    assert ("Engine: one process on cpu; memory: weights in bfloat16, bf16 mixed precision, gradient "
            "checkpointing") in caplog.text
    assert len(calls) == AutoConfig.from_pretrained(model).num_hidden_layers * 3
    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.bfloat16}
    assert all(0 < loss < 20 for loss in _losses(out).values())


@pytest.mark.slow
@pytest.mark.parametrize("engine,name", [("fsdp", "Bert")])  # ("zero3", "Llama") passes too (within 1e-4): 45 s
def test_sigterm_during_sharded_training_checkpoints_and_resumes_exactly(engine, name, sharding_setup, tmp_path):
    """FSDP2 or DeepSpeed ZeRO-3 over two CPU processes, SIGTERM to rank 0 at a random step: both ranks stop after
    that step with one sharded checkpoint there and status 75; the same command resumes from it and ends on the
    uninterrupted run's weights: exactly under FSDP; under DeepSpeed within 1e-4, as its ordinary resume from a
    checkpoint (`test_sharded_training_matches_ddp_saves_whole_and_resumes`)."""
    if engine != "fsdp":
        pytest.importorskip("deepspeed")
    from safetensors.torch import load_file

    from qakit.preemption import PREEMPTED_STATUS

    data, reference = sharding_setup
    model, _ = reference(name)
    args = ["--do_train", "--max_steps", "6", "--logging_steps", "1", "--save_strategy", "no", *ENGINES[engine]]
    _sharded([*_flags(model, data, tmp_path / "full"), *args])
    stopped = tmp_path / "stopped"
    at = random.Random().randint(1, 4)
    status, log = signal_after_steps([*torchrun(script=SHARDING_LAUNCHER), *_flags(model, data, stopped), *args], at,
                                     target=lambda proc: rank_pid(proc.pid, 0), env=ONE_THREAD)
    assert status != 0 and f"exitcode  : {PREEMPTED_STATUS}" in log, log[-3000:]
    saved = [p.name for p in stopped.glob("checkpoint-*")]
    assert len(saved) == 1 and at <= int(saved[0].split("-")[1]) < 6, (saved, at, log[-3000:])
    sharded = {"fsdp": "pytorch_model_fsdp_0/.metadata", "zero3": "latest"}[engine]  # what each engine writes last
    assert (stopped / saved[0] / sharded).is_file()
    assert f"Resuming from {stopped / saved[0]}" in _sharded([*_flags(model, data, stopped), *args])
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(stopped / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= (0.0 if engine == "fsdp" else 1e-4), worst  # DeepSpeed's ordinary resume: the same bound
