"""Pictures of a run (qakit/plots.py, plot_run.py, compute_score.py --out-image-dir), with hand-worked numbers.

The run below has four questions; by rising null odds q1 (-2.0), q4 (-1.0), q2 (0.5), q3 (1.0):
- q1 answerable, span exact (EM 1, F1 1); q2 answerable, span "the engineer Mara Olsen" for "Mara Olsen"
  (EM 0, F1 2 * (2/3 * 1) / (2/3 + 1) = 0.8); q3 and q4 unanswerable with non-empty spans.
- Everything "": 2 of 4 right (50/50). Answer q1: 75/75. Then q4 (wrong): 50/50. Then q2: EM 50, F1 2.8/4 = 70.
  Then q3 (wrong): EM 25, F1 1.8/4 = 45. Best: 75 at -2.0; at the default 0.0: 50/50.
- Precision-recall of "has an answer" (2 answerable), points after ranks 1..4:
  EM: tp 1,1,1,1 -> P 1, 1/2, 1/3, 1/4, R 1/2 each -> AP = 1 * 1/2 = 0.5
  F1: tp 1,1,1.8,1.8 -> P 1, 1/2, 0.6, 0.45, R 0.5, 0.5, 0.9, 0.9 -> AP = 0.5 + 0.6 * 0.4 = 0.74
  oracle: tp 1,1,2,2 -> P 1, 1/2, 2/3, 1/2, R 0.5, 0.5, 1, 1 -> AP = 0.5 + 2/3 * 0.5 = 5/6
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

import squad_v2
from helpers import REPO
from metrics.squad_v2 import compute_score, pictures
from qakit import plots

CONTEXT = "The Denver Broncos won in 1904. The engineer Mara Olsen built the lamp, which burned whale oil."
GOLD = {"q1": ["Denver Broncos"], "q2": ["Mara Olsen"], "q3": [], "q4": []}
SPANS = {"q1": "Denver Broncos", "q2": "the engineer Mara Olsen", "q3": "1904", "q4": "whale oil"}
ODDS = {"q1": -2.0, "q2": 0.5, "q3": 1.0, "q4": -1.0}
PNG = b"\x89PNG\r\n\x1a\n"
V2_CLI = REPO / "metrics" / "squad_v2" / "compute_score.py"
needs_matplotlib = pytest.mark.skipif(find_spec("matplotlib") is None, reason="drawing needs matplotlib (optional)")


def squad_json(gold: dict[str, list[str]], context: str = CONTEXT) -> dict:
    """Official layout, one paragraph."""
    qas = [{"id": qid, "question": f"Question {qid}?", "is_impossible": not texts,
            "answers": [{"text": t, "answer_start": context.index(t)} for t in texts]} for qid, texts in gold.items()]
    return {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}


def write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def thresholded(spans: dict[str, str], odds: dict[str, float], threshold: float) -> dict[str, str]:
    return {qid: "" if odds[qid] > threshold else text for qid, text in spans.items()}


def log_history(evals: bool = True) -> dict:
    train = [{"loss": 3.0 - 0.2 * i, "grad_norm": 1.5, "learning_rate": 3e-5 * (1 - i / 8), "epoch": i / 8,
              "step": 5 * (i + 1)} for i in range(8)]
    evaluations = [{"eval_exact": 30.0, "eval_f1": 41.5, "eval_best_f1": 50.0, "epoch": 0.5, "step": 20},
                   {"eval_exact": 45.0, "eval_f1": 55.0, "eval_best_f1": 60.0, "epoch": 1.0, "step": 40}]
    summary = [{"train_runtime": 3.2, "train_loss": 2.3, "epoch": 1.0, "step": 40}]
    return {"global_step": 40, "log_history": train + (evaluations if evals else []) + summary}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A qa.py-like v2 output folder (predicted at the default threshold 0.0) and its data file beside it."""
    out = tmp_path / "out"
    out.mkdir()
    write(tmp_path / "dev.json", squad_json(GOLD))
    write(out / "eval_span_predictions.json", SPANS)
    write(out / "eval_null_odds.json", ODDS)
    write(out / "eval_predictions.json", thresholded(SPANS, ODDS, 0.0))
    write(out / "trainer_state.json", log_history())
    return out


@pytest.fixture
def no_rendering(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Figures are built but not rendered, which is most of the time: the tests of what gets drawn stay fast.
    The paths that would have been written, in order."""
    saved: list[Path] = []

    def save(figure: object, path: str | Path) -> Path:
        saved.append(Path(path))
        return Path(path)

    monkeypatch.setattr(plots, "save_png", save)
    monkeypatch.setattr(pictures, "save_png", save)
    return saved


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def assert_picture(path: Path, size: tuple[int, int] | None = None) -> None:
    width, height = png_size(path)
    assert 300 <= width <= 2000 and 300 <= height <= 2000
    assert size is None or (width, height) == size
    assert path.stat().st_size > 5000, f"{path} is nearly empty"


# --- numbers ------------------------------------------------------------------------------------------------


def test_threshold_sweep_by_hand() -> None:
    sweep = plots.threshold_sweep(GOLD, SPANS, ODDS)
    assert sweep.thresholds == [-2.0, -1.0, 0.5, 1.0]
    assert sweep.exact == [75.0, 50.0, 50.0, 25.0]
    assert sweep.f1 == pytest.approx([75.0, 50.0, 70.0, 45.0])
    assert (sweep.all_null_exact, sweep.all_null_f1) == (50.0, 50.0)
    assert (sweep.best_f1, sweep.best_f1_thresh, sweep.best_exact, sweep.best_exact_thresh) == (75.0, -2.0, 75.0, -2.0)
    for threshold, expected in ((-5.0, (50.0, 50.0)), (-2.0, (75.0, 75.0)), (-1.5, (75.0, 75.0)), (0.0, (50.0, 50.0)),
                                (0.5, (50.0, 70.0)), (0.9, (50.0, 70.0)), (1.0, (25.0, 45.0)), (9.0, (25.0, 45.0))):
        assert sweep.at(threshold) == pytest.approx(expected), threshold
        scored = compute_score.score_v2(GOLD, thresholded(SPANS, ODDS, threshold))  # the oracle: plain scoring
        assert sweep.at(threshold) == pytest.approx((scored["exact"], scored["f1"])), threshold


def test_sweep_best_is_the_scorers_best_f1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """On 300 random questions: every threshold agrees with scoring the thresholded predictions, and the
    best point is compute_score.py's best_f1 / best_f1_thresh (its command line, with --na-prob-file)."""
    rng = random.Random(7)
    words = "amber basalt cedar delta ember fjord granite harbour island juniper".split()
    context = " ".join(words)
    gold, spans, odds = {}, {}, {}
    for i, value in enumerate(rng.sample(range(-600, 600), 300)):
        qid = f"r{i}"
        answer = " ".join(words[(i % 7):(i % 7) + 2])
        gold[qid] = [] if i % 3 == 0 else [answer]
        spans[qid] = answer if rng.random() < 0.7 else words[i % 10]
        odds[qid] = value / 37.0
    sweep = plots.threshold_sweep(gold, spans, odds)
    for threshold in sweep.thresholds[::7] + [sweep.thresholds[0] - 1, 0.0]:
        scored = compute_score.score_v2(gold, thresholded(spans, odds, threshold))
        assert sweep.at(threshold) == pytest.approx((scored["exact"], scored["f1"]), abs=1e-9), threshold
    compute_score.main([str(write(tmp_path / "dev.json", squad_json(gold, context))),
                        str(write(tmp_path / "spans.json", spans)), "--na-prob-file",
                        str(write(tmp_path / "odds.json", odds))])
    official = json.loads(capsys.readouterr().out)
    assert official["best_f1"] > sweep.all_null_f1  # else the scorer's best_f1_thresh is its 0.0 placeholder
    assert (sweep.best_f1, sweep.best_f1_thresh) == (official["best_f1"], official["best_f1_thresh"])
    assert sweep.at(official["best_f1_thresh"])[1] == official["best_f1"]
    assert sweep.at(official["best_exact_thresh"])[0] == official["best_exact"]
    assert max(sweep.f1) == official["best_f1"]


def test_best_of_answering_nothing_is_not_placed_at_the_scorers_zero() -> None:
    """q1's span is wrong: every answer loses, so the best is all "" (2 of 4). The scorer keeps its starting
    threshold 0.0 for it, where everything is answered: F1 (0 + 0.8) / 4 = 20, not 50."""
    spans, odds = {**SPANS, "q1": "1904"}, {"q1": -2.0, "q4": -1.0, "q2": -0.5, "q3": -0.2}
    sweep = plots.threshold_sweep(GOLD, spans, odds)
    assert (sweep.best_f1, sweep.best_f1_thresh, sweep.all_null_f1) == (50.0, 0.0, 50.0)
    assert sweep.at(0.0) == pytest.approx((0.0, 20.0))
    assert sweep.best_f1_reached_at() is None
    assert plots.threshold_sweep(GOLD, SPANS, ODDS).best_f1_reached_at() == -2.0


def test_average_precision_by_hand() -> None:
    curves = compute_score.precision_recall_analysis(GOLD, SPANS, ODDS)
    assert list(curves) == ["pr_exact", "pr_f1", "pr_oracle"]
    exact, f1, oracle = curves.values()
    assert exact.precisions == pytest.approx([1.0, 1.0, 1 / 2, 1 / 3, 1 / 4])
    assert exact.recalls == [0.0, 0.5, 0.5, 0.5, 0.5]
    assert exact.average_precision == 0.5
    assert f1.precisions == pytest.approx([1.0, 1.0, 0.5, 0.6, 0.45])
    assert f1.recalls == pytest.approx([0.0, 0.5, 0.5, 0.9, 0.9])
    assert f1.average_precision == pytest.approx(0.74)
    assert oracle.recalls == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert oracle.average_precision == pytest.approx(5 / 6)


def test_average_precision_keeps_one_point_per_tied_probability() -> None:
    """q4 and q2 tied at 0.5: no threshold separates them, so no point between them."""
    odds = {**ODDS, "q4": 0.5}
    oracle = compute_score.precision_recall_analysis(GOLD, SPANS, odds)["pr_oracle"]
    assert oracle.precisions == pytest.approx([1.0, 1.0, 2 / 3, 1 / 2])
    assert oracle.recalls == [0.0, 0.5, 1.0, 1.0]
    assert oracle.average_precision == pytest.approx(0.5 + 2 / 3 * 0.5)
    assert compute_score.precision_recall_analysis({"q3": [], "q4": []}, SPANS, ODDS) == {}  # nothing answerable


def test_infer_threshold() -> None:
    for threshold in (-1.0, 0.0, 0.7):
        inferred = plots.infer_threshold(thresholded(SPANS, ODDS, threshold), SPANS, ODDS)
        assert thresholded(SPANS, ODDS, inferred) == thresholded(SPANS, ODDS, threshold)
    assert plots.infer_threshold(thresholded(SPANS, ODDS, 0.7), SPANS, ODDS) == 0.5  # 0.0 would not reproduce it
    assert plots.infer_threshold({**SPANS, "q1": "won"}, SPANS, ODDS) is None  # not the best span
    assert plots.infer_threshold({**SPANS, "q1": ""}, SPANS, ODDS) is None  # q1 withheld, q3 answered: no threshold


# --- a run folder -------------------------------------------------------------------------------------------


@needs_matplotlib
def gold_of(data_file: Path) -> dict:
    """The gold answers of a data file, as plot_run.py reads them for the pictures."""
    return {"gold": squad_v2.gold_answers(str(data_file)), "source": str(data_file)}


def test_draw_run_writes_every_picture(run: Path) -> None:
    written = plots.draw_run(run, **gold_of(run.parent / "dev.json"))
    names = ["training_loss.png", "training_eval.png", "eval_f1_vs_threshold.png", "eval_pr_exact.png",
             "eval_pr_f1.png", "eval_pr_oracle.png"]
    assert written == [run / name for name in names]
    assert_picture(run / "training_loss.png", (640, 640))
    assert_picture(run / "training_eval.png", (640, 480))
    assert_picture(run / "eval_f1_vs_threshold.png", (720, 480))
    for name in names[3:]:
        assert_picture(run / name, (640, 480))
    assert not list(run.glob(".tmp-*"))


@needs_matplotlib
def test_gold_can_replace_the_data_file_and_the_threshold_used_is_found(
    run: Path, no_rendering: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The threshold used: given, else qa.py's `eval_null_threshold`, else the one reproducing the predictions."""
    used = []
    drawer = plots.draw_threshold_sweep
    monkeypatch.setattr(plots, "draw_threshold_sweep", lambda path, sweep, threshold, *rest: used.append(threshold)
                        or drawer(path, sweep, threshold, *rest))
    write(run / "eval_predictions.json", thresholded(SPANS, ODDS, 0.7))
    drawn = plots.draw_all(run, prefix="eval", gold={**GOLD, "extra": ["not evaluated"]})
    assert run / "eval_f1_vs_threshold.png" in drawn.written
    assert used[-1] == 0.5 and any("threshold used: 0.5" in note for note in drawn.notes), drawn.notes
    write(run / "eval_results.json", {"eval_f1": 70.0, "eval_null_threshold": 0.7})  # as qa.py records it
    drawn = plots.draw_all(run, prefix="eval", gold=GOLD)
    assert used[-1] == 0.7 and not any("threshold used" in note for note in drawn.notes), drawn.notes
    plots.draw_all(run, prefix="eval", gold=GOLD, threshold=-1.0)
    assert used[-1] == -1.0


@needs_matplotlib
def test_hf_folder_uses_the_nbest_lists_for_the_spans(run: Path, no_rendering: list[Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """HF's run_qa.py writes no span file: the best non-empty n-best text is the span, so the sweep is the
    same; with neither file the thresholded predictions stand in (q2, withheld at 0.0, loses its span)."""
    sweeps = []
    drawer = plots.draw_threshold_sweep
    monkeypatch.setattr(plots, "draw_threshold_sweep", lambda path, sweep, *rest: sweeps.append(sweep) or
                        drawer(path, sweep, *rest))
    (run / "eval_span_predictions.json").unlink()
    write(run / "eval_nbest_predictions.json",
          {qid: [{"text": "", "probability": 0.6}, {"text": text, "probability": 0.3}] for qid, text in SPANS.items()})
    drawn = plots.draw_all(run, **gold_of(run.parent / "dev.json"))
    assert len(drawn.written) == 6 and not drawn.skipped and not drawn.notes
    assert sweeps[-1] == plots.threshold_sweep(GOLD, SPANS, ODDS)
    (run / "eval_nbest_predictions.json").unlink()
    drawn = plots.draw_all(run, **gold_of(run.parent / "dev.json"))
    assert len(drawn.written) == 6 and any("exact only up to the threshold used" in n for n in drawn.notes)
    assert sweeps[-1] == plots.threshold_sweep(GOLD, {**SPANS, "q2": "", "q3": ""}, ODDS)
    assert sweeps[-1].at(0.0) == sweeps[0].at(0.0) and sweeps[-1].at(0.5) != sweeps[0].at(0.5)


@needs_matplotlib
def test_training_without_evaluations_skips_training_eval(tmp_path: Path) -> None:
    write(tmp_path / "trainer_state.json", log_history(evals=False))
    drawn = plots.draw_all(tmp_path)
    assert drawn.written == [tmp_path / "training_loss.png"]
    assert_picture(tmp_path / "training_loss.png")
    assert not (tmp_path / "training_eval.png").exists()
    eval_skip, null_skip = drawn.skipped
    assert eval_skip.startswith("training_eval.png:") and "--eval_strategy" in eval_skip
    assert "no eval_null_odds.json (not a SQuAD v2 run" in null_skip


@needs_matplotlib
def test_unfinished_run_uses_the_last_checkpoints_state(tmp_path: Path, no_rendering: list[Path]) -> None:
    for step in (9, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    write(tmp_path / "checkpoint-9" / "trainer_state.json", {"log_history": []})
    write(tmp_path / "checkpoint-10" / "trainer_state.json", log_history())
    drawn = plots.draw_all(tmp_path)
    assert drawn.written == [tmp_path / "training_loss.png", tmp_path / "training_eval.png"]
    assert "checkpoint-10" in drawn.notes[0]


@needs_matplotlib
def test_missing_inputs_are_skipped_with_reasons(run: Path, tmp_path: Path, no_rendering: list[Path]) -> None:
    drawn = plots.draw_all(run)  # no data file, no gold
    assert [p.name for p in drawn.written] == ["training_loss.png", "training_eval.png"]
    assert "--data_file" in drawn.skipped[0]
    write(run / "eval_null_odds.json", {})
    assert "eval_null_odds.json is empty" in plots.draw_all(run, **gold_of(run.parent / "dev.json")).skipped[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    drawn = plots.draw_all(empty)
    assert drawn.written == [] and len(drawn.skipped) == 2
    assert "no trainer_state.json" in drawn.skipped[0] and "no eval_null_odds.json" in drawn.skipped[1]


@pytest.mark.parametrize("broken,message", [
    ("odds", "eval_null_odds.json is not valid JSON"),
    ("data", "not in"),
    ("nan", "NaN or infinite"),
    ("state", "no log_history"),
])
@needs_matplotlib
def test_broken_input_files_are_clear_errors(run: Path, no_rendering: list[Path], broken: str, message: str) -> None:
    data = run.parent / "dev.json"
    if broken == "odds":
        (run / "eval_null_odds.json").write_text('{"q1": -2.0, "q2"', encoding="utf-8")
    elif broken == "data":
        write(data, squad_json({"q1": GOLD["q1"], "q2": GOLD["q2"]}))
    elif broken == "nan":
        (run / "eval_null_odds.json").write_text(json.dumps({**ODDS, "q2": float("nan")}), encoding="utf-8")
    else:
        write(run / "trainer_state.json", {"global_step": 3})
    with pytest.raises(plots.PlotInputError, match=message):
        plots.draw_run(run, **gold_of(data))


def test_without_matplotlib_nothing_is_drawn_and_the_hint_is_logged(
    run: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with caplog.at_level(logging.INFO, logger="qakit.plots"):
        assert plots.draw_run(run, **gold_of(run.parent / "dev.json")) == []
    assert "pip install matplotlib" in caplog.text
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert not list(run.glob("*.png"))
    assert "pip install matplotlib" in (plots.matplotlib_missing() or "")
    with pytest.raises(pictures.MatplotlibMissing, match="pip install matplotlib"):
        pictures.draw_pr_images(run, compute_score.precision_recall_analysis(GOLD, SPANS, ODDS))


def test_compute_score_without_matplotlib_still_prints_the_metrics(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    images = run / "images"
    compute_score.main([str(run.parent / "dev.json"), str(run / "eval_span_predictions.json"),
                        "-n", str(run / "eval_null_odds.json"), "-p", str(images)])
    captured = capsys.readouterr()
    assert json.loads(captured.out)["pr_f1_ap"] == pytest.approx(74.0)
    assert "pip install matplotlib" in captured.err and not images.exists()


# --- command lines ------------------------------------------------------------------------------------------


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


@needs_matplotlib
def test_plot_run_prints_the_paths(run: Path, tmp_path: Path, no_rendering: list[Path],
                                   capsys: pytest.CaptureFixture) -> None:
    import plot_run

    assert plot_run.main([str(run), "--data_file", str(tmp_path / "dev.json"), "--threshold", "0.5"]) == 0
    out, err = capsys.readouterr()
    assert out.split() == [str(run / name) for name in (
        "training_loss.png", "training_eval.png", "eval_f1_vs_threshold.png", "eval_pr_exact.png", "eval_pr_f1.png",
        "eval_pr_oracle.png")] == [str(path) for path in no_rendering]
    assert err == ""
    assert plot_run.main([str(run)]) == 0  # no data file: the training curves, and why not the rest
    out, err = capsys.readouterr()
    assert len(out.split()) == 2 and "skipped eval_f1_vs_threshold.png, eval_pr_*.png:" in err and "--data_file" in err
    write(run / "eval_null_odds.json", [1.0])
    assert plot_run.main([str(run), "--data_file", str(tmp_path / "dev.json")]) == 2
    assert "plot_run.py: error:" in capsys.readouterr().err
    assert plot_run.main([str(tmp_path / "absent")]) == 2
    assert "is not a folder" in capsys.readouterr().err


@needs_matplotlib
@pytest.mark.slow
def test_plot_run_script(tmp_path: Path) -> None:
    """As a script from another directory: nothing to draw is exit status 1 and says what was skipped."""
    done = _run(REPO / "plot_run.py", tmp_path, cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert "skipped training_loss.png, training_eval.png: no trainer_state.json" in done.stderr
    assert "no eval_null_odds.json (not a SQuAD v2 run" in done.stderr and "nothing drawn" in done.stderr
    write(tmp_path / "trainer_state.json", log_history(evals=False))
    done = _run(REPO / "plot_run.py", tmp_path, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == f"{tmp_path / 'training_loss.png'}\n", done.stderr
    assert_picture(tmp_path / "training_loss.png")


@needs_matplotlib
@pytest.mark.slow
def test_compute_score_out_image_dir(run: Path, tmp_path: Path) -> None:
    """From another directory: the official five pictures, pr_*_ap appended, every other value unchanged."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = (V2_CLI, tmp_path / "dev.json", run / "eval_span_predictions.json", "--na-prob-file",
            run / "eval_null_odds.json")
    plain = _run(*args, cwd=elsewhere)
    drawn = _run(*args, "--out-image-dir", "images", cwd=elsewhere)
    assert plain.returncode == 0 and drawn.returncode == 0, drawn.stderr
    assert drawn.stderr == ""
    before, after = json.loads(plain.stdout), json.loads(drawn.stdout)
    assert list(after) == [*before, "pr_exact_ap", "pr_f1_ap", "pr_oracle_ap"]
    assert {key: after[key] for key in before} == before
    assert (before["best_f1"], before["best_f1_thresh"]) == (75.0, -2.0)
    assert [after["pr_exact_ap"], after["pr_f1_ap"], after["pr_oracle_ap"]] == pytest.approx([50.0, 74.0, 250 / 3])
    names = ["na_prob_hist_hasAns.png", "na_prob_hist_noAns.png", "pr_exact.png", "pr_f1.png", "pr_oracle.png"]
    assert sorted(p.name for p in (elsewhere / "images").iterdir()) == names
    for name in names:
        assert_picture(elsewhere / "images" / name, (640, 480))
    alone = _run(*args[:3], "-p", "images2", cwd=elsewhere)  # no --na-prob-file: nothing to draw, as the official
    assert alone.returncode == 0 and "needs --na-prob-file" in alone.stderr and not (elsewhere / "images2").exists()
