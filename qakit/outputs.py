"""A run's files in --output_dir are one run's set, and a recorded threshold belongs to one set of weights.

Before a run writes, the earlier files it would replace are removed: otherwise a folder shows one run's
predictions beside another run's scores, null odds, threshold or pictures (HF's Trainer even merges them in
all_results.json). A training run replaces the model, so everything that described the old one goes; a run
that only evaluates or predicts replaces its own splits' files and keeps the model folder's calibrated
threshold and card (`--update_model_folder` replaces them).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from qakit.errors import QAConfigError
from qakit.files import write_json

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"  # a LoRA adapter's (peft)
MERGED = "merged"  # OUTPUT_DIR/merged: the standalone model --merge_lora writes
THRESHOLD_FILE = "null_threshold.json"  # the null threshold an evaluation calibrated, kept with the model
ALL_RESULTS = "all_results.json"
# per split prefix (train, eval, predict): the predictions, metrics and pictures the run writes for it
SPLIT_FILES = ("predictions.json", "nbest_predictions.json", "null_odds.json", "span_predictions.json",
               "results.json", "f1_vs_threshold.png", "pr_exact.png", "pr_f1.png", "pr_oracle.png")
# what describes the trained model: replaced whenever a run trains
MODEL_FILES = (THRESHOLD_FILE, "best_checkpoint.json", "training_loss.png", "training_eval.png")
WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin", "adapter_model.safetensors", "adapter_model.bin",
                   "model*.onnx", "model*.onnx.data")  # the last two: an ONNX export's (qakit/onnx.py)


def clear_earlier_outputs(training_args: Any, asking: bool, saves_adapter: bool = False,
                          model_dir: str | None = None) -> None:
    """Remove the earlier run's files this run replaces (from the process that writes them), and their keys in
    all_results.json. Asked questions are printed, never written.

    A training run also removes an earlier model saved in the other layout (a LoRA adapter where it saves a whole
    model, or the reverse: the loader would take the stale one), unless that is the model it starts from
    (`model_dir`), and an earlier `merged/` model. A folder that is
    not a model folder holds no calibrated threshold of its own: a threshold there is an earlier evaluation's
    output and goes with its split."""
    out = Path(training_args.output_dir)
    if asking or not training_args.should_save or not out.is_dir():
        return
    model_replaced = training_args.do_train  # then every split's files described the old model
    wanted = {"train": model_replaced, "eval": training_args.do_eval, "predict": training_args.do_predict}
    splits = [split for split, yes in wanted.items() if yes or model_replaced] + ["run"]
    names = sorted({p.name for split in splits for name in SPLIT_FILES  # the split's own, and each set's
                    for p in [*out.glob(f"{split}_{name}"), *out.glob(f"{split}_*_{name}")]})
    if model_replaced:
        starts_here = model_dir is not None and Path(model_dir).resolve() == out.resolve()
        names += [*MODEL_FILES, *([] if starts_here else [p.name for p in _other_layout(out, saves_adapter)])]
        if (out / MERGED).is_dir():
            shutil.rmtree(out / MERGED)
            names.append(f"{MERGED}/")
    elif "eval" in splits and not is_model_folder(out):
        names.append(THRESHOLD_FILE)
    removed = [name for name in names if (out / name).is_file() or name.endswith("/")]
    for name in removed:
        (out / name).unlink(missing_ok=True)
    if _drop_results(out / ALL_RESULTS, splits, everything=model_replaced):
        removed.append(ALL_RESULTS)
    if removed:
        logger.info("Removed the earlier run's %s from %s: this run writes them anew", ", ".join(removed), out)


def _drop_results(path: Path, splits: list[str], everything: bool) -> bool:
    """all_results.json without the keys of the splits this run writes (all of them when it trains)."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        results = None  # damaged: nothing in it can be trusted
    prefixes = tuple(f"{split}_" for split in splits)
    if everything or not isinstance(results, dict):
        path.unlink()
        return True
    kept = {key: value for key, value in results.items() if not key.startswith(prefixes)}
    if len(kept) == len(results):
        return False
    write_json(str(path), kept, indent=4, sort_keys=True)
    return True


def weights_fingerprint(folder: str | Path) -> str | None:
    """SHA-256 over the names and bytes of a model folder's weight files (None: a folder without weights,
    or a hub id). Every byte is read: a fine-tune that changes only the answer head changes few of them. A run
    asks more than once (reading its threshold, recording one): files unchanged since are not read again."""
    files = weight_files(folder)
    if not files:
        return None
    stats = [f.stat() for f in files]
    return _fingerprint(tuple((f.name, str(f.resolve()), s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
                              for f, s in zip(files, stats)))


@functools.lru_cache(maxsize=8)
def _fingerprint(files: tuple[tuple[str, str, int, int, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, path, *_ in files:
        digest.update(name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def _other_layout(out: Path, saves_adapter: bool) -> list[Path]:
    """The weight files (and adapter config) of the layout this run does not save."""
    adapter = [out / ADAPTER_CONFIG, *out.glob("adapter_model.*")]
    whole = [*out.glob("model*.safetensors"), *out.glob("model.safetensors.index.json"),
             *out.glob("pytorch_model*.bin")]
    return [p for p in (whole if saves_adapter else adapter) if p.is_file()]


def weight_files(folder: str | Path) -> list[Path]:
    path = Path(folder)
    return sorted({f for pattern in WEIGHT_PATTERNS for f in path.glob(pattern) if f.is_file()}) \
        if path.is_dir() else []


def is_model_folder(folder: str | Path) -> bool:
    """A saved model (config and weights, or a LoRA adapter), whose threshold and card are its own, not a run's
    outputs."""
    config = (Path(folder) / "config.json").is_file() or (Path(folder) / ADAPTER_CONFIG).is_file()
    return config and bool(weight_files(folder))


def recorded_threshold(model_dir: str) -> float:
    """The null threshold the model folder records for the weights it holds now, else 0.0 (HF's default): one
    calibrated on other weights would move the no-answer decision to the wrong place."""
    recorded = Path(model_dir) / THRESHOLD_FILE
    if not recorded.is_file():
        return 0.0
    try:
        record = json.loads(recorded.read_text(encoding="utf-8"))
        value, weights = float(record["null_score_diff_threshold"]), record.get("weights_sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise QAConfigError(f"{recorded} is damaged ({err}): delete it or pass --null_score_diff_threshold") from err
    if not math.isfinite(value):
        raise QAConfigError(f"{recorded} records the null threshold {value}, not a finite number: delete the "
                            "file (an evaluation writes it anew) or pass --null_score_diff_threshold")
    if weights is not None and weights != weights_fingerprint(model_dir):
        logger.warning("Not using the null threshold %s in %s: it was calibrated on other weights than the ones "
                       "in %s now; using 0.0 (an evaluation into that folder calibrates it anew, or pass "
                       "--null_score_diff_threshold)", value, recorded, model_dir)
        return 0.0
    logger.info("Null threshold %s, as recorded in %s (pass --null_score_diff_threshold to override)", value, recorded)
    return value


def carry_threshold(source: str | Path, target: str | Path) -> None:
    """The threshold `source` recorded for its weights, recorded again for `target`'s weights (the same model in
    another form, e.g. exported to ONNX), so that a later run uses it there; a stale record is not carried."""
    path = Path(source) / THRESHOLD_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(record, dict) or record.get("weights_sha256") not in (None, weights_fingerprint(source)):
        logger.warning("Not carrying %s: it was calibrated on other weights than those in %s", path, source)
        return
    write_json(Path(target) / THRESHOLD_FILE, record | {"weights_sha256": weights_fingerprint(target)})
