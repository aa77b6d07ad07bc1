"""Answer normalization, EM and F1 shared by the SQuAD v1.1 and v2.0 scorers.

The rules are those of the official evaluate-v1.1.py / evaluate-v2.0.py scripts, applied
with the same float operations in the same order, so our scores match theirs to the last
digit. Standard library only: this file is also run from a plain script and copied by
`evaluate.load` next to the metric scripts. It lives in metrics/squad_v2/ and
metrics/squad/squad_common.py is a symlink to it (evaluate only copies same-directory
imports), so there is a single implementation.
"""

import json
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


def read_json(path: str) -> Any:
    """Load a JSON file as UTF-8 whatever the locale (the SQuAD files contain non-ASCII text)."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def gold_from_dataset(articles: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Flatten the official nested SQuAD 'data' list to id -> gold answer texts, in file order."""
    return {
        qa["id"]: [answer["text"] for answer in qa["answers"]]
        for article in articles
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    }


def gold_from_references(references: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Map evaluate-style references {id, answers: {text, answer_start}} to id -> gold texts."""
    return {reference["id"]: list(reference["answers"]["text"]) for reference in references}


def predictions_by_id(predictions: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Map evaluate-style predictions {id, prediction_text, ...} to id -> text, in input order."""
    return {prediction["id"]: prediction["prediction_text"] for prediction in predictions}
