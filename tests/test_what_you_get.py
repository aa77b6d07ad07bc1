"""What a run leaves a user: the report table, ad-hoc answers (equal to --do_predict's and to HF's pipeline),
the model card (also pushed, up to the network), TensorBoard event files, and a grouped --help."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

import tiny_models
from helpers import read_json as read, run_qa
from squad_data import squad_file

pytestmark = pytest.mark.slow
SETTINGS = ["--version_2_with_negative", "--max_seq_length", "64", "--doc_stride", "16", "--report_to", "none",
            "--use_cpu", "true"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny BERT trained a few steps, evaluated and predicting, with what it printed."""
    root = tmp_path_factory.mktemp("run")
    model = tiny_models.build_tiny("Bert", root / "bert")
    data = squad_file(root / "d.json")
    test = squad_file(root / "t.json", answers=False)
    out = root / "out"
    proc = run_qa(["--model_name_or_path", str(model), "--train_file", str(data), "--validation_file", str(data),
                   "--test_file", str(test), "--do_train", "--do_eval", "--do_predict", "--max_steps", "6",
                   "--learning_rate", "1e-3", "--save_strategy", "no", "--output_dir", str(out), *SETTINGS])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, "data": data, "test": test, "model": model, "stdout": proc.stdout}


# ---- the run report ---------------------------------------------------------------------------


def _report(stdout: str) -> dict[str, str]:
    lines = stdout[stdout.index("Run report"):].splitlines()[1:]
    rows, section = {}, ""
    for line in lines:
        if not line.startswith("  "):
            break
        label, _, value = line.strip().partition("  ")
        if label.startswith("["):
            section = label.strip("[]") + ": "
            continue
        rows[section + label.strip()] = value.strip()
    return rows


def _numbers(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?", text)]  # not F1's 1


def test_report_table_equals_all_results(run):
    rows, results = _report(run["stdout"]), read(run["out"] / "all_results.json")
    for section, prefix in (("evaluation", "eval"), ("prediction", "predict")):
        speed = _numbers(rows[f"{section}: speed, whole evaluation"])
        assert speed == [pytest.approx(results[f"{prefix}_examples_per_second"], abs=0.006),
                         pytest.approx(results[f"{prefix}_windows_per_second"], abs=0.006),
                         results[f"{prefix}_examples"], results[f"{prefix}_windows"]]
        assert _numbers(rows[f"{section}: null threshold used"]) == [pytest.approx(results[f"{prefix}_null_threshold"],
                                                                                  abs=5e-5)]
    exact, f1 = _numbers(rows["evaluation: exact / F1"])
    assert (exact, f1) == (pytest.approx(results["eval_exact"], abs=0.006), pytest.approx(results["eval_f1"], abs=0.006))
    thresh, best_f1, best_exact = _numbers(rows["evaluation: best null threshold"])
    assert thresh == pytest.approx(results["eval_best_threshold"], abs=5e-5)
    assert (best_f1, best_exact) == (pytest.approx(results["eval_best_f1"], abs=0.006),
                                     pytest.approx(results["eval_best_exact"], abs=0.006))
    assert _numbers(rows["evaluation: HasAns exact / F1 (5 questions)"]) == [
        pytest.approx(results["eval_HasAns_exact"], abs=0.006), pytest.approx(results["eval_HasAns_f1"], abs=0.006)]
    phases = dict(re.findall(r"(\w+) ([\d.]+)", rows["run: wall time (s)"]))
    for name, seconds in phases.items():
        assert float(seconds) == pytest.approx(results[f"run_{name}_runtime"], abs=0.05), name
    assert set(phases) >= {"load", "windows", "train", "evaluate", "predict", "total"}
    assert sum(results[f"run_{p}_runtime"] for p in ("load", "windows", "train", "evaluate", "predict", "write")) \
        <= results["run_total_runtime"]
    assert _numbers(rows["run: peak memory"])[0] == pytest.approx(results["run_peak_rss_mib"], abs=0.5)
    assert read(run["out"] / "run_results.json")["run_total_runtime"] == results["run_total_runtime"]


# ---- ad-hoc answers ---------------------------------------------------------------------------


def _asked(run, args: list[str], stdin: str | None = None,
           window: tuple[str, ...] = ("--max_seq_length", "64", "--doc_stride", "16")) -> list[dict]:
    """Ask the trained model; standard output must hold only the answers, one JSON line each."""
    import os
    import subprocess

    from helpers import OFFLINE_ENV, REPO

    proc = subprocess.run([sys.executable, str(REPO / "qa.py"), "--model_name_or_path", str(run["out"]), *args,
                           "--version_2_with_negative", *window, "--use_cpu", "true"], input=stdin,
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, **OFFLINE_ENV})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _questions(path: Path) -> list[dict]:
    data = json.loads(path.read_text())["data"]
    return [{"id": q["id"], "question": q["question"], "context": p["context"]}
            for a in data for p in a["paragraphs"] for q in p["qas"]]


def test_asked_questions_get_the_do_predict_answers(run, tmp_path):
    questions = _questions(run["test"])
    lines = tmp_path / "asked.jsonl"
    lines.write_text("".join(json.dumps(q) + "\n" for q in questions))
    used = str(read(run["out"] / "predict_results.json")["predict_null_threshold"])  # not the one it recorded since
    asked = _asked(run, ["--questions_file", str(lines), "--null_score_diff_threshold", used])
    preds, odds = read(run["out"] / "predict_predictions.json"), read(run["out"] / "predict_null_odds.json")
    nbest = read(run["out"] / "predict_nbest_predictions.json")
    assert [a["id"] for a in asked] == [q["id"] for q in questions]
    for a in asked:
        top = next(r for r in nbest[a["id"]] if r["text"])
        assert a["answer"] == preds[a["id"]]
        assert a["null_odds"] == pytest.approx(odds[a["id"]], abs=1e-5)
        assert (a["span"], [a["start"], a["end"]]) == (top["text"], top["offsets"])
        assert a["score"] == pytest.approx(top["score"], abs=1e-5)
        context = next(q["context"] for q in questions if q["id"] == a["id"])
        assert context[a["start"]:a["end"]] == a["span"]
    one = questions[0]
    by_flags = _asked(run, ["--question", one["question"], "--context", one["context"],
                            "--null_score_diff_threshold", used])
    by_stdin = _asked(run, ["--questions_file", "-", "--null_score_diff_threshold", used],
                      stdin=json.dumps({k: one[k] for k in ("question", "context")}))
    for got in (by_flags, by_stdin):
        assert len(got) == 1 and got[0]["id"] == "q1"
        assert {k: v for k, v in got[0].items() if k != "id"} == pytest.approx(
            {k: v for k, v in asked[0].items() if k != "id"}, abs=1e-5)
    assert not any(p.name.startswith("ask") for p in run["out"].iterdir())  # nothing written


def test_asking_with_training_flags_is_refused(run):
    proc = run_qa(["--model_name_or_path", str(run["out"]), "--question", "Who?", "--context", "Mara did.",
                   "--do_train", "--output_dir", str(run["out"] / "x")])
    assert proc.returncode == 2 and "drop --do_train" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_qa(["--model_name_or_path", str(run["out"]), "--question", "Who?"])
    assert proc.returncode == 2 and "--question needs --context" in proc.stderr


PIPELINE = """
import json, sys
from transformers import pipeline
qa = pipeline("question-answering", model=sys.argv[1], tokenizer=sys.argv[1], device="cpu")
for line in open(sys.argv[2]):
    q = json.loads(line)
    print(json.dumps(qa(question=q["question"], context=q["context"], handle_impossible_answer=True,
                        max_answer_len=30, max_seq_len=384, doc_stride=128, align_to_words=False)))
"""


def test_saved_model_answers_alike_in_hf_pipeline(run, tmp_path):
    """`transformers.pipeline("question-answering")` on the saved folder, unchanged, gives our answers: with
    its window (384 tokens, one per question here) its probabilities rank spans and the null as our logits
    do, and its null rule is our threshold 0. (Its default `align_to_words` widens each span to whole words and
    adds up the probabilities of spans that widen alike: another ranking, so it is off here. On a tiny random model the windows' logits are near flat, so the
    spans and the null are often close: a strong check). Transformers 5 removed that pipeline, so it runs in the
    transformers 4.57 environment that CI makes for the four removed architectures."""
    import os
    import subprocess

    from helpers import OFFLINE_ENV, legacy_python

    python = legacy_python()
    questions = _questions(run["test"])
    lines = tmp_path / "asked.jsonl"
    lines.write_text("".join(json.dumps(q) + "\n" for q in questions))
    proc = subprocess.run([str(python), "-c", PIPELINE, str(run["out"]), str(lines)], capture_output=True, text=True,
                          env={**os.environ, **OFFLINE_ENV})
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = [json.loads(line) for line in proc.stdout.splitlines()]
    # every start and end kept (n_best 512): the pipeline ranks all pairs, run_qa's n-best only the top 20 x 20
    ours = _asked(run, ["--questions_file", str(lines), "--null_score_diff_threshold", "0", "--n_best_size", "512"],
                  window=())
    assert len(theirs) == len(ours) == len(questions)
    for q, got, a in zip(questions, theirs, ours):
        assert got["answer"] == a["answer"], (q["id"], got, a)
        if a["answer"]:
            assert [got["start"], got["end"]] == [a["start"], a["end"]]


# ---- the model card, and pushing it -----------------------------------------------------------


def test_model_card_holds_hf_card_and_our_scores(run):
    card = (run["out"] / "README.md").read_text()
    results = read(run["out"] / "eval_results.json")
    assert card.startswith("---\n") and "library_name: transformers" in card and str(run["model"]) not in card
    assert "### Training hyperparameters" in card  # HF Trainer's own sections
    for key in ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1"):
        assert f"| {key} | {results[f'eval_{key}']:.2f} |" in card
    assert f"best threshold on the evaluation data is {results['eval_best_threshold']:g}" in card
    assert f"- train: {run['data'].name} (7 questions, 2 unanswerable)" in card
    assert "```bash\npython qa.py --model_name_or_path" in card and "--do_train --do_eval --do_predict" in card


def test_push_to_hub_uploads_the_folder_with_its_card(tmp_path, monkeypatch, capsys):
    """As HF's example: the repo is made when the trainer starts and the output folder, card included, is
    uploaded at the end. The hub API is replaced just before the network."""
    import transformers.trainer

    from helpers import run_cli

    calls = []

    class FakeHub:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id))
            return type("RepoUrl", (), {"repo_id": f"me/{repo_id}"})()

        def upload_folder(self, repo_id, folder_path, **kwargs):
            card = (Path(folder_path) / "README.md").read_text()
            calls.append(("upload_folder", repo_id, folder_path, "## Evaluation (qa.py)" in card,
                          (Path(folder_path) / "model.safetensors").is_file()))

    monkeypatch.setattr(transformers.trainer, "hf_api", lambda *a, **k: FakeHub(), raising=False)
    model = tiny_models.build_tiny("Bert", tmp_path / "bert")
    data = squad_file(tmp_path / "d.json")
    out = tmp_path / "pushed"
    code, err = run_cli(["--model_name_or_path", model, "--train_file", data, "--validation_file", data, "--do_train",
                         "--do_eval", "--max_steps", 2, "--save_strategy", "no", "--output_dir", out, "--push_to_hub",
                         "--hub_model_id", "qa-test", *SETTINGS], capsys)
    assert code == 0, err
    assert calls[0] == ("create_repo", "qa-test")
    assert calls[-1] == ("upload_folder", "me/qa-test", str(out), True, True)


# ---- TensorBoard, progress, --help ------------------------------------------------------------


def test_tensorboard_event_files_are_written_offline(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = tiny_models.build_tiny("Bert", tmp_path / "bert")
    data = squad_file(tmp_path / "d.json")
    out, logs = tmp_path / "out", tmp_path / "tb"
    settings = [a for a in SETTINGS if a not in ("--report_to", "none")]
    proc = run_qa(["--model_name_or_path", str(model), "--train_file", str(data), "--validation_file", str(data),
                   "--do_train", "--do_eval", "--max_steps", "4", "--logging_steps", "1", "--eval_strategy", "steps",
                   "--eval_steps", "2", "--save_strategy", "no", "--output_dir", str(out), "--report_to",
                   "tensorboard", "--logging_dir", str(logs), *settings])
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {p.parent for p in logs.rglob("events.out.tfevents.*")}
    assert runs, list(logs.rglob("*"))
    events = EventAccumulator(str(next(iter(runs)))).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "eval/f1", "eval/exact"} <= tags, tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    state = read(out / "trainer_state.json")["log_history"]
    f1 = [h["eval_f1"] for h in state if "eval_f1" in h]  # the evaluations at steps 2 and 4, then the final one
    final = read(out / "eval_results.json")["eval_f1"]
    assert [e.value for e in events.Scalars("eval/f1")] == pytest.approx([*f1, final], abs=1e-4)


def test_help_is_grouped_with_common_flags_first():
    import qa
    from qakit import flags

    text = flags.build_parser(qa.ARGUMENTS).format_help()
    heads = [text.index(f"\n{title}:\n") for title in flags.HELP_GROUPS] + \
        [text.index("\ntraining: every other TrainingArguments flag:\n")]
    assert heads == sorted(heads)
    training = text[heads[len(flags.HELP_GROUPS) - 1]:heads[-1]]
    assert training.index("--output_dir") < training.index("--do_train") < training.index("--learning_rate")
    assert "--adam_beta1" in text[heads[-1]:] and "--adam_beta1" not in training
    answers = text[heads[2]:heads[3]]
    assert all(f"--{flag} " in answers for flag in ("null_score_diff_threshold", "answer_head", "generation_num_beams"))


def test_report_renders_v1_scores():
    """SQuAD v1.1 results name exact `exact_match`; the report reads either (no NoAns rows, no threshold)."""
    from qakit.report import render

    text = render({"eval_exact_match": 50.0, "eval_f1": 62.5, "run_total_runtime": 3.0, "run_load_runtime": 1.0,
                   "run_peak_rss_mib": 100.0})
    rows = _report(text)
    assert _numbers(rows["evaluation: exact / F1"]) == [50.0, 62.5]
    assert "evaluation: null threshold used" not in rows and _numbers(rows["run: wall time (s)"]) == [1.0, 3.0]
