"""Every architecture of MODELS.md fine-tunes, evaluates and predicts through qa.py (one case per row).

Each case builds a tiny random-weight model from the architecture's own config class with a tokenizer of
its real family (tests/tiny_models.py), then runs qa.py: a few training steps, evaluation and prediction on
a small v2 file. The four architectures removed in transformers 5 run in the transformers 4.57.x
environment that `.ci/setup_v457.sh` makes (.venv-v457). The outcome of every row is printed at the end.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import transformers

import tiny_models
from helpers import LEGACY_PYTHON, REPO, legacy_python, run_cli, run_qa
from squad_data import contexts_by_id, squad_file

pytestmark = pytest.mark.slow

EXPECTED_FAILURES = {  # row -> words the error message must contain
    "LayoutLMv2": "detectron2",
    "Lxmert": "no start/end span head",
}
IS_V5 = int(transformers.__version__.split(".")[0]) >= 5


def qa_args(model: Path, data: Path, test: Path, out: Path, max_len: int) -> list[str]:
    return ["--model_name_or_path", str(model), "--train_file", str(data), "--validation_file", str(data),
            "--test_file", str(test), "--version_2_with_negative", "--do_train", "--do_eval", "--do_predict",
            "--max_steps", "3", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
            "--learning_rate", "1e-3", "--logging_steps", "1", "--max_seq_length", str(max_len),
            "--doc_stride", str(max_len // 4), "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true",
            "--output_dir", str(out), "--cache_dir", str(out.parent / "cache"), "--overwrite_output_dir"]


def run_legacy(row_name: str, model: Path, args: list[str], cwd: Path) -> tuple[int, str]:
    """Build and run in the transformers 4.57.x environment, in a separate process."""
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    build = run_qa([f"import tiny_models; tiny_models.build_tiny({row_name!r}, {str(model)!r})"],
                   launcher=[str(LEGACY_PYTHON), "-c"], env=env)
    assert build.returncode == 0, build.stderr[-3000:]
    proc = run_qa(args, cwd=cwd, launcher=[str(LEGACY_PYTHON), str(REPO / "qa.py")], env=env)
    return proc.returncode, proc.stderr


def check_outputs(out: Path, data: Path) -> str:
    """Finite loss that moves; answers that are empty or inside their context; all output files."""
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [e["loss"] for e in log if "loss" in e]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses
    assert len(set(losses)) > 1, f"loss did not move: {losses}"
    contexts = contexts_by_id(data)
    for prefix in ("eval", "predict"):
        preds = json.loads((out / f"{prefix}_predictions.json").read_text())
        assert set(preds) == set(contexts)
        assert all(text == "" or text in contexts[qid] for qid, text in preds.items())
        for name in ("nbest_predictions", "null_odds", "span_predictions"):
            assert (out / f"{prefix}_{name}.json").is_file()
    results = json.loads((out / "all_results.json").read_text())
    assert math.isfinite(results["eval_f1"]) and "predict_f1" not in results
    return f"trained (loss {losses[0]:.3f} -> {losses[-1]:.3f}), evaluated (F1 {results['eval_f1']:.1f}), predicted"


@pytest.mark.parametrize("row", tiny_models.ROWS, ids=[r.name for r in tiny_models.ROWS])
def test_architecture(row, tmp_path, record_property, capsys, monkeypatch):
    data, test = squad_file(tmp_path / "data.json"), squad_file(tmp_path / "test.json", answers=False)
    model, out = tmp_path / "model", tmp_path / "out"
    args = qa_args(model, data, test, out, min(row.max_length, 128))
    if row.removed_in_v5 and IS_V5:
        legacy_python()
        env = "transformers 4.57.x"
        code, err = run_legacy(row.name, model, args, tmp_path)
    else:
        env = f"transformers {transformers.__version__}"
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        tiny_models.build_tiny(row.name, model)
        code, err = run_cli(args, capsys)
    if row.name in EXPECTED_FAILURES:
        assert code == 2, err[-3000:]
        assert EXPECTED_FAILURES[row.name] in err and "Traceback" not in err
        assert not (out / "eval_predictions.json").exists()
        message = next(line for line in err.splitlines() if "qa.py: error:" in line)
        record_property("outcome", f"refused with a clear message ({env}): {message[:110]}")
        return
    assert code == 0, err[-4000:]
    record_property("outcome", f"{check_outputs(out, data)} ({env})")
