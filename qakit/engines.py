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
        stage = trainer.accelerator.state.deepspeed_plugin.zero_stage
        return f"DeepSpeed ZeRO-{stage} over {args.world_size} process(es)"
    if getattr(trainer, "is_fsdp_enabled", False):
        plugin = trainer.accelerator.state.fsdp_plugin
        version = getattr(plugin, "fsdp_version", 1)
        strategy = getattr(plugin, "reshard_after_forward", None) if version == 2 else plugin.sharding_strategy
        wrap = getattr(plugin, "transformer_cls_names_to_wrap", None) or "the model's _no_split_modules"
        return f"FSDP{version} ({strategy}, wrapping {wrap}) over {args.world_size} processes"
    if args.world_size > 1:
        backend = getattr(trainer.accelerator.state, "backend", None) or "?"
        return f"DDP over {args.world_size} processes ({backend})"
    return f"one process on {args.device}"


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
    logger.info("Engine: %s", engine)
    return engine
