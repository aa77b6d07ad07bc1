"""Answer normalization, EM and F1 shared by the SQuAD v1.1 and v2.0 scorers.

The rules are those of the official evaluate-v1.1.py / evaluate-v2.0.py scripts, applied
with the same float operations in the same order, so our scores match theirs to the last
digit. Standard library only: this file is also run from a plain script and copied by
`evaluate.load` next to the metric scripts. It lives in metrics/squad_v2/ and
metrics/squad/squad_common.py is a symlink to it (evaluate only copies same-directory
imports), so there is a single implementation.
"""

import json
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation and whole-word articles, collapse whitespace.

    Only string.punctuation is removed, so non-ASCII marks such as '«' or '—' stay,
    exactly as in the official scripts.
    """
    kept = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", kept).split())


def answer_tokens(text: str) -> list[str]:
    """Whitespace tokens of the normalized answer, the unit F1 counts."""
    return normalize_answer(text).split()


def exact_match(prediction: str, gold: str) -> int:
    """1 when prediction and gold normalize to the same string, else 0."""
    return int(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, *, empty_is_no_answer: bool) -> float:
    """Harmonic mean of token precision and recall over the multiset overlap.

    v2.0 (empty_is_no_answer=True) reads an empty side as "no answer": 1 when both are
    empty, else 0. v1.1 has no such case: anything without overlap scores 0.
    """
    pred_tokens = answer_tokens(prediction)
    gold_tokens = answer_tokens(gold)
    if empty_is_no_answer and not (pred_tokens and gold_tokens):
        return float(pred_tokens == gold_tokens)
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(pred_tokens)
    recall = 1.0 * num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def best_over_golds(metric: Callable[[str, str], float], prediction: str, golds: Iterable[str]) -> float:
    """A prediction is as good as its best match among the gold answers."""
    return max(metric(prediction, gold) for gold in golds)


_SHOWN = 5


class ScoreInputError(ValueError):
    """An input the scores cannot be computed from; the message names the file or ids and the fix."""


def shown_ids(ids: list) -> str:
    """The first few ids, for a message (ids given in Python may be integers)."""
    return ", ".join(map(str, ids[:_SHOWN])) + (", ..." if len(ids) > _SHOWN else "")


def read_json(path: str) -> Any:
    """Load a JSON file as UTF-8 whatever the locale (the SQuAD files contain non-ASCII text)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as error:
        raise ScoreInputError(f"cannot read {path}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise ScoreInputError(f"{path} line {error.lineno}, column {error.colno}: {error.msg} (not valid JSON)") from error
    except UnicodeDecodeError as error:
        raise ScoreInputError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from error
    except RecursionError as error:  # json recurses per level of [ or {
        raise ScoreInputError(f"{path} is nested too deeply to be read (over Python's recursion limit): it is not a "
                              "SQuAD data, prediction or no-answer file; check the path") from error
    except ValueError as error:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise ScoreInputError(f"{path} cannot be read as JSON ({str(error).split(';')[0]}); fix that number") from error


def read_gold(path: str) -> tuple[Any, dict[str, list[str]]]:
    """A SQuAD data file's version and its gold answers (id -> texts); one without questions leaves nothing to
    score (the official scripts divide by zero)."""
    dataset = read_json(path)
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise ScoreInputError(f"{path} has no 'data' list: it is not a SQuAD data file")
    gold = gold_from_dataset(dataset["data"], path)
    if not gold:
        raise ScoreInputError(f"{path} holds no questions: there is nothing to score; give the data file the "
                              "predictions were made for")
    return dataset.get("version"), gold


def gold_from_dataset(articles: list[dict[str, Any]], source: str = "the data file") -> dict[str, list[str]]:
    """Flatten the official nested SQuAD 'data' list to id -> gold answer texts, in file order. Ids are read as
    strings, as the keys of the prediction file (JSON) are: an integer id 7 is predicted as "7"."""
    try:
        return {
            str(qa["id"]): [answer["text"] for answer in qa["answers"]]
            for article in articles
            for paragraph in article["paragraphs"]
            for qa in paragraph["qas"]
        }
    except (KeyError, TypeError) as error:
        raise ScoreInputError(f"{source} is not in SQuAD's official layout (data -> paragraphs -> qas -> answers; "
                              f"missing or wrong: {error})") from error


def check_predictions(preds: Any, source: str = "the predictions") -> None:
    """Predictions must map question ids to answer strings ("" for no answer)."""
    if not isinstance(preds, Mapping):
        raise ScoreInputError(f"{source} must map question ids to answer texts, not a {type(preds).__name__}")
    bad = [qid for qid, text in preds.items() if not isinstance(text, str)]
    if bad:
        kinds = sorted({type(preds[qid]).__name__ for qid in bad})
        raise ScoreInputError(f"{source}: {len(bad)} answer(s) are not strings ({', '.join(kinds)}), e.g. ids "
                              f"{shown_ids(bad)}; an answer is a text, \"\" for no answer")


def check_na_probs(na_probs: Any, source: str = "the no-answer probabilities") -> None:
    """No-answer scores must be finite numbers: a NaN compares false both ways and would count as answered."""
    if not isinstance(na_probs, Mapping):
        raise ScoreInputError(f"{source} must map question ids to numbers, not a {type(na_probs).__name__}")
    bad = [qid for qid, p in na_probs.items() if isinstance(p, bool) or not isinstance(p, (int, float))]
    if bad:
        raise ScoreInputError(f"{source}: {len(bad)} value(s) are not numbers, e.g. ids {shown_ids(bad)}")
    odd = [qid for qid, p in na_probs.items() if not _finite_as_float(p)]
    if odd:
        raise ScoreInputError(f"{source}: {len(odd)} value(s) are NaN or infinite, e.g. ids {shown_ids(odd)}; "
                              "give finite numbers within a float's range (the model that wrote them gave "
                              "non-finite scores?)")


def _finite_as_float(number: float) -> bool:
    """Finite, also as a float: JSON reads a 400-digit integer exactly, and float() of it overflows."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def gold_from_references(references: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Map evaluate-style references {id, answers: {text, answer_start}} to id -> gold texts."""
    return {reference["id"]: list(reference["answers"]["text"]) for reference in references}


def predictions_by_id(predictions: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Map evaluate-style predictions {id, prediction_text, ...} to id -> text, in input order."""
    return {prediction["id"]: prediction["prediction_text"] for prediction in predictions}
