"""Checkpoints a run can resume from, and what a resumed run reports.

Trainer writes checkpoint-N in place, file by file, with trainer_state.json last: a run killed or out of
disk mid-write leaves a folder that `get_last_checkpoint` still picks and every resume then fails on.
Here a checkpoint counts only when every file a resume reads is whole.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import transformers
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from qakit.errors import QAConfigError
from qakit.files import check_output_dir

logger = logging.getLogger(__name__)
TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5


def whole_run_train_loss(log_history: list[dict], resumed_at: int, global_step: int, session_loss: float) -> float:
    """Mean training loss over the whole run, not only over the steps since the last resume.

    Up to the resume step it comes from log_history (each `loss` is the mean over the steps since the previous log);
    after it, from the Trainer's own train_loss for this session, whose loss sum Trainer 5.x divides by the session's
    steps and 4.x by global_step. Exact when the checkpoint step was a logging step (--logging_steps divides
    --save_steps; 4.x rounds logged losses to 4 decimals); otherwise the steps between the last log and the
    checkpoint, whose losses were never recorded, are left out of the mean.
    """
    session_steps = global_step - resumed_at
    session_sum = session_loss * (session_steps if TRANSFORMERS_5 else global_step)
    total, covered = 0.0, 0
    for entry in log_history:
        if "loss" in entry and covered < entry["step"] <= resumed_at:
            total += entry["loss"] * (entry["step"] - covered)
            covered = entry["step"]
    return (total + session_sum) / max(covered + session_steps, 1)


_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def is_complete(checkpoint: str | os.PathLike, with_optimizer: bool = True) -> bool:
    """Whether Trainer finished writing this checkpoint folder.

    Trainer (5.24 `_save_checkpoint`) writes straight into checkpoint-N, with no temporary folder, rename or fsync:
    config.json, the weights, the tokenizer files, training_args.bin, then the optimizer and scheduler, [scaler.pt],
    rng_state.pth (rng_state_<rank>.pth per process when distributed, with no barrier before the next file), and
    trainer_state.json last. So the state must parse and name step N, and every file a resume reads must be there
    and whole, in whichever layout the engine wrote (see `_Folder`).
    """
    path = Path(checkpoint)
    match = _CHECKPOINT.match(path.name)
    if match is None or not path.is_dir():
        return False
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or state.get("global_step") != int(match.group(1)) or \
            not isinstance(state.get("log_history"), list):
        return False
    folder = _Folder(path)
    # one RNG file per process that saved; a rerun may use another number of processes
    rng = [p.name for p in path.glob("rng_state*.pth")] or ["rng_state.pth"]
    deepspeed = folder.deepspeed_state(processes=len(rng))
    fsdp_shards = folder.sharded("pytorch_model_fsdp_0")  # a model Trainer saves without config or arguments
    weights = folder.weights() or fsdp_shards or deepspeed
    needed = [] if fsdp_shards else ["training_args.bin"]
    optimizer = True
    if with_optimizer:  # not with --save_only_model
        needed += rng if deepspeed else ["scheduler.pt", *rng]  # DeepSpeed keeps its scheduler in its own state
        optimizer = (deepspeed or folder.torch_file("optimizer.pt") or folder.torch_file("optimizer.bin")
                     or folder.sharded("optimizer_0"))
    adapter = folder.nonempty("adapter_config.json")  # a LoRA run's checkpoint: the adapter, no config.json
    return (weights and optimizer and (fsdp_shards or adapter or folder.model_config())
            and all(map(folder.torch_file, needed))
            and all(folder.loads(name) for name in needed if name != "training_args.bin"))  # the resume reads these


class _Folder:
    """Whole-file checks for one checkpoint folder. torch files are zip archives whose directory is written
    last; safetensors headers give the data's length; the sharded layouts are checked by what they write last:
    torch.distributed.checkpoint (FSDP's SHARDED_STATE_DICT: `pytorch_model_fsdp_0/`, `optimizer_0/`) writes
    `.metadata`, listing every byte range of every process's shard, after all shards; DeepSpeed writes
    `global_step<N>/` (model and per-process optimizer states) and then `latest`, naming that folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def nonempty(self, name: str) -> bool:
        return (self.path / name).is_file() and (self.path / name).stat().st_size > 0

    def torch_file(self, name: str) -> bool:
        """A whole torch archive: its directory is there (written last) and every member's checksum holds, so a
        file damaged inside, not only cut short, is caught."""
        if not (self.nonempty(name) and zipfile.is_zipfile(self.path / name)):
            return False
        try:
            with zipfile.ZipFile(self.path / name) as archive:
                return archive.testzip() is None
        except (OSError, zipfile.BadZipFile, EOFError):
            return False

    def loads(self, name: str) -> bool:
        """The small state files a resume reads (training arguments, scheduler, RNG states) load."""
        import torch

        try:
            torch.load(self.path / name, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001  any failure to unpickle means the resume would fail on it
            return False
        return True

    def model_config(self) -> bool:
        """config.json names a model type (a valid JSON file of other content would fail the resume)."""
        try:
            config = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(config, dict) and isinstance(config.get("model_type"), str)

    def safetensors_file(self, name: str) -> bool:
        try:
            with open(self.path / name, "rb") as f:
                size = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(size))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            return (self.path / name).stat().st_size >= 8 + size + end
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return False

    def weights(self) -> bool:
        if not self.nonempty("model.safetensors.index.json"):  # a LoRA run's checkpoint holds its adapter
            return any(self.safetensors_file(f"{name}.safetensors") for name in ("model", "adapter_model")) or \
                any(map(self.torch_file, ("pytorch_model.bin", "adapter_model.bin")))
        try:
            index = json.loads((self.path / "model.safetensors.index.json").read_text(encoding="utf-8"))
            return all(self.safetensors_file(shard) for shard in set(index["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError):
            return False

    def sharded(self, name: str) -> bool:
        """A torch.distributed.checkpoint folder with every byte its metadata lists."""
        from torch.distributed.checkpoint import FileSystemReader

        folder = self.path / name
        if not (folder / ".metadata").is_file():
            return False
        try:
            storage = FileSystemReader(str(folder)).read_metadata().storage_data
            ends: dict[str, int] = {}
            for info in storage.values():
                ends[info.relative_path] = max(ends.get(info.relative_path, 0), info.offset + info.length)
        except (OSError, EOFError, ValueError, AttributeError, TypeError, pickle.UnpicklingError):
            return False
        return bool(ends) and all((folder / f).is_file() and (folder / f).stat().st_size >= end
                                  for f, end in ends.items())

    def deepspeed_state(self, processes: int) -> bool:
        """DeepSpeed's own checkpoint, whole: `latest` names a folder whose torch files are all whole, with an
        optimizer state per process that saved."""
        try:
            tag = (self.path / "latest").read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return False
        folder = self.path / tag
        if not tag or os.sep in tag or not folder.is_dir():
            return False
        files = [p for p in folder.iterdir() if p.suffix == ".pt"]
        optimizers = [p for p in files if p.name.endswith("optim_states.pt")]
        return (len(optimizers) == processes and any(p.name.endswith("model_states.pt") for p in files)
                and all(p.stat().st_size > 0 and zipfile.is_zipfile(p) for p in files))


def last_complete_checkpoint(folder: str | os.PathLike, with_optimizer: bool = True) -> str | None:
    """The complete checkpoint-N with the largest N (what get_last_checkpoint should return), or None."""
    steps = sorted(((int(m.group(1)), p) for p in Path(folder).iterdir() if (m := _CHECKPOINT.match(p.name))),
                   reverse=True)
    for _, path in steps:
        if is_complete(path, with_optimizer):
            return str(path)
        logger.warning("Skipping %s: an incomplete or damaged checkpoint (the run stopped while writing it, or a "
                       "file in it does not load); resuming from the one before", path)
    return None


def describe_best(state: Any, metric: str, arguments: list[str] | None) -> dict[str, Any]:
    """What best_checkpoint.json says: which checkpoint won, on what metric, with the evaluation that chose it
    and the arguments of the run."""
    step = int(_CHECKPOINT.match(Path(state.best_model_checkpoint).name).group(1))
    evaluation = next((e for e in state.log_history if e.get("step") == step and any(k.startswith("eval_")
                                                                                      for k in e)), {})
    return {"checkpoint": state.best_model_checkpoint, "step": step,
            "metric": metric if metric.startswith("eval_") else f"eval_{metric}", "value": state.best_metric,
            "evaluation": evaluation, "arguments": list(arguments or [])}


def find_checkpoint(training_args: Any, overwrite: bool) -> str | None:
    """HF's habit: resume from the last checkpoint in output_dir unless told to overwrite.

    Overwriting means a fresh start: the earlier run's checkpoints go (a later plain rerun would resume
    them and replace the new model with the old one), and so do files a killed run left half-written.
    """
    out = Path(training_args.output_dir)
    check_output_dir(out)
    with training_args.main_process_first(desc="output folder"):  # one process per node changes the folder
        remove_leftovers(out)
        if training_args.do_train and overwrite and not training_args.resume_from_checkpoint:
            remove_checkpoints(out)
    complete = {"with_optimizer": not training_args.save_only_model}
    if training_args.resume_from_checkpoint:
        if not is_complete(training_args.resume_from_checkpoint, **complete):
            raise QAConfigError(f"--resume_from_checkpoint {training_args.resume_from_checkpoint} is not a complete "
                                "checkpoint (checkpoint-N with trainer_state.json, weights, optimizer, ...)")
        return training_args.resume_from_checkpoint
    if not training_args.do_train or overwrite or not out.is_dir():
        return None
    last = last_complete_checkpoint(out, **complete)
    if last is not None:
        logger.info("Resuming from %s (pass --overwrite_output_dir to start again)", last)
        return last
    leftovers = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    if leftovers:
        raise QAConfigError(f"output directory {out} is not empty ({', '.join(sorted(leftovers)[:3])} ...) and "
                            "has no checkpoint to resume from: pass --overwrite_output_dir or choose another --output_dir")
    return None


def remove_leftovers(out: Path) -> None:
    """Temporary files of an atomic write that a killed run never renamed (`qakit.files`)."""
    stale = sorted(out.glob(".tmp-*")) if out.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.info("Removed %d unfinished file(s) of an earlier run from %s", len(stale), out)


def remove_checkpoints(out: Path) -> None:
    old = sorted(p for p in out.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.is_dir()) if out.is_dir() else []
    if old:
        logger.warning("--overwrite_output_dir: removing %d checkpoint(s) of the earlier run in %s (%s)", len(old),
                       out, ", ".join(p.name for p in old))
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
