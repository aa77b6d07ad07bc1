"""Property-based: generated SQuAD-like files and predictions give scores in [0, 100] or our own clear
errors, never a traceback from somewhere inside."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import squad_v2
from metrics.squad.compute_score import score_v1
from metrics.squad_v2.compute_score import score_v2

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 50), st.floats(allow_nan=True), text)
anything = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(text, inner, max_size=3)), max_leaves=6)


def maybe(value_strategy):
    """A field as it should be, or something else, or missing (None stands for missing)."""
    return st.one_of(value_strategy, value_strategy, anything, st.none())


@st.composite
def squad_files(draw) -> object:
    """The official layout with each field possibly wrong, and sometimes not SQuAD at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(anything)
    contexts = draw(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=3))
    paragraphs = []
    for n, context in enumerate(contexts):
        qas = []
        for j in range(draw(st.integers(0, 3))):
            start = draw(st.integers(-2, len(context) + 2))
            answer = {"text": draw(maybe(st.just(context[max(start, 0):max(start, 0) + 3]))),
                      "answer_start": draw(maybe(st.just(start)))}
            qa = {"id": draw(maybe(st.just(f"q{n}-{j}"))), "question": draw(maybe(text)),
                  "answers": draw(maybe(st.just([answer]) | st.just([]))),
                  "is_impossible": draw(maybe(st.booleans()))}
            qas.append({k: v for k, v in qa.items() if v is not None})
        paragraphs.append({"context": draw(maybe(st.just(context))), "qas": qas})
    return {"version": draw(maybe(st.just("v2.0"))), "data": [{"title": draw(maybe(text)), "paragraphs": paragraphs}]}


@FUZZ
@given(squad_files(), st.sampled_from(squad_v2.ROLES))
def test_loader_reads_or_names_the_problem(content, role):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.json"
        path.write_text(json.dumps(content), encoding="utf-8")
        try:
            ds, report = squad_v2.read_squad_file(str(path), role)
        except squad_v2.SquadFormatError as err:
            assert "fuzz.json" in str(err)
            return
        assert len(ds) == report.questions >= 1
        assert set(ds.column_names) == set(squad_v2.FEATURES)


gold_answers = st.lists(st.text(max_size=10), max_size=3)
golds = st.dictionaries(st.text(min_size=1, max_size=4), gold_answers, min_size=1, max_size=6)
prediction_value = st.one_of(text, text, text, st.none(), st.integers(), st.lists(text, max_size=1))
odds_value = st.one_of(st.floats(-5, 5), st.floats(-5, 5), st.floats(allow_nan=True), st.integers(-3, 3),
                       st.booleans(), text)


def _in_range(result: dict) -> None:
    for key, value in result.items():
        assert isinstance(value, (int, float)) and math.isfinite(value), key
        if not key.endswith("thresh") and not key.endswith("total"):
            assert 0.0 <= value <= 100.0, (key, value)


@FUZZ
@given(golds, st.data())
def test_v2_scores_are_percentages_or_a_clear_error(gold, data):
    ids = list(gold) + data.draw(st.lists(st.text(min_size=1, max_size=4), max_size=2))
    preds = {qid: data.draw(prediction_value) for qid in data.draw(st.lists(st.sampled_from(ids), max_size=8))}
    odds = {qid: data.draw(odds_value) for qid in ids} if data.draw(st.booleans()) else None
    try:
        result = score_v2(gold, preds, odds, data.draw(st.floats(-2, 2)))
    except ValueError as err:  # ScoreInputError and MissingPredictionsError
        assert type(err).__name__ in ("ScoreInputError", "MissingPredictionsError")
        return
    _in_range(result)
    assert json.loads(json.dumps(result, allow_nan=False)) == result  # valid JSON: no NaN anywhere


@FUZZ
@given(golds, st.data())
def test_v1_scores_are_percentages_or_a_clear_error(gold, data):
    preds = {qid: data.draw(prediction_value) for qid in data.draw(st.lists(st.sampled_from(list(gold)), max_size=8))}
    try:
        result = score_v1(gold, preds)
    except ValueError as err:
        assert type(err).__name__ == "ScoreInputError"
        return
    _in_range(result)
