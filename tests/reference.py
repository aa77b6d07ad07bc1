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
