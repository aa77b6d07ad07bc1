"""Plain-loop oracles of the answer assembly (`qakit.answers.assemble`): the obvious loop over every window and
candidate for each head, written independently of the vectorized path the tool ships. The tests hold the tool's
answers to these; `benchmarks/bench_postprocess.py` uses the span loop as its baseline.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from qakit.alignment import trim
from qakit.answers import NO_SPAN_ODDS, QAPredictions
from qakit.generative import Generated, decode_answers
from qakit.windows import WindowIndex


def windows_by_question(windows: WindowIndex) -> dict[int, list[int]]:
    """Each question's windows, in order."""
    by_example: dict[int, list[int]] = {}
    for w, e in enumerate(windows.example_index.tolist()):
        by_example.setdefault(e, []).append(w)
    return by_example


def best_spans(spans: list[dict[str, Any]], context: str, n_best_size: int) -> list[dict[str, Any]]:
    """The `n_best_size` best-scoring spans (ties in order found), their edges stripped of whitespace."""
    spans = sorted(spans, key=lambda p: -p["score"])[:n_best_size]
    for p in spans:
        p["offsets"] = list(trim(context, *p["offsets"]))
        p["text"] = context[p["offsets"][0]:p["offsets"][1]]
    return spans


def insert_null(entries: list[dict[str, Any]], row: dict[str, Any]) -> None:
    """The null answer goes before the first entry that scores below it (entries are best first)."""
    at = next((i for i, p in enumerate(entries) if p["score"] < row["score"]), len(entries))
    entries.insert(at, row)


def add_probabilities(entries: list[dict[str, Any]]) -> None:
    """Each n-best entry's probability: the softmax of the listed scores, as HF's n-best files have it."""
    top = max((p["score"] for p in entries), default=0.0)
    total = sum(math.exp(p["score"] - top) for p in entries)
    for p in entries:
        p["probability"] = math.exp(p["score"] - top) / total


def answer_with_null(entries: list[dict[str, Any]], null_row: dict[str, Any] | None, best: str,
                     odds: dict[str, float], qid: str, threshold: float) -> str:
    """A question's answer, its n-best list finished: with v2 (`null_row` given) the null answer goes in, the odds
    are its score minus the best entry's (NO_SPAN_ODDS without one) and decide against the threshold; then the
    probabilities."""
    answer = best
    if null_row is not None:
        top = entries[0]["score"] if entries else None
        insert_null(entries, null_row)
        odds[qid] = null_row["score"] - top if top is not None else NO_SPAN_ODDS
        answer = "" if odds[qid] > threshold else best
    add_probabilities(entries)
    return answer


def postprocess_reference(ids: list[str], contexts: list[str], windows: WindowIndex, start_logits: list,
                          end_logits: list, context_end: list[int], null_index: list[int], n_best_size: int,
                          max_answer_length: int, version_2_with_negative: bool,
                          null_score_diff_threshold: float = 0.0) -> QAPredictions:
    """The obvious loop over every window and start/end pair; the oracle `postprocess` must equal."""
    by_example = windows_by_question(windows)
    preds, best, odds, nbest = {}, {}, {}, {}
    for e, qid in enumerate(ids):
        spans, null_score = [], math.inf
        for w in by_example.get(e, []):
            s, t = start_logits[w], end_logits[w]
            cs, ce = int(windows.context_start[w]), context_end[w]
            char_starts, char_ends = windows.offsets(w)
            null_score = min(null_score, float(s[null_index[w]]) + float(t[null_index[w]]))
            starts = sorted(range(cs, ce), key=lambda i: -float(s[i]))[:n_best_size]
            ends = sorted(range(cs, ce), key=lambda i: -float(t[i]))[:n_best_size]
            for i in starts:
                for j in ends:
                    if j < i or j - i + 1 > max_answer_length:
                        continue
                    spans.append({"offsets": [int(char_starts[i - cs]), int(char_ends[j - cs])],
                                  "start_logit": float(s[i]), "end_logit": float(t[j]),
                                  "score": float(s[i]) + float(t[j])})
        spans = best_spans(spans, contexts[e], n_best_size)
        best[qid] = spans[0]["text"] if spans else ""
        entries = list(spans)
        null_row = {"text": "", "offsets": [0, 0], "start_logit": None, "end_logit": None, "score": null_score}
        preds[qid] = answer_with_null(entries, null_row if version_2_with_negative else None, best[qid], odds, qid,
                                      null_score_diff_threshold)
        nbest[qid] = entries
    return QAPredictions(preds, best, odds, nbest)


def _log64_of_32(p: float) -> float:
    """log p as `beam_candidates` takes it (float64, then float32), for one plain number."""
    p = float(p)
    value = math.log(p) if p > 0 else (-math.inf if p == 0 else math.nan)
    return float(np.float32(value))


def postprocess_beam_reference(ids: list[str], contexts: list[str], windows: WindowIndex,
                               start_top_log_probs: Sequence, start_top_index: Sequence,
                               end_top_log_probs: Sequence, end_top_index: Sequence, cls_logits: Sequence,
                               context_end: Sequence[int], n_best_size: int, max_answer_length: int,
                               version_2_with_negative: bool, null_score_diff_threshold: float = 0.0) -> QAPredictions:
    """The obvious loop over every window, start rank and end rank; the oracle the vectorized path must equal.

    Null odds are the smallest answerability logit over the question's windows; n-best lists hold spans only.
    """
    by_example = windows_by_question(windows)
    preds, best, odds, nbest = {}, {}, {}, {}
    for e, qid in enumerate(ids):
        spans, null = [], math.inf
        for w in by_example.get(e, []):
            cs, ce = int(windows.context_start[w]), int(context_end[w])
            char_starts, char_ends = windows.offsets(w)
            null = min(null, float(cls_logits[w]))
            n_start = len(start_top_index[w])
            for i in range(n_start):
                a, ls = int(start_top_index[w][i]), _log64_of_32(start_top_log_probs[w][i])
                for j in range(len(end_top_index[w]) // n_start):
                    k = j * n_start + i  # the (E, S) layout: see the module docstring
                    b, le = int(end_top_index[w][k]), _log64_of_32(end_top_log_probs[w][k])
                    if not (cs <= a <= b < ce and b - a + 1 <= max_answer_length and math.isfinite(ls + le)):
                        continue
                    spans.append({"offsets": [int(char_starts[a - cs]), int(char_ends[b - cs])],
                                  "start_logit": ls, "end_logit": le, "score": ls + le})
        spans = best_spans(spans, contexts[e], n_best_size)
        best[qid] = spans[0]["text"] if spans else ""
        preds[qid] = best[qid]
        if version_2_with_negative:
            odds[qid] = NO_SPAN_ODDS if null == math.inf else null
            preds[qid] = "" if odds[qid] > null_score_diff_threshold else best[qid]
        add_probabilities(spans)
        nbest[qid] = spans
    return QAPredictions(preds, best, odds, nbest)


def _generated_offsets(context: str, text: str, window: tuple[int, int]) -> list[int] | None:
    """Where the answer appears in its window's part of the context, if it does (it need not)."""
    at = context.find(text, *window)
    return [at, at + len(text)] if at >= 0 else None


def postprocess_generated(ids: list[str], contexts: list[str], windows: WindowIndex, gen: Generated, tokenizer: Any,
                          n_best_size: int, version_2_with_negative: bool,
                          null_score_diff_threshold: float = 0.0) -> QAPredictions:
    """Per question: its windows' answers ranked by score (one entry per distinct text, ties to the earlier
    window and beam), the empty answer scored from the window most sure there is an answer (the minimum,
    as for span heads), and the same predictions, null odds and n-best lists a span head gives."""
    texts = decode_answers(tokenizer, gen.tokens)
    r = gen.scores.shape[1]
    by_question = windows_by_question(windows)
    preds, best, odds, nbest = {}, {}, {}, {}
    for e, qid in enumerate(ids):
        found: dict[str, tuple[float, int]] = {}
        for w in by_question.get(e, []):
            for k in range(r):
                text, score = texts[w * r + k], float(gen.scores[w, k])
                if text and math.isfinite(score) and (text not in found or score > found[text][0]):
                    found[text] = (score, w)
        ranked = sorted(found.items(), key=lambda item: -item[1][0])[:n_best_size]
        entries = []
        for text, (score, w) in ranked:
            starts, ends = windows.offsets(w)
            span = (int(starts[0]), int(ends[-1])) if len(starts) else (0, 0)
            entries.append({"text": text, "offsets": _generated_offsets(contexts[e], text, span), "score": score})
        best[qid] = entries[0]["text"] if entries else ""
        null_row = None
        if version_2_with_negative:
            null_row = {"text": "", "offsets": [0, 0], "score": min(float(gen.null_score[w]) for w in by_question[e])}
        preds[qid] = answer_with_null(entries, null_row, best[qid], odds, qid, null_score_diff_threshold)
        nbest[qid] = entries
    return QAPredictions(preds, best, odds, nbest)


# ------------------------------------------------------------------------------------------------------------------
# MLQA's answer scoring, the oracle of the scorers' `language` rules (metrics/, docs/languages.md): written from
# MLQA's published evaluation script (Lewis et al. 2020, mlqa_evaluation_v1.py) as plain loops, sharing nothing
# with metrics/; the languages MLQA lacks follow docs/languages.md.

import string  # noqa: E402
import sys  # noqa: E402
import unicodedata  # noqa: E402
from collections import Counter  # noqa: E402
from functools import lru_cache  # noqa: E402

MLQA_ARTICLES = {
    "en": ["a", "an", "the"],
    "es": ["un", "una", "unos", "unas", "el", "la", "los", "las"],
    "de": ["ein", "eine", "einen", "einem", "eines", "einer", "der", "die", "das", "den", "dem", "des"],
    "vi": ["của", "là", "cái", "chiếc", "những"],
}
# characters that are each a token on their own, as (first, last) code points; punctuation is one too (MLQA)
SEGMENTED = {
    "zh": [(0x4E00, 0x9FA5)],
    "ja": [(0x3040, 0x309F), (0x30A0, 0x30FF), (0x4E00, 0x9FA5)],
    "th": [(0x0E00, 0x0E7F)],
}


@lru_cache(maxsize=1)
def mlqa_punctuation() -> frozenset[str]:
    """Every character whose Unicode category starts with P, and string.punctuation: MLQA's set, built as MLQA
    builds it (once: it walks every code point)."""
    marks = set(string.punctuation)
    for code in range(sys.maxunicode):
        if unicodedata.category(chr(code)).startswith("P"):
            marks.add(chr(code))
    return frozenset(marks)


def _is_word_char(char: str) -> bool:
    """What Python's Unicode regular expressions call a word character (\\w): the edge of a whole word."""
    return char.isalnum() or char == "_"


def drop_whole_words(text: str, words: list[str]) -> str:
    """Each of `words` (tried in order at each place) standing as a whole word, i.e. not preceded or followed by a
    word character, replaced by one space; scanned left to right like a regular expression's substitution."""
    out = []
    i = 0
    while i < len(text):
        found = None
        if i == 0 or not _is_word_char(text[i - 1]):
            for word in words:
                end = i + len(word)
                if text[i:end] == word and (end == len(text) or not _is_word_char(text[end])):
                    found = word
                    break
        if found is None:
            out.append(text[i])
            i += 1
        else:
            out.append(" ")
            i += len(found)
    return "".join(out)


def mlqa_segment(text: str, language: str) -> list[str]:
    """MLQA's mixed segmentation: a character of the language's ranges or a punctuation mark is a token by itself,
    the runs between them are split on whitespace; other languages split on whitespace only."""
    ranges = SEGMENTED.get(language)
    if ranges is None:
        return text.split()
    tokens = []
    run = ""
    for char in text:
        alone = char in mlqa_punctuation()
        for first, last in ranges:
            if first <= ord(char) <= last:
                alone = True
        if alone:
            tokens.extend(run.split())
            run = ""
            tokens.append(char)
        else:
            run += char
    tokens.extend(run.split())
    return tokens


def mlqa_normalize(text: str, language: str) -> str:
    """Lower case, punctuation removed, the language's articles replaced by a space (Arabic: "ال" wherever it
    is), then the tokens that are not blank joined by single spaces."""
    text = text.lower()
    text = "".join(char for char in text if char not in mlqa_punctuation())
    if language == "ar":
        text = text.replace("ال", " ")
    elif language in MLQA_ARTICLES:
        text = drop_whole_words(text, MLQA_ARTICLES[language])
    tokens = [token for token in mlqa_segment(text, language) if token.strip() != ""]
    return " ".join(tokens)


def mlqa_f1(prediction: str, gold: str, language: str) -> float:
    """Token-overlap F1 of the normalized answers' whitespace tokens, 0 without overlap."""
    pred_tokens = mlqa_normalize(prediction, language).split()
    gold_tokens = mlqa_normalize(gold, language).split()
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def mlqa_evaluate(gold: dict[str, list[str]], preds: dict[str, str], language: str) -> dict[str, float]:
    """MLQA's evaluate(): the best EM and F1 over each question's gold answers, a missing prediction 0, in %."""
    exact = f1 = 0.0
    for qid, answers in gold.items():
        if qid not in preds:
            continue
        exact += max(float(mlqa_normalize(preds[qid], language) == mlqa_normalize(a, language)) for a in answers)
        f1 += max(mlqa_f1(preds[qid], a, language) for a in answers)
    return {"exact_match": 100.0 * exact / len(gold), "f1": 100.0 * f1 / len(gold)}


def mlqa_v2_question(prediction: str, answers: list[str], language: str) -> tuple[float, float]:
    """One question's EM and F1 by SQuAD v2.0's rules on MLQA's normalization: gold answers that normalize to
    nothing are dropped (none left: the question is scored against ""), and an empty side scores 1 only against an
    empty other side."""
    targets = [a for a in answers if mlqa_normalize(a, language) != ""]
    if not targets:
        targets = [""]
    pred = mlqa_normalize(prediction, language)
    best_exact = best_f1 = 0.0
    for target in targets:
        gold = mlqa_normalize(target, language)
        best_exact = max(best_exact, float(pred == gold))
        if pred == "" or gold == "":
            best_f1 = max(best_f1, float(pred == gold))
        else:
            best_f1 = max(best_f1, mlqa_f1(prediction, target, language))
    return best_exact, best_f1
