"""Language-aware scoring (`language`, `--language`; docs/languages.md): MLQA's per-language normalization.

Expected numbers are worked out by hand in the comments, from MLQA's published rules (lower case → punctuation
out → articles out → tokens); the plain-loop oracle in reference.py (`mlqa_*`) is held to the scorers on XQuAD's
Chinese and German questions with generated predictions. Without a language the official rules apply unchanged
(test_metrics.py checks those against the official scripts).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from helpers import REPO, SHARED_SQUAD
from reference import mlqa_evaluate, mlqa_normalize, mlqa_v2_question

from metrics.scoring import score_answers
from metrics.squad.compute_score import score_v1
from metrics.squad_v2.compute_score import raw_scores, score_v2
from metrics.squad_v2.squad_common import LANGUAGES, LanguageRule, exact_match, normalize_answer, token_f1

SHARED_XQUAD = SHARED_SQUAD.parent / "xquad"
DOC = REPO / "docs" / "languages.md"
V1_CLI = REPO / "metrics" / "squad" / "compute_score.py"
V2_CLI = REPO / "metrics" / "squad_v2" / "compute_score.py"
COMPARED = ["zh", "de", "es", "ar", "hi", "vi", "en", "ja", "th", "ko"]  # the ones reference.py knows

# ---------------------------------------------------------------- normalization, by hand


@pytest.mark.parametrize(("language", "raw", "normalized"), [
    # zh: each CJK ideograph is a token; Latin letters and digits between them stay whole runs, split on spaces
    ("zh", "2008年北京奥运会", "2008 年 北 京 奥 运 会"),
    ("zh", "iPhone 4S手机", "iphone 4s 手 机"),
    ("zh", "「北京」。", "北 京"),  # CJK brackets and full stop are Unicode punctuation (Ps, Pe, Po)
    ("zh", "卡万·肖特", "卡 万 肖 特"),  # the middle dot U+00B7 is Po
    ("zh", "、— …", ""),  # punctuation only
    ("zh", "ＡＢＣ１２３", "ａｂｃ１２３"),  # full-width Latin and digits: outside U+4E00–U+9FA5, one run
    ("zh", "鿦鿦龥龥", "鿦鿦 龥 龥"),  # U+9FA5 is MLQA's last ideograph; U+9FA6 beyond it joins a run
    ("zh", "the 北京", "the 北 京"),  # Chinese has no articles
    # de: articles as whole words only (\b), after lower-casing and after punctuation is gone
    ("de", "Die Katze", "katze"),
    ("de", "dieser", "dieser"),  # "die" inside a word: no word boundary after it
    ("de", "EINE Frage des Kaisers", "frage kaisers"),
    ("de", "Der-Die-Das", "derdiedas"),  # the hyphens go first, leaving one word, no article
    ("de", "„das Boot“", "boot"),  # German quotes are Ps/Pf
    # es
    ("es", "¿El niño?", "niño"),
    ("es", "¡Las Ánforas de la ciudad!", "ánforas de ciudad"),  # "de" is no article
    ("es", "elefante unos", "elefante"),  # "el" inside a word stays
    ("es", "las", ""),
    # vi: the five MLQA removes, as whole words
    ("vi", "của những cái bàn", "bàn"),
    ("vi", "Là nhưng chiếc", "nhưng"),  # "nhưng" (but) is not "những"
    # ar: "ال" wherever it is, even inside a word, becomes a space (MLQA's rule as published)
    ("ar", "الكتاب", "كتاب"),
    ("ar", "فالمدينة", "ف مدينة"),  # inside a word: the word splits in two tokens
    ("ar", "مال", "م"),
    ("ar", "«ال»", ""),
    # hi: no articles; the danda is punctuation, the vowel signs are not
    ("hi", "भारत।", "भारत"),
    ("hi", "किताब", "किताब"),
    # en: SQuAD's articles, and all Unicode punctuation (SQuAD's own rules keep '«', '—', '…')
    ("en", "The «Paris» — Été…", "paris été"),
    ("en", "a-team", "ateam"),
    # ja: Hiragana, Katakana and CJK ideographs are tokens; the iteration mark U+3005 is none of them
    ("ja", "東京タワーへ", "東 京 タ ワ ー へ"),
    ("ja", "人々", "人 々"),
    # th: each character of the Thai block is a token (vowel signs included)
    ("th", "ภาษา ไทย", "ภ า ษ า ไ ท ย"),
    # ko and the other whitespace languages: lower case and punctuation only
    ("ko", "서울, 특별시", "서울 특별시"),
    ("el", "Η Αθήνα", "η αθήνα"),
    ("ru", "Москва, Россия!", "москва россия"),
])
def test_normalization_by_hand(language: str, raw: str, normalized: str) -> None:
    assert normalize_answer(raw, language) == normalized
    assert mlqa_normalize(raw, language) == normalized  # the oracle agrees


def test_default_rules_are_squads_own() -> None:
    """No language: SQuAD's rules, which keep non-ASCII punctuation and do not segment Chinese."""
    assert normalize_answer("The «Paris» — Été…") == normalize_answer("The «Paris» — Été…", None) == "«paris» — été…"
    assert normalize_answer("2008年北京奥运会") == "2008年北京奥运会"


# ---------------------------------------------------------------- EM and F1, by hand


@pytest.mark.parametrize(("language", "prediction", "gold", "em", "f1"), [
    # [北 京 奥 运] vs [2008 年 北 京 奥 运 会]: 4 shared, p = 1, r = 4/7 -> 2(4/7)/(11/7) = 8/11
    ("zh", "北京奥运", "2008年北京奥运会", 0, 8 / 11),
    # near miss, one character more: [卡 万 肖 特 将] vs [卡 万 肖 特]: p = 4/5, r = 1 -> 1.6/1.8 = 8/9
    ("zh", "卡万·肖特将", "卡万·肖特", 0, 8 / 9),
    # one character less: [万 肖 特] vs [卡 万 肖 特]: p = 1, r = 3/4 -> 1.5/1.75 = 6/7
    ("zh", "万·肖特", "卡万·肖特", 0, 6 / 7),
    # same two, SQuAD's rules: one token each side, different -> 0
    (None, "卡万·肖特将", "卡万·肖特", 0, 0.0),
    ("de", "die Katze", "Katze", 1, 1.0),
    # [dieser hund] vs [hund]: p = 1/2, r = 1 -> 2/3
    ("de", "dieser Hund", "der Hund", 0, 2 / 3),
    ("es", "¿el Museo del Prado?", "Museo del Prado", 1, 1.0),
    # [مدينة منورة] vs [مدينة]: p = 1/2, r = 1 -> 2/3
    ("ar", "المدينة المنورة", "مدينة", 0, 2 / 3),
    ("vi", "những cái bàn", "cái bàn", 1, 1.0),
    ("hi", "भारत।", "भारत", 1, 1.0),
    (None, "भारत।", "भारत", 0, 0.0),  # SQuAD's rules keep the danda
    ("en", "“The Broncos”", "Broncos", 1, 1.0),
    # SQuAD's rules: [“ broncos”] ("“the" loses "the" as a whole word) vs [broncos]: nothing shared
    (None, "“The Broncos”", "Broncos", 0, 0.0),
])
def test_em_and_f1_by_hand(language: str | None, prediction: str, gold: str, em: int, f1: float) -> None:
    assert exact_match(prediction, gold, language) == em
    for empty_is_no_answer in (False, True):
        assert token_f1(prediction, gold, empty_is_no_answer=empty_is_no_answer, language=language) == \
            pytest.approx(f1, abs=1e-12)


def test_punctuation_only_answers_normalize_to_nothing() -> None:
    """Both sides empty after normalization: v1.1 (as MLQA) EM 1 and F1 0 (no shared token); v2.0 drops the empty
    gold and scores against "", so EM 1 and F1 1. SQuAD's rules keep these marks: no match at all."""
    assert score_v1({"q": ["—"]}, {"q": "。」"}, language="zh") == {"exact_match": 100.0, "f1": 0.0}
    assert score_v1({"q": ["—"]}, {"q": "。」"}) == {"exact_match": 0.0, "f1": 0.0}
    v2 = score_v2({"q": ["—"]}, {"q": "。」"}, language="zh")
    assert (v2["exact"], v2["f1"], v2["HasAns_total"]) == (100.0, 100.0, 1)
    # v2: a prediction of punctuation only is "no answer" against a real gold answer: 0 and 0
    v2 = score_v2({"q": ["北京"]}, {"q": "¿¡"}, language="es")
    assert (v2["exact"], v2["f1"]) == (0.0, 0.0)


HAND_GOLD = {
    "es1": ["el Museo del Prado"], "es2": ["unas tres horas", "tres horas"],
    "ar1": ["المدينة المنورة"], "ar2": ["الكتاب"],
    "hi1": ["भारत गणराज्य"], "vi1": ["những cái bàn gỗ"],
    "en1": ["the Denver Broncos", "Broncos"], "en2": ["a man, a plan"],
    "zh1": ["2008年北京奥运会"], "no1": [], "no2": [],
}
HAND_PREDS = {
    "es1": "Museo del Prado, Madrid", "es2": "¡tres horas!", "ar1": "مدينة", "ar2": "كتاب قديم",
    "hi1": "भारत।", "vi1": "cái bàn", "en1": "“Denver”", "en2": "man plan canal", "zh1": "北京奥运",
    "no1": "", "no2": "—",
}
# with language "es": es1 [museo del prado madrid] vs [museo del prado]: p 3/4 r 1 -> 6/7; es2 [tres horas]
# exact (2nd gold; the 1st loses "unas" too); ar1 [مدينة] vs [مدينة منورة]: ar's rule is off for "es", so
# [مدينة] vs [المدينة المنورة]: 0; ar2 0; hi1 [भारत।] has lost its danda: [भारत] vs [भारत गणराज्य]: p 1 r 1/2 -> 2/3;
# vi1 no vi articles: [cái bàn] vs [những cái bàn gỗ]: p 1 r 1/2 -> 2/3; en1 [denver] vs [the denver broncos]
# (no en articles in es): p 1 r 1/3 -> 1/2; en2 [man plan canal] vs [a man a plan]: 2 shared, p 2/3 r 2/4 -> 4/7;
# zh1 one token each, different: 0. v1 over the 9 answerable: EM 1/9, F1 (6/7 + 1 + 2/3 + 2/3 + 1/2 + 4/7) / 9.
HAND_ES_V1 = {"exact_match": 100 / 9, "f1": 100 * (6 / 7 + 1 + 2 / 3 + 2 / 3 + 1 / 2 + 4 / 7) / 9}


def test_hand_set_scored_by_spanish_rules() -> None:
    answered = {qid: texts for qid, texts in HAND_GOLD.items() if texts}
    assert score_v1(answered, HAND_PREDS, language="es") == pytest.approx(HAND_ES_V1, abs=1e-9)
    # v2 adds no1 ("" vs no answer: 1, 1) and no2 ("—" normalizes to "": 1, 1): (EM 1 + 2) / 11
    v2 = score_v2(HAND_GOLD, HAND_PREDS, language="es")
    assert v2["exact"] == pytest.approx(100 * 3 / 11)
    assert v2["f1"] == pytest.approx((HAND_ES_V1["f1"] * 9 + 200) / 11)
    assert (v2["NoAns_exact"], v2["NoAns_f1"]) == (100.0, 100.0)


@pytest.mark.parametrize("language", COMPARED)
def test_hand_set_matches_the_oracle(language: str) -> None:
    _assert_matches_oracle(HAND_GOLD, HAND_PREDS, language)


# ---------------------------------------------------------------- unknown languages and the default


@pytest.mark.parametrize("language", ["xx", "ZH", "zh-cn", "", "english"])
def test_unknown_language_is_an_error_naming_the_known_ones(language: str) -> None:
    gold, preds = {"q": ["x"]}, {"q": "x"}
    for score in (lambda: score_v1(gold, preds, language=language), lambda: score_v2(gold, preds, language=language),
                  lambda: normalize_answer("x", language),
                  lambda: score_answers(["q"], [{"text": ["x"]}], preds, preds, {"q": 0.0}, True, 0.0,
                                        language=language)):
        with pytest.raises(ValueError, match=rf"unknown language '{re.escape(language)}'.*en, es, de, vi, ar, hi, zh"):
            score()


def test_no_language_gives_the_official_scores() -> None:
    answered = {qid: texts for qid, texts in HAND_GOLD.items() if texts}
    assert score_v1(answered, HAND_PREDS, language=None) == score_v1(answered, HAND_PREDS)
    assert score_v2(HAND_GOLD, HAND_PREDS, language=None) == score_v2(HAND_GOLD, HAND_PREDS)
    ids, answers = list(HAND_GOLD), [{"text": texts} for texts in HAND_GOLD.values()]
    odds = dict.fromkeys(HAND_GOLD, 0.0)
    assert score_answers(ids, answers, HAND_PREDS, HAND_PREDS, odds, True, 0.0) == \
        score_answers(ids, answers, HAND_PREDS, HAND_PREDS, odds, True, 0.0, language=None)
    # and "en" is not the default: Unicode punctuation goes ("“Denver”" now shares "denver" with en1)
    assert score_v1(answered, HAND_PREDS, language="en") != score_v1(answered, HAND_PREDS)


# ---------------------------------------------------------------- the oracle on XQuAD


class Question(NamedTuple):
    qid: str
    context: str
    start: int
    answers: list[str]


def xquad_questions(language: str) -> list[Question]:
    """XQuAD's questions in file order; the test skips when ../shared/data/xquad is not here."""
    path = SHARED_XQUAD / f"xquad.{language}.json"
    if not path.exists():
        pytest.skip(f"{path} not available")
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    return [Question(qa["id"], paragraph["context"], qa["answers"][0]["answer_start"],
                     [answer["text"] for answer in qa["answers"]])
            for article in data for paragraph in article["paragraphs"] for qa in paragraph["qas"]]


def near_miss(question: Question, k: int) -> str:
    """The first gold span one character longer (k even) or shorter (k odd), at its left edge (k % 4 < 2) or its
    right; a span at the context's edge grows on its other side."""
    text, context = question.answers[0], question.context
    start, end = question.start, question.start + len(question.answers[0])
    if k % 2:
        return text[1:] if k % 4 == 1 else text[:-1]
    if (k % 4 == 0 and start > 0) or end == len(context):
        return context[start - 1:end]
    return context[start:end + 1]


PUNCTUATION_ONLY = ["。、", "「」", "— …", "¿¡", "-", "·"]


def generated_predictions(questions: list[Question]) -> dict[str, str]:
    """One prediction per question, by its place k: near misses (k % 8 < 4), another question's gold (4),
    empty (5), punctuation only (6), the gold in CJK quotes among several languages' articles and Latin, digits
    and CJK text (7)."""
    predictions = {}
    for k, question in enumerate(questions):
        kind = k % 8
        if kind < 4:
            predictions[question.qid] = near_miss(question, k)
        elif kind == 4:
            predictions[question.qid] = questions[(k + 1) % len(questions)].answers[0]
        elif kind == 5:
            predictions[question.qid] = ""
        elif kind == 6:
            predictions[question.qid] = PUNCTUATION_ONLY[k % len(PUNCTUATION_ONLY)]
        else:
            predictions[question.qid] = f"「{question.answers[0]}」 The die la ال những iPhone4S 北京。"
    return predictions


def _assert_matches_oracle(gold: dict[str, list[str]], preds: dict[str, str], language: str) -> None:
    """Every text normalizes as in the oracle; v1.1 and v2.0 scores (direct and through score_answers) agree
    with it to 1e-9, per question and in total."""
    texts = {text for answers in gold.values() for text in answers} | set(preds.values())
    assert {text: normalize_answer(text, language) for text in texts} == \
        {text: mlqa_normalize(text, language) for text in texts}
    answered = {qid: answers for qid, answers in gold.items() if answers}
    expected_v1 = mlqa_evaluate(answered, preds, language)
    ids, answers = list(answered), [{"text": texts} for texts in answered.values()]
    for scores in (score_v1(answered, preds, language=language),
                   score_answers(ids, answers, preds, {}, {}, False, 0.0, language=language)):
        assert scores == pytest.approx(expected_v1, abs=1e-9, rel=0)
    expected_exact, expected_f1 = zip(*(mlqa_v2_question(preds[qid], answers, language)
                                        for qid, answers in gold.items()))
    exact, f1 = raw_scores(gold, preds, language=language)
    assert list(exact.values()) == pytest.approx(expected_exact, abs=1e-9, rel=0)
    assert list(f1.values()) == pytest.approx(expected_f1, abs=1e-9, rel=0)
    ids, answers = list(gold), [{"text": texts} for texts in gold.values()]
    v2 = score_answers(ids, answers, {}, preds, dict.fromkeys(gold, 0.0), True, 0.0, language=language)
    assert v2["exact"] == pytest.approx(100 * sum(expected_exact) / len(gold), abs=1e-9, rel=0)
    assert v2["f1"] == pytest.approx(100 * sum(expected_f1) / len(gold), abs=1e-9, rel=0)


@pytest.fixture(scope="module", params=["zh", "de"])
def xquad(request: pytest.FixtureRequest) -> tuple[dict[str, list[str]], dict[str, str]]:
    """XQuAD's gold answers, every tenth question made unanswerable (v2.0), and the generated predictions."""
    questions = xquad_questions(request.param)
    gold = {q.qid: [] if k % 10 == 9 else q.answers for k, q in enumerate(questions)}
    return gold, generated_predictions(questions)


@pytest.mark.parametrize("language", COMPARED)
def test_xquad_matches_the_oracle(xquad: tuple[dict[str, list[str]], dict[str, str]], language: str) -> None:
    _assert_matches_oracle(*xquad, language)


# ---------------------------------------------------------------- docs/languages.md


def doc_cells(rule: LanguageRule) -> tuple[str, str, str]:
    """A rule as docs/languages.md's table writes it: articles, where they go, tokens."""
    articles = " ".join(rule.articles) or "—"
    where = "—" if not rule.articles else "anywhere, even inside a word" if rule.articles_in_words else "whole words"
    ranges = ", ".join(f"U+{first:04X}–U+{last:04X}" for first, last in rule.char_tokens)
    tokens = f"one per character of {ranges}; whitespace between the others" if ranges else "whitespace"
    return articles, where, tokens


def doc_table() -> dict[str, tuple[str, str, str]]:
    """The rules table of docs/languages.md (the one whose header starts `| code |`): `code` -> (articles, where,
    tokens), its 3rd to 5th columns."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| code |")) + 2  # past the |---| line
    rows = {}
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = (cells[2], cells[3], cells[4])
    return rows


def test_doc_table_is_the_code_table() -> None:
    documented = doc_table()
    assert list(documented) == list(LANGUAGES)
    assert documented == {code: doc_cells(rule) for code, rule in LANGUAGES.items()}


NEAR_MISS_ROW = "| `{name}` | `{language}` | {plain[exact_match]:.2f} | {plain[f1]:.2f} | {ruled[exact_match]:.2f} | " \
    "{ruled[f1]:.2f} |"


@pytest.mark.parametrize("language", ["zh", "de"])
def test_doc_near_miss_figures(language: str) -> None:
    """docs/languages.md's measured near-miss scores: every question's first gold answer one character longer or
    shorter (near_miss), by SQuAD's rules and by the language's."""
    questions = xquad_questions(language)
    gold = {q.qid: q.answers for q in questions}
    preds = {q.qid: near_miss(q, k) for k, q in enumerate(questions)}
    row = NEAR_MISS_ROW.format(name=f"xquad.{language}.json", language=language, plain=score_v1(gold, preds),
                               ruled=score_v1(gold, preds, language=language))
    assert row in DOC.read_text(encoding="utf-8")


# ---------------------------------------------------------------- command lines and evaluate.load


def _official_json(gold: dict[str, list[str]], version: str) -> dict:
    """SQuAD's nested layout, one question per paragraph."""
    paragraphs = [{"context": "ctx", "qas": [{"id": qid, "question": "?",
                                               "answers": [{"text": t, "answer_start": 0} for t in texts]}]}
                  for qid, texts in gold.items()]
    return {"version": version, "data": [{"title": "t", "paragraphs": paragraphs}]}


@pytest.fixture
def hand_files(tmp_path: Path) -> dict[str, str]:
    answered = {qid: texts for qid, texts in HAND_GOLD.items() if texts}
    files = {"v1": _official_json(answered, "1.1"), "v2": _official_json(HAND_GOLD, "v2.0"), "pred": HAND_PREDS}
    for name, content in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return {name: str(tmp_path / f"{name}.json") for name in files}


def _run(cli: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(cli), *args], check=False, capture_output=True, text=True)


@pytest.mark.slow
def test_cli_language(hand_files: dict[str, str]) -> None:
    answered = {qid: texts for qid, texts in HAND_GOLD.items() if texts}
    done = _run(V1_CLI, hand_files["v1"], hand_files["pred"], "--language", "es")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == score_v1(answered, HAND_PREDS, language="es")
    done = _run(V2_CLI, hand_files["v2"], hand_files["pred"], "--language", "zh")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == score_v2(HAND_GOLD, HAND_PREDS, language="zh")


@pytest.mark.slow
@pytest.mark.parametrize("cli,data", [(V1_CLI, "v1"), (V2_CLI, "v2")])
def test_cli_unknown_language_is_one_line(hand_files: dict[str, str], cli: Path, data: str) -> None:
    done = _run(cli, hand_files[data], hand_files["pred"], "--language", "klingon")
    assert done.returncode == 1 and not done.stdout and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: unknown language 'klingon'; the known languages are en, es, de,")


_EVALUATE_SCRIPT = """
import json, sys
import evaluate
repo, gold, preds = sys.argv[1], *map(json.loads, sys.argv[2:4])
refs = [{"id": k, "answers": {"text": v, "answer_start": [0] * len(v)}} for k, v in gold.items()]
inputs = [{"id": k, "prediction_text": preds[k], "no_answer_probability": 0.0} for k in gold]
out = {"v2": evaluate.load(repo + "/metrics/squad_v2").compute(predictions=inputs, references=refs, language="ar")}
answered = [r for r in refs if r["answers"]["text"]]
v1_inputs = [{"id": r["id"], "prediction_text": preds[r["id"]]} for r in answered]
out["v1"] = evaluate.load(repo + "/metrics/squad").compute(predictions=v1_inputs, references=answered, language="ar")
try:
    evaluate.load(repo + "/metrics/squad").compute(predictions=v1_inputs, references=answered, language="xx")
except ValueError as error:
    out["error"] = str(error)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_evaluate_modules_take_a_language(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-c", _EVALUATE_SCRIPT, str(REPO), json.dumps(HAND_GOLD),
                           json.dumps(HAND_PREDS)], check=False, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    answered = {qid: texts for qid, texts in HAND_GOLD.items() if texts}
    assert loaded["v1"] == score_v1(answered, HAND_PREDS, language="ar")
    assert loaded["v2"] == score_v2(HAND_GOLD, HAND_PREDS, dict.fromkeys(HAND_GOLD, 0.0), language="ar")
    assert loaded["error"].startswith("unknown language 'xx'")
