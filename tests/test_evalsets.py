"""Several evaluation sets in one run (issue: every language scored right, several evaluation sets): each set
answered, scored and written under its own prefix exactly as when it is evaluated alone, with the macro average."""

from __future__ import annotations

from pathlib import Path

import pytest

import tiny_models
from helpers import ONE_THREAD, REPO, read_json as read, run_cli, run_qa, torchrun
from qakit.errors import QAConfigError
from qakit.evalsets import combine, eval_entries
from squad_data import squad_file

XQUAD = REPO.parent / "shared" / "data" / "xquad"
DEV_V1 = REPO.parent / "shared" / "data" / "squad" / "dev-v1.1.json"
SET_FILES = ("predictions.json", "nbest_predictions.json", "results.json")


def test_sets_are_named_by_file_or_by_the_user():
    one = eval_entries(["data/dev-v2.0.json"], ["zh"])
    assert [(e.name, e.split, e.prefix, e.language) for e in one] == [("", "validation", "eval", "zh")]
    several = eval_entries(["a/xquad.zh.json", "de=b/x.json.gz", "hub:squad_v2:plain_text"], ["zh", "de", "en"])
    assert [(e.name, e.source, e.config, e.prefix, e.language) for e in several] == [
        ("xquad_zh", "a/xquad.zh.json", None, "eval_xquad_zh", "zh"), ("de", "b/x.json.gz", None, "eval_de", "de"),
        ("squad_v2", "squad_v2", "plain_text", "eval_squad_v2", "en")]
    assert [e.language for e in eval_entries(["a.json", "b.json"], ["de"])] == ["de", "de"]
    with pytest.raises(QAConfigError, match="one per --validation_file: got 2 languages for 3"):
        eval_entries(["a.json", "b.json", "c.json"], ["de", "zh"])
    with pytest.raises(QAConfigError, match="both be named 'dev'"):
        eval_entries(["x/dev.json", "y/dev.json"], None)
    # metrics are eval_NAME_*: a name of its own starting eval_ would read as another (HF adds eval_ when missing)
    assert [e.name for e in eval_entries(["x/eval_en.json", "b.json"], None)] == ["en", "b"]
    with pytest.raises(QAConfigError, match="may not start with eval_"):
        eval_entries(["eval_x=a.json", "b.json"], None)


def test_the_macro_average_is_over_the_scores_every_set_reports():
    zh = {"eval_zh_f1": 90.0, "eval_zh_exact_match": 80.0, "eval_zh_examples": 3}
    de = {"eval_de_f1": 60.0, "eval_de_exact_match": 50.0, "eval_de_HasAns_f1": 1.0}
    both = combine([zh, de], ["eval_zh", "eval_de"])
    assert both == {**zh, **de, "eval_f1": 75.0, "eval_exact_match": 65.0}  # HasAns: per set only


def flags(model: Path, out: Path, *extra) -> list:
    return ["--model_name_or_path", model, "--do_eval", "--max_seq_length", 64, "--doc_stride", 16, "--report_to",
            "none", "--use_cpu", "true", "--output_dir", out, "--cache_dir", out.parent / "cache", *extra]


def scores(results: dict, prefix: str) -> dict:
    """A set's scores (without the timings, which differ from run to run)."""
    return {k.removeprefix(prefix): v for k, v in results.items() if k.startswith(prefix + "_")
            and not any(t in k for t in ("runtime", "per_second", "preparation_time"))}


@pytest.mark.slow
def test_sets_evaluated_together_equal_each_evaluated_alone(tmp_path, capsys):
    bert = tiny_models.build_tiny("Bert", tmp_path / "bert")
    v2, v1 = squad_file(tmp_path / "v2.json"), squad_file(tmp_path / "short.json", version="1.1")
    together = tmp_path / "together"
    code, err = run_cli(flags(bert, together, "--validation_file", v2, v1, "--version_2_with_negative"), capsys)
    assert code == 0, err[-3000:]
    results = read(together / "all_results.json")
    for name, data in (("v2", v2), ("short", v1)):
        alone = tmp_path / name
        assert run_cli(flags(bert, alone, "--validation_file", data, "--version_2_with_negative"), capsys)[0] == 0
        assert scores(results, f"eval_{name}") == scores(read(alone / "eval_results.json"), "eval")
        for file in SET_FILES[:2]:
            assert read(together / f"eval_{name}_{file}") == read(alone / f"eval_{file}"), file
    for key in ("f1", "exact"):
        assert results[f"eval_{key}"] == pytest.approx((results[f"eval_v2_{key}"] + results[f"eval_short_{key}"]) / 2)
    every = read(together / "eval_results.json")
    assert {k: v for k, v in every.items() if k.startswith("eval_")} == {k: v for k, v in results.items()
                                                                          if k.startswith("eval_")}
    assert not (together / "null_threshold.json").exists()  # no one threshold belongs to two sets


@pytest.mark.slow
def test_training_reports_every_set_and_picks_the_best_by_one(tmp_path, capsys):
    bert = tiny_models.build_tiny("Bert", tmp_path / "bert")
    v2, v1 = squad_file(tmp_path / "v2.json"), squad_file(tmp_path / "short.json", version="1.1")
    out = tmp_path / "out"
    code, err = run_cli(flags(bert, out, "--validation_file", v2, v1, "--version_2_with_negative", "--train_file", v2,
                              v1, "--max_train_samples", 3, "--do_train", "--max_steps", 2, "--eval_strategy",
                              "steps", "--eval_steps", 1, "--save_steps", 1, "--load_best_model_at_end",
                              "--metric_for_best_model", "short_f1"), capsys)
    assert code == 0, err[-3000:]
    evaluations = [e for e in read(out / "trainer_state.json")["log_history"] if "eval_f1" in e]
    assert len(evaluations) == 2 and all("eval_v2_f1" in e and "eval_short_f1" in e for e in evaluations)
    assert read(out / "best_checkpoint.json")["metric"] == "eval_short_f1"
    assert read(out / "train_results.json")["train_samples"] > 0
    code, err = run_cli(flags(bert, tmp_path / "o2", "--validation_file", v2, v1, "--version_2_with_negative",
                              "--metric_for_best_model", "v3_f1", "--load_best_model_at_end", "--eval_strategy",
                              "steps", "--do_train", "--train_file", v2), capsys)
    assert code == 2 and "v2_f1" in err and "short_f1" in err
    for extra, said in ((["--null_score_diff_threshold", "best", "--do_predict", "--test_file", v2],
                         "no one best threshold exists"), (["--language", "de", "zh"], "got 2 languages for 1 file(s)")):
        files = [v2, v1] if "best" in extra else [v2]
        code, err = run_cli(flags(bert, tmp_path / "o3", "--validation_file", *files, "--version_2_with_negative",
                                  *extra), capsys)
        assert code == 2 and said in err, err[-2000:]


def _eval(model: Path, files: list[Path], languages: list[str], out: Path) -> list[str]:
    return ["--validation_file", *map(str, files), "--language", *languages, "--max_eval_samples", "24",
            "--max_seq_length", "256", "--doc_stride", "64", "--report_to", "none", "--per_device_eval_batch_size", "8",
            "--do_eval", "--model_name_or_path", str(model), "--output_dir", str(out)]


SETS = {"xquad_zh": (XQUAD / "xquad.zh.json", "zh"), "xquad_de": (XQUAD / "xquad.de.json", "de"),
        "dev-v1_1": (DEV_V1, "en")}


@pytest.mark.slow
@pytest.mark.skipif(not XQUAD.is_dir() or not DEV_V1.is_file(), reason="../shared/data is not here")
def test_xquad_zh_de_and_squad_en_together_one_process_and_two(tmp_path):
    """A tiny RoBERTa (byte-level BPE: no text is unknown to it; its answers only need to be the same ones) on
    24 questions of each set, in windows of 256 tokens (a Chinese character is two or three bytes, so shorter
    windows crawl through the contexts)."""
    model = tiny_models.build_tiny("Roberta", tmp_path / "roberta")
    files, languages = [f for f, _ in SETS.values()], [lang for _, lang in SETS.values()]
    one, two = tmp_path / "one", tmp_path / "two"
    proc = run_qa([*_eval(model, files, languages, one), "--use_cpu", "true"], env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[evaluation: xquad_zh]" in proc.stdout and "[evaluation: macro average over 3 sets]" in proc.stdout
    results = read(one / "all_results.json")
    assert results["eval_xquad_zh_examples"] == 24
    for name in ("xquad_zh",):  # the language-specific set; test_sets_evaluated_together_equal_each_... does all
        data, language = SETS[name]
        alone = tmp_path / name
        proc = run_qa([*_eval(model, [data], [language], alone), "--use_cpu", "true"], env=ONE_THREAD)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert scores(results, f"eval_{name}") == scores(read(alone / "eval_results.json"), "eval")
    proc = run_qa(_eval(model, files, languages, two), launcher=torchrun(), env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in SETS:
        assert read(two / f"eval_{name}_predictions.json") == read(one / f"eval_{name}_predictions.json")
    assert scores(read(two / "all_results.json"), "eval") == scores(results, "eval")
