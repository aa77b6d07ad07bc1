"""Hand-worked oracle for our SQuAD scorers (metrics/): rules, CLIs and evaluate.load.

Every expected number below is worked out by hand from the public SQuAD rules, not taken
from the code under test.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, SHARED_SQUAD

from metrics.squad.compute_score import score_v1
from metrics.squad_v2.compute_score import MissingPredictionsError, score_v2
from metrics.squad_v2.squad_common import ScoreInputError
from metrics.squad_v2.squad_common import exact_match, gold_from_dataset, normalize_answer, read_json, token_f1

V1_CLI = REPO / "metrics" / "squad" / "compute_score.py"
V2_CLI = REPO / "metrics" / "squad_v2" / "compute_score.py"


# ---------------------------------------------------------------- normalization


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("The Cat", "cat"),  # case + leading article
        ("Hello, World!", "hello world"),  # ASCII punctuation
        ("U.S.A.", "usa"),
        ("A man, an apple and THE end", "man apple and end"),  # all three articles, any case
        ("theater anatomy banana", "theater anatomy banana"),  # articles inside words untouched
        ("the-end", "theend"),  # punctuation goes first, so no whole-word article is left
        ("  many \t spaces\n here ", "many spaces here"),  # whitespace collapsed
        ("x\u00a0y\u3000z", "x y z"),  # Unicode whitespace splits too
        ("«Paris» — Été", "«paris» — été"),  # non-ASCII punctuation and letters stay
        ("l'été", "lété"),  # ASCII apostrophe removed, accents kept
        ("The", ""),
        ("a an the", ""),
    ],
)
def test_normalize_answer(raw: str, normalized: str) -> None:
    assert normalize_answer(raw) == normalized


def test_exact_match_uses_normalization() -> None:
    assert exact_match("the Broncos!", "Broncos") == 1
    assert exact_match("Broncos", "Denver Broncos") == 0


@pytest.mark.parametrize("empty_is_no_answer", [True, False])
def test_partial_f1_by_hand(empty_is_no_answer: bool) -> None:
    # [cat, sat] vs [cat, sat, on, mat]: precision 1, recall 1/2 -> 2/3
    assert token_f1("the cat sat", "cat sat on mat", empty_is_no_answer=empty_is_no_answer) == pytest.approx(2 / 3)
    # multiset overlap: [x, x, y] vs [x, y, y] share one x and one y -> p = r = 2/3
    assert token_f1("x x y", "x y y", empty_is_no_answer=empty_is_no_answer) == pytest.approx(2 / 3)
    assert token_f1("dog", "cat", empty_is_no_answer=empty_is_no_answer) == 0


def test_f1_empty_sides_differ_between_versions() -> None:
    # both normalize to nothing: v2.0 agrees ("no answer" == "no answer"), v1.1 sees no overlap
    assert token_f1("the", "a", empty_is_no_answer=True) == 1
    assert token_f1("the", "a", empty_is_no_answer=False) == 0
    assert token_f1("", "cat", empty_is_no_answer=True) == 0
    assert token_f1("", "cat", empty_is_no_answer=False) == 0


# ---------------------------------------------------------------- v1.1


def test_score_v1_max_over_golds_and_partial_f1() -> None:
    gold = {
        "q1": ["Denver Broncos", "The Broncos"],
        "q2": ["Santa Clara, California", "Levi's Stadium"],
        "q3": ["blue"],
    }
    preds = {"q1": "broncos", "q2": "Levi's Stadium in Santa Clara", "q3": "", "unknown": "ignored"}
    # q1: exact via 2nd gold. q2: [levis stadium in santa clara] vs [levis stadium] -> p 2/5, r 1 -> 4/7
    # (beats 1/2 against the 1st gold). q3: empty prediction scores 0 in v1.1.
    result = score_v1(gold, preds)
    assert list(result) == ["exact_match", "f1"]
    assert result["exact_match"] == pytest.approx(100 / 3)
    assert result["f1"] == pytest.approx(100 * (1 + 4 / 7) / 3)


def test_score_v1_missing_prediction_scores_zero_with_message(capsys: pytest.CaptureFixture[str]) -> None:
    result = score_v1({"q1": ["x"], "q2": ["y"]}, {"q1": "x"})
    assert result == {"exact_match": 50.0, "f1": 50.0}
    assert "Unanswered question q2 will receive score 0." in capsys.readouterr().err


def test_score_v1_gold_that_normalizes_to_nothing() -> None:
    assert score_v1({"q": ["The"]}, {"q": "a"}) == {"exact_match": 100.0, "f1": 0.0}


# ---------------------------------------------------------------- v2.0

V2_GOLD = {"h1": ["Norman"], "h2": ["10th century", "the 10th century"], "n1": [], "n2": []}
V2_PREDS = {"h1": "Normans", "h2": "in the 10th century", "n1": "", "n2": "France", "extra": "ignored"}
V2_NA_PROBS = {"h1": 0.9, "h2": 0.2, "n1": 0.5, "n2": 0.8, "extra": 0.0}
# raw per question: h1 EM 0 F1 0; h2 EM 0 F1 [in 10th century] vs [10th century] = 0.8;
# n1 EM 1 F1 1 (empty vs no answer); n2 EM 0 F1 0.
V2_PLAIN = {
    "exact": 25.0,
    "f1": 45.0,
    "total": 4,
    "HasAns_exact": 0.0,
    "HasAns_f1": 40.0,
    "HasAns_total": 2,
    "NoAns_exact": 50.0,
    "NoAns_f1": 50.0,
    "NoAns_total": 2,
}
# thresh 0.7: h1 (0.9) and n2 (0.8) become "no answer" -> h1 0, n2 1.
# sweep from 2 (both NoAns right): h2 +0.8 (F1) / +0 (EM), n1 +0, n2 -1, h1 +0.
V2_THRESH = {
    "exact": 50.0,
    "f1": 70.0,
    "total": 4,
    "HasAns_exact": 0.0,
    "HasAns_f1": 40.0,
    "HasAns_total": 2,
    "NoAns_exact": 100.0,
    "NoAns_f1": 100.0,
    "NoAns_total": 2,
    "best_exact": 50.0,
    "best_exact_thresh": 0.0,
    "best_f1": 70.0,
    "best_f1_thresh": 0.2,
}


def _assert_scores(result: dict, expected: dict) -> None:
    """Same keys in the same order, numbers equal up to float rounding."""
    assert list(result) == list(expected)
    assert result == pytest.approx(expected)


def test_score_v2_without_na_probs() -> None:
    _assert_scores(score_v2(V2_GOLD, V2_PREDS), V2_PLAIN)


def test_score_v2_with_na_probs_and_threshold() -> None:
    _assert_scores(score_v2(V2_GOLD, V2_PREDS, V2_NA_PROBS, na_prob_thresh=0.7), V2_THRESH)


def test_score_v2_default_threshold_keeps_answers() -> None:
    result = score_v2(V2_GOLD, V2_PREDS, V2_NA_PROBS)
    assert {key: result[key] for key in V2_PLAIN} == pytest.approx(V2_PLAIN)


@pytest.mark.parametrize(
    ("na_probs", "best_exact", "best_thresh"),
    [
        # sorted: b(0.1) +0 -> 1, n(0.5) -1 -> 0, a(0.5) +1 -> 1: never above the start (1)
        ({"n": 0.5, "a": 0.5, "b": 0.1}, 100 / 3, 0.0),
        # same values, a before n in the file: b -> 1, a -> 2 (new best at 0.5), n -> 1
        ({"a": 0.5, "n": 0.5, "b": 0.1}, 200 / 3, 0.5),
        # an equal running score does not move the threshold: b -> 1, n -> 0, a -> 1
        ({"b": 0.1, "n": 0.2, "a": 0.6}, 100 / 3, 0.0),
    ],
)
def test_best_threshold_ties_follow_na_prob_order(na_probs: dict, best_exact: float, best_thresh: float) -> None:
    result = score_v2({"a": ["x"], "b": ["y"], "n": []}, {"a": "x", "b": "wrong", "n": "junk"}, na_probs)
    assert result["best_exact"] == pytest.approx(best_exact)
    assert result["best_exact_thresh"] == best_thresh


def test_score_v2_gold_that_normalizes_to_nothing_is_still_answerable() -> None:
    # "The" is a gold answer (HasAns) but is dropped for scoring, leaving the empty answer
    _assert_scores(
        score_v2({"q": ["The"]}, {"q": ""}),
        {"exact": 100.0, "f1": 100.0, "total": 1, "HasAns_exact": 100.0, "HasAns_f1": 100.0, "HasAns_total": 1},
    )


def test_score_v2_missing_prediction_is_an_error() -> None:
    with pytest.raises(MissingPredictionsError, match=r"2 of 4 questions: h2, n1"):
        score_v2(V2_GOLD, {"h1": "x", "n2": ""})


def test_score_v2_missing_na_prob_is_an_error() -> None:
    with pytest.raises(MissingPredictionsError, match=r"no-answer probability for 1 of 4 questions: n2"):
        score_v2(V2_GOLD, V2_PREDS, {"h1": 0.1, "h2": 0.1, "n1": 0.1})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.3", None, True])
def test_score_v2_rejects_na_probs_that_are_not_finite_numbers(bad) -> None:
    """A NaN compares false both ways: it would count as "answered" and make best_f1_thresh NaN."""
    with pytest.raises(ScoreInputError, match=r"n1") as caught:
        score_v2(V2_GOLD, V2_PREDS, {**V2_NA_PROBS, "n1": bad})
    assert "NaN or infinite" in str(caught.value) or "not numbers" in str(caught.value)


@pytest.mark.parametrize("bad", [None, 3, ["Norman"], {"text": "Norman"}])
def test_scorers_reject_answers_that_are_not_strings(bad) -> None:
    for score in (lambda p: score_v2(V2_GOLD, p), lambda p: score_v1({"h1": ["Norman"]}, p)):
        # ValueError: metrics/squad's copy of squad_common is another module object (evaluate needs the file)
        with pytest.raises(ValueError, match=r"not strings.*h1") as caught:
            score({**V2_PREDS, "h1": bad})
        assert type(caught.value).__name__ == "ScoreInputError"


def test_score_v1_refuses_v2_data() -> None:
    with pytest.raises(ValueError, match=r"2 question\(s\) have no gold answer.*squad_v2/compute_score.py"):
        score_v1(V2_GOLD, V2_PREDS)


# ---------------------------------------------------------------- command lines


def _official_json(gold: dict[str, list[str]], version: str) -> dict:
    """The nested SQuAD file layout, one question per paragraph."""
    paragraphs = [
        {
            "context": "ctx",
            "qas": [{"id": qid, "question": "?", "answers": [{"text": t, "answer_start": 0} for t in texts]}],
        }
        for qid, texts in gold.items()
    ]
    return {"version": version, "data": [{"title": "t", "paragraphs": paragraphs}]}


def _write(path: Path, obj: object) -> str:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


def _run(cli: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(cli), *args], check=False, capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def v2_files(tmp_path: Path) -> dict[str, str]:
    return {
        "data": _write(tmp_path / "dev.json", _official_json(V2_GOLD, "v2.0")),
        "pred": _write(tmp_path / "pred.json", V2_PREDS),
        "na": _write(tmp_path / "na.json", V2_NA_PROBS),
    }


@pytest.mark.slow
@pytest.mark.parametrize("which,content,words", [
    ("na", {**V2_NA_PROBS, "n1": float("nan")}, ("na.json", "NaN or infinite", "n1")),
    ("na", {qid: float("nan") for qid in V2_NA_PROBS}, ("na.json", "NaN or infinite")),
    ("pred", {**V2_PREDS, "h2": 10}, ("pred.json", "not strings", "h2")),
    ("pred", ["Norman"], ("pred.json", "must map question ids")),
    ("data", {"version": "v2.0"}, ("dev.json", "no 'data' list")),
])
def test_v2_cli_bad_input_is_one_clear_line(tmp_path: Path, v2_files: dict[str, str], which, content, words) -> None:
    Path(v2_files[which]).write_text(json.dumps(content))  # json writes NaN as NaN, as Python's json reads it
    done = _run(V2_CLI, v2_files["data"], v2_files["pred"], "-n", v2_files["na"], cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr and not done.stdout
    for word in words:
        assert word in done.stderr, done.stderr


@pytest.mark.slow
def test_v1_cli_refuses_v2_data(tmp_path: Path, v2_files: dict[str, str]) -> None:
    done = _run(V1_CLI, v2_files["data"], v2_files["pred"], cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "no gold answer" in done.stderr and "squad_v2/compute_score.py" in done.stderr


@pytest.mark.slow
def test_v2_cli_plain(tmp_path: Path, v2_files: dict[str, str]) -> None:
    done = _run(V2_CLI, v2_files["data"], v2_files["pred"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('{\n  "exact": ')  # json.dumps(indent=2), as the official
    _assert_scores(json.loads(done.stdout), V2_PLAIN)


@pytest.mark.slow
def test_v2_cli_na_probs_and_out_file(tmp_path: Path, v2_files: dict[str, str]) -> None:
    out = tmp_path / "eval.json"
    done = _run(
        V2_CLI, v2_files["data"], v2_files["pred"], "-n", v2_files["na"], "-t", "0.7", "-o", str(out), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    _assert_scores(json.loads(out.read_text(encoding="utf-8")), V2_THRESH)


@pytest.mark.slow
def test_v2_cli_image_dir_adds_the_ap_keys(tmp_path: Path, v2_files: dict[str, str]) -> None:
    done = _run(V2_CLI, v2_files["data"], v2_files["pred"], "-n", v2_files["na"], "-p", str(tmp_path / "img"), "-v",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert list(json.loads(done.stdout)) == [*V2_THRESH, "pr_exact_ap", "pr_f1_ap", "pr_oracle_ap"]


@pytest.mark.slow
def test_v2_cli_missing_prediction_fails(tmp_path: Path, v2_files: dict[str, str]) -> None:
    pred = _write(tmp_path / "partial.json", {"h1": "x", "h2": "y", "n1": ""})
    done = _run(V2_CLI, v2_files["data"], pred, cwd=tmp_path)
    assert done.returncode != 0
    assert "1 of 4 questions: n2" in done.stderr
    assert done.stdout == ""


@pytest.mark.slow
def test_v1_cli(tmp_path: Path) -> None:
    gold = {"q1": ["Denver Broncos"], "q2": ["«Été» 1999"], "q3": ["blue sky"]}
    data = _write(tmp_path / "dev.json", _official_json(gold, "1.1"))
    pred = _write(tmp_path / "pred.json", {"q1": "the denver broncos", "q2": "été"})
    done = _run(V1_CLI, data, pred, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # q1 exact; q2 [été] vs [«été», 1999]: '«' is kept so no overlap -> 0; q3 missing -> 0
    assert json.loads(done.stdout) == {"exact_match": pytest.approx(100 / 3), "f1": pytest.approx(100 / 3)}
    assert "\n" not in done.stdout.strip()  # single-line json.dumps, as the official
    assert done.stderr == "Unanswered question q3 will receive score 0.\n"


@pytest.mark.slow
def test_v1_cli_warns_about_dataset_version(tmp_path: Path) -> None:
    data = _write(tmp_path / "dev.json", _official_json({"q": ["x"]}, "v2.0"))
    done = _run(V1_CLI, data, _write(tmp_path / "pred.json", {"q": "x"}), cwd=tmp_path)
    assert done.returncode == 0
    assert "Evaluation expects v-1.1, but got dataset with v-v2.0" in done.stderr
    assert json.loads(done.stdout) == {"exact_match": 100.0, "f1": 100.0}


# ---------------------------------------------------------------- evaluate.load

_EVALUATE_SCRIPT = """
import json, os, sys
import evaluate
repo, other_cwd, gold, preds, probs = sys.argv[1], sys.argv[2], *map(json.loads, sys.argv[3:6])
refs = [{"id": k, "answers": {"text": v, "answer_start": [0] * len(v)}} for k, v in gold.items()]
os.chdir(repo)
v2 = evaluate.load("metrics/squad_v2")
inputs = [{"id": k, "prediction_text": preds[k], "no_answer_probability": probs[k]} for k in gold]
out = {"v2": v2.compute(predictions=inputs, references=refs, no_answer_threshold=0.7)}
os.chdir(other_cwd)
v1 = evaluate.load(os.path.join(repo, "metrics", "squad"))
answered = [r for r in refs if r["answers"]["text"]]
v1_inputs = [{"id": r["id"], "prediction_text": preds[r["id"]]} for r in answered]
out["v1"] = v1.compute(predictions=v1_inputs, references=answered)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_evaluate_load_offline_matches_cli(tmp_path: Path, v2_files: dict[str, str]) -> None:
    """Fresh module cache, offline, loaded from the repo root and from another cwd."""
    na_in_gold_order = {qid: V2_NA_PROBS[qid] for qid in V2_GOLD}
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    args = [str(REPO), str(tmp_path), json.dumps(V2_GOLD), json.dumps(V2_PREDS), json.dumps(na_in_gold_order)]
    done = subprocess.run(
        [sys.executable, "-c", _EVALUATE_SCRIPT, *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])

    na_file = _write(tmp_path / "na_gold_order.json", na_in_gold_order)
    cli_v2 = _run(V2_CLI, v2_files["data"], v2_files["pred"], "-n", na_file, "-t", "0.7", cwd=tmp_path)
    assert loaded["v2"] == json.loads(cli_v2.stdout)
    _assert_scores(loaded["v2"], V2_THRESH)

    answered = {qid: texts for qid, texts in V2_GOLD.items() if texts}
    data_v1 = _write(tmp_path / "dev1.json", _official_json(answered, "1.1"))
    cli_v1 = _run(V1_CLI, data_v1, v2_files["pred"], cwd=tmp_path)
    assert loaded["v1"] == json.loads(cli_v1.stdout)
    assert loaded["v1"] == pytest.approx({"exact_match": 0.0, "f1": 40.0})


# ---------------------------------------------------------------- official dev sets


def _shared_gold(name: str) -> dict[str, list[str]]:
    path = SHARED_SQUAD / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return gold_from_dataset(read_json(str(path))["data"])


def test_dev_v2_gold_answers_score_100() -> None:
    gold = _shared_gold("dev-v2.0.json")
    result = score_v2(gold, {qid: answers[0] if answers else "" for qid, answers in gold.items()})
    assert result["total"] == len(gold)
    assert result["exact"] == result["f1"] == result["HasAns_exact"] == result["HasAns_f1"] == 100.0


def test_dev_v2_all_empty_scores_the_unanswerable_share() -> None:
    gold = _shared_gold("dev-v2.0.json")
    result = score_v2(gold, dict.fromkeys(gold, ""))
    assert result["exact"] == result["f1"] == 50.07159100480081
    assert result["HasAns_exact"] == 0.0 and result["NoAns_exact"] == 100.0


def test_dev_v1_gold_answers_score_100() -> None:
    gold = _shared_gold("dev-v1.1.json")
    assert score_v1(gold, {qid: answers[0] for qid, answers in gold.items()}) == {"exact_match": 100.0, "f1": 100.0}
