"""LoRA adapters (peft): low-rank matrices trained beside frozen weights, the answer head trained in full.

Gradients and optimizer states then exist only for the adapters and the head, so a 7B model's training state
fits one GPU. The adapter is saved in peft's layout (adapter_config.json naming the base model, and
adapter_model.safetensors with the head), and every command that takes a model folder takes an adapter folder:
`read_adapter` names its base.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from qakit.errors import QAConfigError
from qakit.heads import head_modules
from qakit.outputs import ADAPTER_CONFIG, MERGED

logger = logging.getLogger("qa")



def linear_targets(model: torch.nn.Module) -> list[str]:
    """The names of the base model's own linear layers (Conv1D in the GPT-2 family): LoRA on all of them, as
    QLoRA recommends, rather than peft's per-family table of attention projections."""
    from transformers.pytorch_utils import Conv1D

    head = head_modules(model)
    output = model.get_output_embeddings()  # a seq2seq LM's head, tied to the input embeddings: not adapted
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, (torch.nn.Linear, Conv1D)) and name.split(".")[0] not in head
             and module is not output}
    if not names:
        raise QAConfigError(f"{type(model).__name__} has no linear layers for LoRA; pass --lora_target_modules")
    return sorted(names)


def check_adapter_flags(model_args: Any, training_args: Any, adapter_folder: bool) -> None:
    """Combinations that cannot work, said before anything runs."""
    if model_args.lora_r and adapter_folder:
        raise QAConfigError(f"--model_name_or_path {model_args.model_name_or_path} is an adapter folder: drop --lora_r "
                            "to go on training its adapter, or start from its base model for new ones")
    quantized = model_args.load_in_4bit or model_args.load_in_8bit
    sharded = bool(training_args.deepspeed or training_args.fsdp)
    if model_args.lora_r and not training_args.do_train:
        raise QAConfigError("--lora_r adds adapters to train: it needs --do_train (an adapter folder given as "
                            "--model_name_or_path answers with its adapter)")
    if quantized and training_args.do_train and not (model_args.lora_r or adapter_folder):
        raise QAConfigError("--load_in_4bit/--load_in_8bit weights cannot be trained: add --lora_r (QLoRA)")
    if model_args.merge_lora and not (model_args.lora_r or adapter_folder):
        raise QAConfigError("--merge_lora folds LoRA adapters into the weights: it needs --lora_r (or an adapter "
                            "folder as --model_name_or_path)")
    if model_args.merge_lora and (quantized or sharded):
        why = "the weights are quantized" if quantized else "the weights are sharded over the processes"
        raise QAConfigError(f"--merge_lora: {why}, so the merge would not give a standalone model; merge afterwards "
                            "in one process from the adapter folder: python qa.py --model_name_or_path OUTPUT_DIR "
                            "--merge_lora --do_eval ... (the base loads in full precision there)")


def add_adapters(model: torch.nn.Module, model_args: Any, training_args: Any, generative: bool) -> torch.nn.Module:
    """The model with LoRA adapters in its linear layers (the encoder's and decoder's, for a seq2seq model) and
    its answer head trained in full; the log names the layers and the trainable share."""
    from peft import LoraConfig, get_peft_model

    targets = model_args.lora_target_modules or linear_targets(model)
    head = head_modules(model)
    config = LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha or 2 * model_args.lora_r,
                        lora_dropout=model_args.lora_dropout, target_modules=targets, modules_to_save=head or None,
                        task_type="SEQ_2_SEQ_LM" if generative else None)  # a seq2seq PeftModel can generate
    if getattr(model, "is_quantized", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, training_args.gradient_checkpointing)
    elif training_args.gradient_checkpointing:
        model.enable_input_require_grads()  # the frozen embeddings' output must carry gradients to the adapters
    if training_args.gradient_checkpointing and training_args.gradient_checkpointing_kwargs is None:
        # reentrant checkpointing (transformers 4.x's default) under DDP marks adapter gradients ready twice
        training_args.gradient_checkpointing_kwargs = {"use_reentrant": False}
    model = get_peft_model(model, config)
    trainable, total = model.get_nb_trainable_parameters()  # peft's count: whole sizes of 4-bit and ZeRO-3 slices
    logger.info("LoRA r=%d, alpha=%d, dropout=%g on %s; the answer head (%s) trained in full: %s of %s "
                "parameters trainable (%.2f%%)", config.r, config.lora_alpha, config.lora_dropout, ", ".join(targets),
                ", ".join(head) or "none: the adapters answer", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model


def quantization(model_args: Any) -> dict[str, Any]:
    """from_pretrained's arguments for --load_in_4bit/--load_in_8bit (QLoRA: NF4 weights, bf16 compute), or a
    one-line refusal naming what the machine lacks."""
    bits = 4 if model_args.load_in_4bit else 8 if model_args.load_in_8bit else None
    if bits is None:
        return {}
    flag = f"--load_in_{bits}bit"
    if model_args.load_in_4bit and model_args.load_in_8bit:
        raise QAConfigError("--load_in_4bit and --load_in_8bit: choose one")
    if not torch.cuda.is_available():
        raise QAConfigError(f"{flag} needs a CUDA GPU (bitsandbytes quantizes on the GPU) and this machine has none: "
                            "drop it (LoRA alone trains with the weights in --torch_dtype bfloat16)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise QAConfigError(f"{flag} needs the bitsandbytes package: pip install bitsandbytes") from err
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=bits == 4, load_in_8bit=bits == 8,
                                                      bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                                      bnb_4bit_compute_dtype=torch.bfloat16)}


def read_adapter(folder: str) -> dict[str, Any] | None:
    """An adapter folder's adapter_config.json (None: not an adapter folder); a base model that cannot be found
    is one line naming base_model_name_or_path."""
    path = Path(folder) / ADAPTER_CONFIG
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        base = config["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise QAConfigError(f"{path} is damaged ({err}): copy the adapter folder again") from err
    if not isinstance(base, str) or not base:
        raise QAConfigError(f"{path} names no base_model_name_or_path: write the base model's folder or hub id there")
    looks_local = base.startswith(("/", ".", "~")) or Path(base).expanduser().exists()
    if looks_local and not (Path(base).expanduser() / "config.json").is_file():
        raise QAConfigError(f"the adapter in {folder} was trained on {base} (base_model_name_or_path in {path}), "
                            "which is not here: copy the base model there, or edit base_model_name_or_path to "
                            "where it is")
    return config


def with_adapters(model: torch.nn.Module, model_args: Any, training_args: Any, generative: bool) -> torch.nn.Module:
    """The model as it trains or answers: with the adapter of an adapter folder, with new adapters for --lora_r,
    or as it is."""
    from peft import PeftModel

    adapter_folder = read_adapter(model_args.model_name_or_path) is not None
    check_adapter_flags(model_args, training_args, adapter_folder)
    if not adapter_folder:
        return add_adapters(model, model_args, training_args, generative) if model_args.lora_r else model
    logger.info("Adapter from %s on its base model", model_args.model_name_or_path)
    return PeftModel.from_pretrained(model, model_args.model_name_or_path, is_trainable=training_args.do_train)


def merge_adapters(trainer: Any) -> None:
    """--merge_lora: the adapters folded into the weights, saved as a standalone model in OUTPUT_DIR/merged."""
    out = Path(trainer.args.output_dir) / MERGED
    merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    if trainer.args.should_save:
        merged.save_pretrained(out)
        trainer.processing_class.save_pretrained(out)
        logger.info("Merged model (the adapters folded into the weights) written to %s", out)
