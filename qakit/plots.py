"""Pictures of a run (PNG): the null threshold and precision-recall of a SQuAD v2 evaluation, training curves.

matplotlib is optional: this module imports without it, and drawing without it raises MatplotlibMissing
(an ImportError whose message says `pip install matplotlib`), which `draw_all`/`draw_run` turn into a
skipped entry. Figures are drawn on the Agg canvas without pyplot (`metrics/squad_v2/pictures.py`, which
also draws the official scorer's own pictures), so no global backend is switched and nothing is shown. The
numbers come from our scorer (metrics/squad_v2/compute_score.py).
"""

from __future__ import annotations

import json
import logging
import math
import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metrics.squad_v2 import compute_score, squad_common
from metrics.squad_v2.pictures import INSTALL_HINT, draw_pr_images, matplotlib_missing, new_figure, save_png

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


class PlotInputError(ValueError):
    """A run or data file the pictures need is unreadable or does not match; the message names it."""


@dataclass
class Drawn:
    """What `draw_all` wrote, what it could not draw and why, and caveats about what it drew."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- the null threshold -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdSweep:
    """Exact and F1 (percent) when a question is answered "" because its null odds exceed the threshold.

    The value at thresholds[i] holds until thresholds[i + 1]; below thresholds[0] every question is "".
    The best_* values are the scorer's (official rules: ties in null-odds order, strict improvements only).
    """

    thresholds: list[float]
    exact: list[float]
    f1: list[float]
    all_null_exact: float
    all_null_f1: float
    best_exact: float
    best_exact_thresh: float
    best_f1: float
    best_f1_thresh: float

    def at(self, threshold: float) -> tuple[float, float]:
        """(exact, f1) of predicting with `threshold`, equal to scoring the thresholded predictions."""
        i = bisect_right(self.thresholds, threshold) - 1
        return (self.all_null_exact, self.all_null_f1) if i < 0 else (self.exact[i], self.f1[i])

    def best_f1_reached_at(self) -> float | None:
        """Where the curve reaches best_f1: best_f1_thresh, or None when the best is to answer nothing, for
        which the scorer (as the official one) reports its starting value 0.0, which may answer questions."""
        if self.at(self.best_f1_thresh)[1] == self.best_f1 or self.best_f1 != self.all_null_f1:
            return self.best_f1_thresh
        return None


def threshold_sweep(gold: Mapping[str, list[str]], spans: Mapping[str, str],
                    null_odds: Mapping[str, float], language: str | None = None) -> ThresholdSweep:
    """Every distinct threshold at once: start from all "" and answer questions by rising null odds.

    gold maps id -> answer texts ([] = unanswerable); spans are the best non-empty answers. The running
    sums are those of the scorer's best-threshold search, so the curve's best point is its best_f1 to the
    last digit. Raises the scorer's ScoreInputError (a ValueError) on a missing id or a non-finite value.
    """
    summary = compute_score.score_v2(dict(gold), dict(spans), dict(null_odds), language=language)
    exact, f1 = compute_score.raw_scores(gold, spans, language=language)
    has_answer = {qid: bool(answers) for qid, answers in gold.items()}
    total = len(gold)
    current_exact = current_f1 = start = sum(1 for answerable in has_answer.values() if not answerable)
    ranked = [qid for qid in sorted(null_odds, key=lambda key: null_odds[key]) if qid in gold]
    thresholds, exact_curve, f1_curve = [], [], []
    for rank, qid in enumerate(ranked, start=1):
        if has_answer[qid]:
            current_exact += exact[qid]
            current_f1 += f1[qid]
        elif spans[qid]:
            current_exact -= 1
            current_f1 -= 1
        if rank == len(ranked) or null_odds[ranked[rank]] != null_odds[qid]:
            thresholds.append(null_odds[qid])
            exact_curve.append(100.0 * current_exact / total)
            f1_curve.append(100.0 * current_f1 / total)
    return ThresholdSweep(thresholds, exact_curve, f1_curve, 100.0 * start / total, 100.0 * start / total,
                          summary["best_exact"], summary["best_exact_thresh"], summary["best_f1"],
                          summary["best_f1_thresh"])


def draw_threshold_sweep(path: str | Path, sweep: ThresholdSweep, used: float | None = None,
                         title: str = "Exact and F1 against the null threshold") -> Path:
    """Both curves as steps over the real null odds, the threshold used and the best F1 one marked."""
    figure = new_figure(7.2, 4.8)
    ax = figure.add_subplot()
    best = sweep.best_f1_reached_at()
    marks = ([] if best is None else [best]) + ([used] if used is not None else [])
    low, high = min(sweep.thresholds + marks), max(sweep.thresholds + marks)
    margin = 0.05 * (high - low) or 0.5
    xs = [low - margin] + sweep.thresholds + [high + margin]
    for values, start, label, color in ((sweep.f1, sweep.all_null_f1, "F1", "tab:blue"),
                                        (sweep.exact, sweep.all_null_exact, "exact", "tab:orange")):
        ax.step(xs, [start] + values + values[-1:], where="post", label=label, color=color)
    if best is None:  # on the all-"" step, left of every null odds
        ax.plot([low - margin / 2], [sweep.best_f1], "o", color="tab:green",
                label=f'best F1 {sweep.best_f1:.2f}: answer nothing (any threshold below {low:.4g})')
    else:
        ax.axvline(best, color="tab:green", linestyle=":")
        ax.plot([best], [sweep.best_f1], "o", color="tab:green", label=f"best F1 {sweep.best_f1:.2f} at {best:.4g}")
    if used is not None:
        used_exact, used_f1 = sweep.at(used)
        ax.axvline(used, color="tab:red", linestyle="--",
                   label=f"used {used:.4g}: F1 {used_f1:.2f}, exact {used_exact:.2f}")
    ax.set(xlabel='null threshold (a question is answered "" when its null odds exceed it)',
           ylabel="score (%)", xlim=(xs[0], xs[-1]), title=title)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return save_png(figure, path)


# --- training curves ----------------------------------------------------------------------------------------


Series = dict[str, tuple[list[float], list[float]]]
_EXACT_KEYS = ("eval_exact", "eval_exact_match")  # v2 scorer, v1.1 scorer


def training_series(log_history: Sequence[Mapping[str, Any]]) -> Series:
    """key -> (steps, values) for every numeric key of the log entries that have a step."""
    series: Series = {}
    for entry in log_history:
        step = entry.get("step")
        if not _is_number(step):
            continue
        for key, value in entry.items():
            if key != "step" and _is_number(value):
                steps, values = series.setdefault(key, ([], []))
                steps.append(step)
                values.append(value)
    return series


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def draw_training_loss(path: str | Path, series: Series) -> Path:
    """Training loss (and evaluation loss when logged) over steps, the learning rate below it."""
    lr = series.get("learning_rate")
    figure = new_figure(6.4, 6.4 if lr else 4.8)
    axes = figure.subplots(2, 1, sharex=True) if lr else [figure.add_subplot()]
    for key, label in (("loss", "training loss"), ("eval_loss", "evaluation loss")):
        if key in series:
            axes[0].plot(*series[key], marker="." if len(series[key][0]) < 50 else None, label=label)
    axes[0].set(ylabel="loss", title="Training loss" + (" and learning rate" if lr else ""))
    axes[0].legend(fontsize=8)
    if lr:
        axes[1].plot(*lr, color="tab:purple")
        axes[1].set(ylabel="learning rate")
        axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    axes[-1].set(xlabel="step")
    for ax in axes:
        ax.grid(alpha=0.3)
    return save_png(figure, path)


def draw_training_eval(path: str | Path, series: Series) -> Path:
    """Evaluation F1 and exact match over steps (a point per evaluation)."""
    figure = new_figure()
    ax = figure.add_subplot()
    for key, label in (("eval_f1", "F1"), *((k, "exact") for k in _EXACT_KEYS), ("eval_best_f1", "best F1")):
        if key in series:
            ax.plot(*series[key], marker="o", label=label)
    ax.set(xlabel="step", ylabel="score (%)", title="Evaluation during training")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_png(figure, path)


# --- a run folder -------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    """A run file, or PlotInputError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise PlotInputError(f"cannot read {path}: {error}") from error
    except json.JSONDecodeError as error:
        raise PlotInputError(f"{path} is not valid JSON (line {error.lineno}: {error.msg}); it may be "
                             "truncated: rerun the evaluation or delete it") from error


def _id_map(path: Path, kind: type | tuple[type, ...], what: str) -> dict[str, Any]:
    """A {question id: value} run file whose values are all `kind`."""
    value = _read_json(path)
    if not isinstance(value, dict) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value.values()):
        raise PlotInputError(f"{path} must map question ids to {what}")
    return value


def _trainer_state(out: Path, drawn: Drawn) -> Path | None:
    """The run's trainer_state.json, else the last checkpoint's (an unfinished run)."""
    if (out / "trainer_state.json").is_file():
        return out / "trainer_state.json"
    checkpoints = sorted((int(m.group(1)), p) for p in out.glob("checkpoint-*")
                         if (m := _CHECKPOINT.fullmatch(p.name)) and (p / "trainer_state.json").is_file())
    if not checkpoints:
        return None
    path = checkpoints[-1][1] / "trainer_state.json"
    drawn.notes.append(f"no trainer_state.json in {out}: training curves from {path}, the last checkpoint")
    return path


def _training_pictures(out: Path, drawn: Drawn) -> None:
    """training_loss.png and training_eval.png from trainer_state.json's log_history."""
    names = "training_loss.png, training_eval.png"
    path = _trainer_state(out, drawn)
    if path is None:
        drawn.skipped.append(f"{names}: no trainer_state.json (not a training run, or it saved no state)")
        return
    state = _read_json(path)
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list) or not all(isinstance(entry, dict) for entry in history):
        raise PlotInputError(f"{path} has no log_history list of entries: it is not a trainer state")
    series = training_series(history)
    if "loss" in series:
        drawn.written.append(draw_training_loss(out / "training_loss.png", series))
    else:
        drawn.skipped.append(f"training_loss.png: {path} logs no training loss (fewer steps than --logging_steps?)")
    if any(key in series for key in ("eval_f1", *_EXACT_KEYS)):
        drawn.written.append(draw_training_eval(out / "training_eval.png", series))
    else:
        drawn.skipped.append(f"training_eval.png: {path} has no evaluation with eval_f1/eval_exact "
                             "(evaluate during training with --eval_strategy steps or epoch)")


def _spans(out: Path, prefix: str, drawn: Drawn) -> dict[str, str] | None:
    """Best non-empty span per id: the span predictions file, else the n-best lists (HF's run_qa.py writes
    no span file), else the thresholded predictions, whose no-answers hide their spans."""
    path = out / f"{prefix}_span_predictions.json"
    if path.is_file():
        return _id_map(path, str, "answer texts")
    nbest_path, predictions_path = out / f"{prefix}_nbest_predictions.json", out / f"{prefix}_predictions.json"
    if nbest_path.is_file():
        nbest = _read_json(nbest_path)
        try:
            return {qid: next((row["text"] for row in rows if row["text"]), "") for qid, rows in nbest.items()}
        except (AttributeError, KeyError, TypeError) as error:
            raise PlotInputError(f"{nbest_path} is not {{id: [{{text, ...}}, ...]}} ({error!r})") from error
    if predictions_path.is_file():
        drawn.notes.append(f"no {path.name}: using {predictions_path.name}, whose no-answers hide their best "
                           "spans, so the curves are exact only up to the threshold used")
        return _id_map(predictions_path, str, "answer texts")
    return None


def infer_threshold(predictions: Mapping[str, str], spans: Mapping[str, str],
                    null_odds: Mapping[str, float]) -> float | None:
    """A threshold that reproduces the predictions (0.0 when it does), None when no threshold does."""
    answered = [null_odds[q] for q, text in predictions.items() if text and q in null_odds]
    withheld = [null_odds[q] for q, text in predictions.items() if not text and spans.get(q) and q in null_odds]
    if any(text and text != spans.get(q) for q, text in predictions.items()):
        return None
    low, high = max(answered, default=-math.inf), min(withheld, default=math.inf)
    if low >= high:
        return None
    if low <= 0.0 < high:
        return 0.0
    return low if answered else math.nextafter(high, -math.inf)


def _threshold_used(out: Path, prefix: str, spans: Mapping[str, str], odds: Mapping[str, float],
                    drawn: Drawn) -> float:
    """The threshold the run predicted with: as qa.py records it in `<prefix>_results.json`, else the one
    that reproduces its predictions file (HF's run_qa.py records none), else HF's default 0.0."""
    results = out / f"{prefix}_results.json"
    recorded = _read_json(results).get(f"{prefix}_null_threshold") if results.is_file() else None
    if _is_number(recorded):
        return float(recorded)
    path = out / f"{prefix}_predictions.json"
    inferred = infer_threshold(_id_map(path, str, "answer texts"), spans, odds) if path.is_file() else None
    if inferred is None:
        drawn.notes.append(f"threshold used taken as 0.0 (HF's default): {path.name} "
                           f"{'does not follow one threshold' if path.is_file() else 'is missing'}")
        return 0.0
    if inferred != 0.0:
        drawn.notes.append(f"threshold used: {inferred:.6g}, the one that reproduces {path.name}")
    return inferred


def _gold_for(gold: Mapping[str, list[str]], odds: Mapping[str, float], source: str) -> dict[str, list[str]]:
    """The gold answers of the questions the run evaluated (a --max_eval_samples run scores a subset)."""
    unknown = [qid for qid in odds if qid not in gold]
    if unknown:
        shown = ", ".join(unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise PlotInputError(f"{len(unknown)} of the {len(odds)} evaluated question ids are not in {source} "
                             f"({shown}): pass the data file the run evaluated")
    return {qid: list(gold[qid]) for qid in odds}


def _null_pictures(out: Path, prefix: str, drawn: Drawn, gold: Mapping[str, list[str]] | None = None,
                   threshold: float | None = None, source: str = "the gold answers given",
                   language: str | None = None) -> None:
    """`<prefix>_f1_vs_threshold.png` and `<prefix>_pr_{exact,f1,oracle}.png` of a SQuAD v2 evaluation."""
    names = f"{prefix}_f1_vs_threshold.png, {prefix}_pr_*.png"
    odds_path = out / f"{prefix}_null_odds.json"
    if not odds_path.is_file():
        drawn.skipped.append(f"{names}: no {odds_path.name} (not a SQuAD v2 run, or no {prefix} split)")
        return
    if gold is None:
        drawn.skipped.append(f"{names}: the gold answers are needed (pass --data_file, the file evaluated)")
        return
    if not gold:
        drawn.skipped.append(f"{names}: {source} has no answers to score against")
        return
    odds = _id_map(odds_path, (int, float), "numbers (null score minus best span score)")
    if not odds:
        drawn.skipped.append(f"{names}: {odds_path.name} is empty (no question evaluated)")
        return
    spans = _spans(out, prefix, drawn)
    if spans is None:
        drawn.skipped.append(f"{names}: no {prefix}_span_predictions.json or {prefix}_predictions.json")
        return
    gold = _gold_for(gold, odds, source)
    try:
        sweep = threshold_sweep(gold, spans, odds, language)
        curves = compute_score.precision_recall_analysis(gold, spans, odds, language=language)
    except squad_common.ScoreInputError as error:
        raise PlotInputError(f"{out}: {error}") from error
    used = _threshold_used(out, prefix, spans, odds, drawn) if threshold is None else float(threshold)
    drawn.written.append(draw_threshold_sweep(out / f"{prefix}_f1_vs_threshold.png", sweep, used,
                                              f"{prefix}: exact and F1 against the null threshold"))
    if curves:
        drawn.written.extend(draw_pr_images(out, curves, prefix=f"{prefix}_"))
    else:
        drawn.skipped.append(f"{prefix}_pr_*.png: no answerable question, so no precision-recall")


def draw_all(output_dir: str | Path, prefix: str = "eval", threshold: float | None = None, *,
             gold: Mapping[str, list[str]] | None = None, source: str = "the gold answers given",
             language: str | None = None, training: bool = True) -> Drawn:
    """Every picture a run folder allows, with what was skipped and why; PlotInputError for a broken file.

    gold: id -> answer texts ([] = unanswerable) of the questions evaluated (`squad_v2.gold_answers` reads a
    data file's; empty: the file has none), named `source` in messages; scored by `language`'s rules (None:
    SQuAD's), as the run scored them.
    """
    out, drawn = Path(output_dir), Drawn()
    hint = matplotlib_missing()
    if hint:
        drawn.skipped.append(f"all pictures: {hint}")
        return drawn
    if training:  # the run's, drawn once however many evaluation sets it has
        _training_pictures(out, drawn)
    _null_pictures(out, prefix, drawn, gold, threshold, source, language)
    return drawn


def draw_run(output_dir: str | Path, prefix: str = "eval", threshold: float | None = None, *,
             gold: Mapping[str, list[str]] | None = None, source: str = "the gold answers given",
             language: str | None = None, training: bool = True) -> list[Path]:
    """`draw_all` for the end of a run: the paths written; what was skipped goes to the log, not an error
    (a warning only for a missing matplotlib: the other skips are what the run did not produce)."""
    drawn = draw_all(output_dir, prefix, threshold, gold=gold, source=source, language=language, training=training)
    for path in drawn.written:
        logger.info("Picture written: %s", path)
    for note in drawn.notes:
        logger.info("Pictures: %s", note)
    for reason in drawn.skipped:
        logger.log(logging.WARNING if INSTALL_HINT in reason else logging.INFO, "Picture skipped: %s", reason)
    return drawn.written


def draw_run_pictures(trainer: Any, eval_sets: list[Any]) -> None:
    """The run's PNGs (README: What you get), each evaluation set's under its prefix. Optional: without
    matplotlib it is one log line, never an error."""
    if not (trainer.args.should_save and trainer.is_world_process_zero()):
        return
    for n, data in enumerate(eval_sets or [None]):
        gold = None
        if data is not None and data.has_answers:
            gold = {qid: list(a["text"]) for qid, a in zip(data.ids, data.examples["answers"])}
        try:
            draw_run(trainer.args.output_dir, prefix=data.prefix if data is not None else "eval", gold=gold,
                     language=data.language if data is not None else None, training=n == 0)
        except (PlotInputError, OSError) as err:
            logger.warning("pictures not drawn: %s", err)
