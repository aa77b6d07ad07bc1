"""Big-model engines: the shipped DeepSpeed and FSDP configs pass the Trainer's own checks, the engine is
said in the log, and an engine that would not run is an error, never a silent fallback to DDP."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import tiny_models
from helpers import REPO, read_json, run_qa
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
    assert filled["optimizer"]["params"]["lr"] == 3e-5 and filled["scheduler"]["params"]["total_num_steps"] == 100
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


def test_fsdp_config_builds_the_plugin_the_trainer_builds():
    """The Trainer turns --fsdp_config into accelerate's FSDP plugin; ours gives FSDP2, transformer-layer
    wrapping (the model's own _no_split_modules), sharded checkpoints."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    args = _args(fsdp="full_shard auto_wrap", fsdp_config=str(CONFIGS / "fsdp_full_shard.json"))
    if not hasattr(args, "fsdp_plugin_args"):
        pytest.skip("transformers 4.x builds the plugin inside the Trainer")
    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT" and plugin.auto_wrap_policy.__name__ == \
        "transformer_auto_wrap_policy"


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
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                f"--master_port={29563 if engine[0] == '--fsdp' else 29564}",
                str(REPO / "qa.py")]
    proc = run_qa(["--model_name_or_path", str(model), "--train_file", str(data), "--version_2_with_negative",
                   "--do_train", "--max_steps", "2", "--max_seq_length", "64", "--doc_stride", "16", "--report_to",
                   "none", "--output_dir", str(out), *engine], launcher=launcher, env={"OMP_NUM_THREADS": "1"})
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
