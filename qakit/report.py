"""The run report: where the time and memory of a run went, and one readable table of what it scored.

The figures are kept in `all_results.json` too (`run_*` keys); the table is drawn from the same numbers.
"""

from __future__ import annotations

import re
import resource
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch

PHASES = ("load", "windows", "train", "evaluate", "predict", "write")


class Phases:
    """Wall time per phase of the run; a phase may be entered several times (windows for each split)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.started = time.perf_counter()

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def move(self, source: str, target: str, seconds: float) -> None:
        """Count part of one phase as another (the files written during an evaluation are `write`)."""
        seconds = min(seconds, self.seconds[source])
        self.seconds[source] -= seconds
        self.seconds[target] += seconds

    def figures(self) -> dict[str, float]:
        out = {f"run_{name}_runtime": round(s, 3) for name, s in self.seconds.items()}
        out["run_total_runtime"] = round(time.perf_counter() - self.started, 3)
        return out | peak_memory()


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process, and the accelerator's peak allocation when there is one."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"run_peak_rss_mib": round(kib / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["run_peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def training_footprint(trainer: Any) -> dict[str, float]:
    """What the run trained and what its optimizer holds (this process's share, under a sharding engine): the
    figures LoRA changes."""
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    state = getattr(trainer.optimizer, "state", {}) or {}
    state_bytes = sum(t.numel() * t.element_size() for entry in state.values() for t in entry.values()
                      if torch.is_tensor(t))
    return {"train_trainable_parameters": sum(getattr(p, "ds_numel", p.numel()) for p in params),
            "train_optimizer_state_mib": round(state_bytes / 2**20, 3)}


def _scores(r: dict, prefix: str) -> list[tuple[str, str]]:
    rows = []
    if f"{prefix}_f1" in r:
        exact = r.get(f"{prefix}_exact", r.get(f"{prefix}_exact_match"))  # v2 and v1.1 name it differently
        rows.append(("exact / F1", f"{exact:.2f} / {r[f'{prefix}_f1']:.2f}"))
    for part in ("HasAns", "NoAns"):
        if f"{prefix}_{part}_f1" in r:
            rows.append((f"{part} exact / F1 ({r[f'{prefix}_{part}_total']} questions)",
                         f"{r[f'{prefix}_{part}_exact']:.2f} / {r[f'{prefix}_{part}_f1']:.2f}"))
    if f"{prefix}_null_threshold" in r:
        rows.append(("null threshold used", f"{r[f'{prefix}_null_threshold']:.4f}"))
    if f"{prefix}_best_threshold" in r:
        rows.append(("best null threshold", f"{r[f'{prefix}_best_threshold']:.4f} (F1 {r[f'{prefix}_best_f1']:.2f}, "
                                            f"exact {r[f'{prefix}_best_exact']:.2f})"))
    if f"{prefix}_examples_per_second" in r:
        rows.append(("speed, whole evaluation", f"{r[f'{prefix}_examples_per_second']:.2f} questions/s, "
                                                f"{r[f'{prefix}_windows_per_second']:.2f} windows/s "
                                                f"({r[f'{prefix}_examples']} questions, {r[f'{prefix}_windows']} windows)"))
    return rows


def render(results: dict) -> str:
    """The table printed at the end of a run, from the run's results (as saved in all_results.json)."""
    rows: list[tuple[str, str]] = []
    if "train_loss" in results:
        rows.append(("train: loss, samples/s", f"{results['train_loss']:.4f}, "
                                               f"{results.get('train_samples_per_second', 0):.2f}"))
    sets = sorted(key.removesuffix("_examples") for key in results if re.fullmatch(r"eval_.+_examples", key))
    sections = [(prefix, f"evaluation: {prefix.removeprefix('eval_')}") for prefix in sets]
    if sets:
        sections.append(("eval", f"evaluation: macro average over {len(sets)} sets"))
    for prefix, title in (sections or [("eval", "evaluation")]) + [("predict", "prediction")]:
        scored = _scores(results, prefix)
        if scored:
            rows.append((f"[{title}]", ""))
            rows += scored
    rows.append(("[run]", ""))
    phases = " · ".join(f"{name} {results[f'run_{name}_runtime']:.1f}" for name in PHASES
                        if results.get(f"run_{name}_runtime"))
    rows.append(("wall time (s)", f"{phases} · total {results['run_total_runtime']:.1f}"))
    memory = f"{results['run_peak_rss_mib']:,.0f} MiB resident"
    if "run_peak_gpu_mib" in results:
        memory += f", {results['run_peak_gpu_mib']:,.0f} MiB on the GPU"
    rows.append(("peak memory", memory))
    width = max(len(label) for label, _ in rows)
    lines = ["Run report"] + [f"  {label:<{width}}  {value}".rstrip() for label, value in rows]
    return "\n".join(lines)


def report_split(trainer: Any, split: str, metrics: dict[str, float]) -> dict[str, float]:
    """Print a split's metrics and keep them in `<split>_results.json` and `all_results.json`."""
    trainer.log_metrics(split, metrics)
    trainer.save_metrics(split, metrics)
    return metrics


def finish(trainer: Any, phases: Phases, results: dict[str, float]) -> dict[str, float]:
    """The run's own figures (time per phase, peak memory) into all_results.json, and the report table."""
    figures = phases.figures()
    trainer.save_metrics("run", figures)
    if trainer.is_world_process_zero():
        print(render(results | figures), flush=True)
    return figures
