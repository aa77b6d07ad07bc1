"""Which training engine runs (one process, DDP, FSDP, DeepSpeed ZeRO), said in the log, and never a silent
fallback: asking for an engine the run would not use is an error.

transformers and accelerate drop an FSDP or DeepSpeed setting without a word in some set-ups: on a machine
without an accelerator, accelerate keeps its FSDP plugin only for accelerator backends (its MULTI_CPU state
has none), and the Trainer then wraps the model in plain DistributedDataParallel; a run asked to shard a
13B model would instead copy it whole to every process.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from qakit.errors import QAConfigError

logger = logging.getLogger(__name__)


def asked_engine(args: Any) -> str | None:
    """The sharding engine the flags ask for: "fsdp", "deepspeed" or None."""
    if getattr(args, "deepspeed", None):
        return "deepspeed"
    if getattr(args, "fsdp", None):
        return "fsdp"
    return None


def check_launch(args: Any) -> None:
    """Before the Trainer exists: sharding needs several processes (the Trainer's own error is a traceback)."""
    if asked_engine(args) == "fsdp" and args.world_size <= 1:
        raise QAConfigError("--fsdp shards the model over several processes: launch with torchrun "
                            "--nproc_per_node N (N >= 2, one per GPU), or drop --fsdp")


def describe(trainer: Any) -> str:
    """The engine the Trainer will really use, from its accelerator."""
    args = trainer.args
    if getattr(trainer, "is_deepspeed_enabled", False):
        plugin = trainer.accelerator.state.deepspeed_plugin
        zero = plugin.deepspeed_config.get("zero_optimization", {})
        offloaded = [what for what in ("optimizer", "param")
                     if (zero.get(f"offload_{what}") or {}).get("device") in ("cpu", "nvme")]
        offload = f", {' and '.join(offloaded)} offloaded" if offloaded else ""
        return f"DeepSpeed ZeRO-{plugin.zero_stage}{offload} over {args.world_size} process(es)"
    if getattr(trainer, "is_fsdp_enabled", False):
        plugin = trainer.accelerator.state.fsdp_plugin
        version = getattr(plugin, "fsdp_version", 1)
        strategy = (f"reshard_after_forward={plugin.reshard_after_forward}" if version == 2
                    else plugin.sharding_strategy.name)
        wrap = getattr(plugin, "transformer_cls_names_to_wrap", None) or "the model's _no_split_modules"
        offload = ", parameters offloaded to the CPU" if _offloads(plugin.cpu_offload) else ""
        return f"FSDP{version} ({strategy}, wrapping {wrap}{offload}) over {args.world_size} processes"
    if args.world_size > 1:
        backend = getattr(trainer.accelerator.state, "backend", None) or "?"
        return f"DDP over {args.world_size} processes ({backend})"
    return f"one process on {args.device}"


def _offloads(policy: Any) -> bool:
    """FSDP1's CPUOffload(offload_params=...) or FSDP2's CPUOffloadPolicy (its plain OffloadPolicy is none)."""
    from torch.distributed.fsdp import CPUOffloadPolicy

    return isinstance(policy, CPUOffloadPolicy) or bool(getattr(policy, "offload_params", False))


def fsdp_layers(model: Any) -> list[str]:
    """The layer classes FSDP shards one by one: the model's `_no_split_modules` that it builds, less any that
    hold the input embeddings (BERT-style models list their embeddings block there). accelerate shards the
    input embeddings by themselves after the layers and stops with "Invariant encountered: value was None"
    when a layer already took them. A model that lists none (BERT on transformers 4.57): its repeated blocks,
    the classes of a ModuleList's entries."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    built = {type(module).__name__: module for module in model.modules()}
    listed = getattr(model, "_no_split_modules", None) or [
        name for name in dict.fromkeys(type(block).__name__ for module in model.modules()
                                       if isinstance(module, torch.nn.ModuleList) for block in module)]
    return [name for name in listed if name in built and not any(sub is embeddings for sub in built[name].modules())]


def choose_fsdp_layers(trainer: Any) -> None:
    """Under FSDP, fill in the layers to wrap where --fsdp_config names none (transformer_layer_cls_to_wrap);
    before training, which is when accelerate wraps the model."""
    if getattr(trainer, "is_fsdp_enabled", False):
        plugin = trainer.accelerator.state.fsdp_plugin
        if plugin.transformer_cls_names_to_wrap is None:
            plugin.transformer_cls_names_to_wrap = fsdp_layers(trainer.model)


def check_engine(trainer: Any) -> str:
    """Log the engine; refuse a run whose engine is not the one asked for."""
    engine = describe(trainer)
    asked = asked_engine(trainer.args)
    if asked == "fsdp" and not getattr(trainer, "is_fsdp_enabled", False):
        raise QAConfigError(
            f"--fsdp was given, but this run would train with {engine}, every process holding the whole model: "
            "accelerate keeps FSDP only on accelerators (GPU, XPU, NPU, ...), not for processes on CPUs. Run on "
            "GPUs, or drop --fsdp to train with DDP")
    if asked == "deepspeed" and not getattr(trainer, "is_deepspeed_enabled", False):
        why = ("processes on CPUs train together through accelerate's CPU mode, which leaves DeepSpeed out; run on "
               "GPUs" if trainer.args.device.type == "cpu" else "is the launch distributed, and deepspeed installed?")
        raise QAConfigError(f"--deepspeed was given, but this run would train with {engine}: accelerate did not "
                            f"take the DeepSpeed config ({why})")
    if asked == "deepspeed" and not trainer.args.do_train and trainer.accelerator.state.deepspeed_plugin.zero_stage < 3:
        raise QAConfigError(
            f"--deepspeed {trainer.args.deepspeed}: evaluating or predicting without training needs ZeRO stage 3, "
            "which shards the weights (configs/ds_zero3.json); ZeRO-2 shards only the optimizer state and "
            "gradients, which evaluation has none of. Use a stage-3 config, or drop --deepspeed to evaluate with DDP")
    levers = memory_levers(trainer)
    logger.info("Engine: %s%s", engine, f"; memory: {', '.join(levers)}" if levers else "")
    return engine


def memory_levers(trainer: Any) -> list[str]:
    """The memory-saving settings in force besides sharding, so a log shows what a run's peak memory came from."""
    args, levers = trainer.args, []
    dtype = next(trainer.model.parameters()).dtype
    if dtype != torch.float32:
        levers.append(f"weights in {str(dtype).removeprefix('torch.')}")
    if args.bf16 or args.fp16:
        levers.append(f"{'bf16' if args.bf16 else 'fp16'} mixed precision")
    if args.gradient_checkpointing and args.do_train:
        levers.append("gradient checkpointing")
    return levers
