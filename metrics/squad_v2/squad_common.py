"""Answer normalization, EM and F1 shared by the SQuAD v1.1 and v2.0 scorers.

The rules are those of the official evaluate-v1.1.py / evaluate-v2.0.py scripts, applied
with the same float operations in the same order, so our scores match theirs to the last
digit. Standard library only: this file is also run from a plain script and copied by
`evaluate.load` next to the metric scripts. It lives in metrics/squad_v2/ and
metrics/squad/squad_common.py is a symlink to it (evaluate only copies same-directory
imports), so there is a single implementation.

With a `language` (docs/languages.md), answers are normalized by MLQA's published per-language rules
(Lewis et al. 2020, mlqa_evaluation_v1.py) instead, extended to the other XQuAD and TyDi QA languages by one
table, LANGUAGES; EM and F1 are computed from the normalized answers in the same way.
"""

import argparse
import json
import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Any, NamedTuple

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


class LanguageRule(NamedTuple):
    """How one language's answers are normalized with `language` (the table of docs/languages.md)."""

    articles: tuple[str, ...] = ()  # removed (replaced by a space) as whole words, by a Unicode-aware \b
    articles_in_words: bool = False  # removed wherever they occur instead: MLQA's Arabic rule, as published
    char_tokens: tuple[tuple[int, int], ...] = ()  # code point ranges whose characters are each one token


_CJK = ((0x4E00, 0x9FA5),)  # MLQA's CJK ideographs
LANGUAGES: dict[str, LanguageRule] = {
    # MLQA's seven languages, with its rules
    "en": LanguageRule(("a", "an", "the")),
    "es": LanguageRule(("un", "una", "unos", "unas", "el", "la", "los", "las")),
    "de": LanguageRule(("ein", "eine", "einen", "einem", "eines", "einer", "der", "die", "das", "den", "dem", "des")),
    "vi": LanguageRule(("của", "là", "cái", "chiếc", "những")),
    "ar": LanguageRule(("ال",), articles_in_words=True),
    "hi": LanguageRule(),
    "zh": LanguageRule(char_tokens=_CJK),
    # the other XQuAD and TyDi QA languages: written without spaces, a character is a token; else whitespace
    "ja": LanguageRule(char_tokens=((0x3040, 0x309F), (0x30A0, 0x30FF), *_CJK)),  # Hiragana, Katakana, CJK
    "th": LanguageRule(char_tokens=((0x0E00, 0x0E7F),)),  # the Thai block
    **{code: LanguageRule() for code in ("ko", "el", "ro", "ru", "tr", "bn", "fi", "id", "sw", "te")},
}


def check_language(language: str | None) -> None:
    """None (SQuAD's English rules) or a language of LANGUAGES: any other would silently score by no rule."""
    if language is not None and not (isinstance(language, str) and language in LANGUAGES):
        raise ScoreInputError(f"unknown language {language!r}; the known languages are {', '.join(LANGUAGES)} "
                              "(docs/languages.md); leave the language out for SQuAD's official English rules")


def add_language_argument(parser: argparse.ArgumentParser) -> None:
    """--language, the same on both command lines."""
    parser.add_argument(
        "--language", metavar="LANG",
        help=f"Normalize answers by MLQA's rules for this language ({', '.join(LANGUAGES)}; see docs/languages.md) "
        "instead of SQuAD's English rules.",
    )


@cache
def _language_patterns(language: str) -> tuple[re.Pattern | None, re.Pattern | None]:
    """The language's articles and its one-character tokens as regular expressions, compiled once."""
    check_language(language)
    rule = LANGUAGES[language]
    words = "|".join(map(re.escape, rule.articles))
    articles = None if not words else re.compile(words if rule.articles_in_words else rf"\b({words})\b")
    ranges = "".join(f"{chr(first)}-{chr(last)}" for first, last in rule.char_tokens)
    return articles, re.compile(f"[{ranges}]") if ranges else None


@cache
def _is_punctuation(char: str) -> bool:
    """MLQA's punctuation: every character of a Unicode P* category, and ASCII's string.punctuation (which
    also holds the symbols $ + < = > ^ ` | ~)."""
    return char in _PUNCTUATION or unicodedata.category(char).startswith("P")


def _normalize_for_language(text: str, language: str) -> str:
    """MLQA's order: lower case, punctuation out, articles out, then the tokens joined by single spaces.

    MLQA's Chinese tokenizer also makes each punctuation character a token; none is left by then.
    """
    articles, char_tokens = _language_patterns(language)
    kept = "".join(char for char in text.lower() if not _is_punctuation(char))
    if articles is not None:
        kept = articles.sub(" ", kept)
    if char_tokens is not None:
        kept = char_tokens.sub(r" \g<0> ", kept)
    return " ".join(kept.split())


def normalize_answer(text: str, language: str | None = None) -> str:
    """Lower-case, drop ASCII punctuation and whole-word articles, collapse whitespace.

    Only string.punctuation is removed, so non-ASCII marks such as '«' or '—' stay,
    exactly as in the official scripts. With a language: MLQA's rules for it instead.
    """
    if language is not None:
        return _normalize_for_language(text, language)
    kept = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", kept).split())


def answer_tokens(text: str, language: str | None = None) -> list[str]:
    """Whitespace tokens of the normalized answer, the unit F1 counts."""
    return normalize_answer(text, language).split()


def exact_match(prediction: str, gold: str, language: str | None = None) -> int:
    """1 when prediction and gold normalize to the same string, else 0."""
    return int(normalize_answer(prediction, language) == normalize_answer(gold, language))


def token_f1(prediction: str, gold: str, *, empty_is_no_answer: bool, language: str | None = None) -> float:
    """Harmonic mean of token precision and recall over the multiset overlap.

    v2.0 (empty_is_no_answer=True) reads an empty side as "no answer": 1 when both are
    empty, else 0. v1.1 has no such case: anything without overlap scores 0.
    """
    pred_tokens = answer_tokens(prediction, language)
    gold_tokens = answer_tokens(gold, language)
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
