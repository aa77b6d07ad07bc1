"""The official v2 scorer's pictures (evaluate-v2.0.py's --out-image-dir): precision-recall curves and no-answer
histograms, drawn with matplotlib on an Agg canvas of their own (pyplot would switch the process-wide backend).

matplotlib is optional: this module imports without it, and drawing without it raises MatplotlibMissing (an
ImportError whose message says `pip install matplotlib`). `qakit/plots.py` draws a run's pictures with the
same primitives.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INSTALL_HINT = "pictures need matplotlib, which is not installed: pip install matplotlib"
PR_TITLES = {  # the official evaluate-v2.0.py's titles
    "pr_exact": "Precision-Recall curve for Exact Match score",
    "pr_f1": "Precision-Recall curve for F1 score",
    "pr_oracle": "Oracle Precision-Recall curve (binary task of HasAns vs. NoAns)",
}


class MatplotlibMissing(ImportError):
    """Raised by the drawing functions so a caller can skip the pictures, never the run."""


def new_figure(width: float = 6.4, height: float = 4.8) -> Figure:
    """A figure on its own Agg canvas."""
    try:
        import matplotlib  # noqa: F401  first: a cached matplotlib.figure must not hide a missing matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise MatplotlibMissing(INSTALL_HINT) from error
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def matplotlib_missing() -> str | None:
    """The install hint when pictures cannot be drawn here, else None."""
    try:
        new_figure()
    except MatplotlibMissing as error:
        return str(error)
    return None


def save_png(figure: Figure, path: str | Path) -> Path:
    """Write whole or not at all (a temporary file renamed over the name), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            figure.savefig(f, format="png")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def draw_precision_recall(path: str | Path, curve: Any, title: str) -> Path:
    """The official step curve of precision against recall (a compute_score.PrecisionRecall), its average
    precision in the title."""
    figure = new_figure()
    ax = figure.add_subplot()
    ax.step(curve.recalls, curve.precisions, color="b", alpha=0.2, where="post")
    ax.fill_between(curve.recalls, curve.precisions, step="post", alpha=0.2, color="b")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0.0, 1.05), ylim=(0.0, 1.05))
    ax.set_title(f"{title}\naverage precision {100.0 * curve.average_precision:.2f}", fontsize=10)
    return save_png(figure, path)


def draw_pr_images(image_dir: str | Path, curves: Mapping[str, Any], prefix: str = "") -> list[Path]:
    """pr_exact.png, pr_f1.png, pr_oracle.png (each name after `prefix`) from precision_recall_analysis."""
    return [draw_precision_recall(Path(image_dir) / f"{prefix}{name}.png", curve, PR_TITLES.get(name, name))
            for name, curve in curves.items()]


def _histogram_range(values: Sequence[float]) -> tuple[float, float]:
    """(0, 1) for probabilities, as the official script; the data's own span for null odds, which are not."""
    low, high = min(values), max(values)
    if 0.0 <= low and high <= 1.0:
        return 0.0, 1.0
    return (low - 0.5, high + 0.5) if low == high else (low, high)


def draw_na_prob_histograms(image_dir: str | Path, na_probs: Mapping[str, float],
                            has_answer: Mapping[str, bool]) -> list[Path]:
    """na_prob_hist_hasAns.png and na_prob_hist_noAns.png: share of each group per no-answer value, 20 bins,
    one range for both so they compare; a group without questions gets no picture (as the official)."""
    value_range = _histogram_range(list(na_probs.values())) if na_probs else (0.0, 1.0)
    written = []
    for name, answerable in (("hasAns", True), ("noAns", False)):
        values = [na_probs[qid] for qid in na_probs if has_answer[qid] is answerable]
        if not values:
            continue
        figure = new_figure()
        ax = figure.add_subplot()
        ax.hist(values, weights=[1.0 / len(values)] * len(values), bins=20, range=value_range)
        ax.set(xlabel="Model probability of no-answer (--na-prob-file value)", ylabel="Proportion of dataset",
               title=f"Histogram of no-answer probability: {name}")
        written.append(save_png(figure, Path(image_dir) / f"na_prob_hist_{name}.png"))
    return written
