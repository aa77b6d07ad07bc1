"""Start/end logits back to answers: per-window candidates, per-question answers, n-best, output files.

Each window's best spans are found on the device, batch by batch, inside the evaluation loop
(`top_candidates`), so only O(n_best) numbers per window leave it; they are combined per question
(`postprocess`) with array operations. `postprocess_reference` is the plain loop over every start/end
pair: the oracle for tests and the baseline for the benchmark.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from qakit.alignment import trim
from qakit.errors import QARunError
from qakit.files import write_atomic, write_json
from qakit.windows import WindowIndex

NO_SPAN_ODDS = 1e9  # null odds written for a question with no valid span (JSON has no infinity)
QUESTION_BLOCK = 4096  # questions post-processed / written at a time: temporaries stay this size at any scale


@dataclass
class AnswerSettings:
    """The post-processing flags, as HF's run_qa names them."""

    n_best_size: int = 20
    max_answer_length: int = 30
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0


# --------------------------------------------------------------------------------------------
# Candidate spans per window (runs on the device, inside the evaluation loop)
# --------------------------------------------------------------------------------------------


@dataclass
class Candidates:
    """Each window's `n` best valid spans, best first, and its null score.

    Ranked exactly as the plain loop ranks them: by start + end logit (in float64), ties going to the
    better-ranked start, then end, where starts and ends are ranked by a stable descending sort.
    """

    start_index: np.ndarray  # [N, n] int32 token positions; -1 where the window has fewer valid spans
    end_index: np.ndarray  # [N, n]
    start_logit: np.ndarray  # [N, n] float32 logits as the model gave them
    end_logit: np.ndarray  # [N, n]
    null_score: np.ndarray  # [N] float64: start + end logit at the window's null position
    nonfinite: np.ndarray  # [N] bool: a NaN or infinite logit in the context or at the null position


def _top_k_stable(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest values per row, ties going to the lower index: a stable descending sort's first k.

    `topk` alone is fast but picks arbitrarily among equal values at the cut, so the cut is redone by
    index, and only the k survivors are sorted stably.
    """
    n, length = x.shape
    k = min(k, length)
    kth = torch.topk(x, k, dim=1).values[:, -1:]
    above, tied = x > kth, x == kth
    need = k - above.sum(1, keepdim=True)
    take = above | (tied & (tied.cumsum(1) <= need))
    index = take.nonzero()[:, 1].view(n, k)  # row-major, so ascending positions within each row
    values = x.gather(1, index)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return values.gather(1, order), index.gather(1, order)


def _pad_columns(x: torch.Tensor, k: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, k - x.shape[1]), value=value) if x.shape[1] < k else x


def top_candidates(start_logits: torch.Tensor, end_logits: torch.Tensor, context_start: torch.Tensor,
                   context_end: torch.Tensor, null_index: torch.Tensor, n_best: int,
                   max_answer_length: int) -> tuple[torch.Tensor, ...]:
    """Each window's `n_best` best valid spans and its null score, from one batch of logits.

    Only O(n_best) numbers per window leave the device, so what evaluation keeps and gathers across
    processes grows with the number of windows, not with windows x sequence length.
    """
    length = start_logits.shape[1]
    pos = torch.arange(length, device=start_logits.device)[None, :]
    outside = (pos < context_start[:, None]) | (pos >= context_end[:, None])
    masked = [x.float().nan_to_num(nan=float("-inf")).masked_fill(outside, float("-inf"))  # a NaN is never best
              for x in (start_logits, end_logits)]
    sv, si = _top_k_stable(masked[0], n_best)
    ev, ei = _top_k_stable(masked[1], n_best)
    span = ei[:, None, :] - si[:, :, None] + 1
    score = sv.double()[:, :, None] + ev.double()[:, None, :]  # the oracle adds in float64
    ok = (span >= 1) & (span <= max_answer_length) & torch.isfinite(score)
    flat = score.masked_fill(~ok, float("-inf")).flatten(1)  # row-major: ties keep (start rank, end rank) order
    best, pair = _top_k_stable(flat, n_best)
    k = si.shape[1]
    a, b = pair // k, pair % k
    valid = torch.isfinite(best)
    out = [si.gather(1, a).masked_fill(~valid, -1).int(), ei.gather(1, b).masked_fill(~valid, -1).int(),
           sv.gather(1, a).masked_fill(~valid, float("-inf")), ev.gather(1, b).masked_fill(~valid, float("-inf"))]
    out = [_pad_columns(t, n_best, -1 if t.dtype == torch.int32 else float("-inf")) for t in out]
    rows = torch.arange(start_logits.shape[0], device=start_logits.device)
    null = start_logits[rows, null_index].double() + end_logits[rows, null_index].double()
    bad = ~(torch.isfinite(start_logits) & torch.isfinite(end_logits)) & ~outside
    return (*out, null, bad.any(1) | ~torch.isfinite(null))


def candidates_from_arrays(arrays: tuple[np.ndarray, ...]) -> Candidates:
    si, ei, sv, ev, null, nonfinite = arrays
    return Candidates(si.astype(np.int32, copy=False), ei.astype(np.int32, copy=False),
                      sv.astype(np.float32, copy=False), ev.astype(np.float32, copy=False),
                      null.astype(np.float64, copy=False), nonfinite.astype(bool, copy=False))


def check_finite(cand: Candidates, example_index: np.ndarray, ids: list[str], shown: int = 5) -> None:
    """NaN or infinite logits would end as "no answer" everywhere with a plausible-looking score: refuse."""
    bad = np.flatnonzero(cand.nonfinite)
    if len(bad):
        questions = list(dict.fromkeys(ids[e] for e in example_index[bad].tolist()))
        raise QARunError(
            f"the model gave NaN or infinite logits for {len(bad)} of {len(cand.nonfinite)} windows (windows "
            f"{', '.join(map(str, bad[:shown].tolist()))}{', ...' if len(bad) > shown else ''}; questions "
            f"{', '.join(questions[:shown])}{', ...' if len(questions) > shown else ''}): its weights or the "
            "training diverged (check the loss; with --fp16 try --bf16 or full precision); nothing was written")


# --------------------------------------------------------------------------------------------
# Answers per question
# --------------------------------------------------------------------------------------------


def _without_gc(fn):
    """Building ~10^5 small dicts triggers repeated full collections of a large heap; they find nothing."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()
    return wrapper


@dataclass
class NBest:
    """Every question's n-best list in columns, rows grouped by question, best first.

    Kept as arrays until a file is written or a caller asks for `to_dict()`: turning ~10^5 rows into
    dicts costs more than finding them.
    """

    ids: list[str]
    contexts: list[str]
    example: np.ndarray  # [R] question of each row, ascending
    char_start: np.ndarray  # [R]
    char_end: np.ndarray
    start_logit: np.ndarray  # float32 as the model gave them; NaN on a null row
    end_logit: np.ndarray
    score: np.ndarray  # float64
    probability: np.ndarray
    is_null: np.ndarray

    @classmethod
    def allocate(cls, ids: list[str], contexts: list[str], n_rows: int) -> "NBest":
        """Columns for `n_rows` rows, filled block by block: no concatenated copy of the whole."""
        return cls(ids, contexts, *(np.empty(n_rows, dtype) for dtype in (
            np.int32, np.int32, np.int32, np.float32, np.float32, np.float64, np.float64, bool)))

    def fill(self, rows: slice, *columns: np.ndarray) -> None:
        """Columns in field order, from `example` on."""
        for f, values in zip(dataclasses.fields(self)[2:], columns, strict=True):
            getattr(self, f.name)[rows] = values

    def items(self, block: int = QUESTION_BLOCK) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """(id, n-best list) per question; rows become Python objects `block` questions at a time, since
        all of them at once would take several times the memory of the arrays."""
        bounds = np.searchsorted(self.example, np.arange(len(self.ids) + 1)).tolist()
        for lo in range(0, len(self.ids), block):
            hi = min(lo + block, len(self.ids))
            r0, r1 = bounds[lo], bounds[hi]
            cs, ce, sl, el, sc, p, null = (a[r0:r1].tolist() for a in (
                self.char_start, self.char_end, self.start_logit, self.end_logit, self.score, self.probability,
                self.is_null))
            for e in range(lo, hi):
                rows = []
                for r in range(bounds[e] - r0, bounds[e + 1] - r0):
                    if null[r]:
                        row = {"text": "", "offsets": [0, 0], "start_logit": None, "end_logit": None}
                    else:
                        row = {"text": self.contexts[e][cs[r]:ce[r]], "offsets": [cs[r], ce[r]],
                               "start_logit": sl[r], "end_logit": el[r]}
                    row["score"], row["probability"] = sc[r], p[r]
                    rows.append(row)
                yield self.ids[e], rows

    @_without_gc
    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        return dict(self.items())


@dataclass
class QAPredictions:
    """What the post-processing produces for each question id."""

    predictions: dict[str, str]  # thresholded answer ("" = no answer)
    best_spans: dict[str, str]  # best non-empty span, whatever the null score
    null_odds: dict[str, float]  # null score minus best span score (v2 only; beam head: the null score itself)
    nbest: NBest | dict[str, list[dict[str, Any]]]

    def nbest_dict(self) -> dict[str, list[dict[str, Any]]]:
        return self.nbest.to_dict() if isinstance(self.nbest, NBest) else self.nbest


_SPACE = np.array([chr(c).isspace() for c in range(0x3001)])  # no code point above U+3000 is whitespace


def _space_mask(text: str) -> np.ndarray:
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return _SPACE[np.minimum(codes, len(_SPACE) - 1)] & (codes < len(_SPACE))


def _strip_spans(contexts: list[str], question: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
    """`strip_span` on every row, in place: whitespace at the edges is found with array operations, and
    only the (few) rows that have some are visited one by one."""
    if not len(start):
        return
    questions, row_question = np.unique(question, return_inverse=True)
    slot: dict[str, int] = {}  # one mask per distinct context: SQuAD asks ~10 questions per paragraph
    masks: list[np.ndarray] = []
    question_slot = np.empty(len(questions), dtype=np.int64)
    for k, q in enumerate(questions.tolist()):
        text = contexts[q]
        if text not in slot:
            slot[text] = len(masks)
            masks.append(_space_mask(text))
        question_slot[k] = slot[text]
    base = np.concatenate([[0], np.cumsum([len(m) for m in masks])])[question_slot[row_question]]
    flat = np.concatenate(masks)
    edge = np.zeros(len(start), dtype=bool)
    some = end > start
    edge[some] = flat[base[some] + start[some]] | flat[base[some] + end[some] - 1]
    for r in np.flatnonzero(edge).tolist():
        start[r], end[r] = trim(contexts[question[r]], int(start[r]), int(end[r]))


def _group_softmax(scores: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    top = np.full(n_groups, -np.inf)
    np.maximum.at(top, groups, scores)
    exp = np.exp(scores - top[groups])
    return exp / np.bincount(groups, weights=exp, minlength=n_groups)[groups]


@_without_gc
def postprocess(ids: list[str], contexts: list[str], windows: WindowIndex, cand: Candidates, n_best_size: int,
                version_2_with_negative: bool, null_score_diff_threshold: float = 0.0,
                block: int = QUESTION_BLOCK, null_is_odds: bool = False) -> QAPredictions:
    """Best answers per question from every window's candidate spans, with array operations only.

    Same result as `postprocess_reference`: spans ranked by start + end logit over all windows of a
    question, ties going to the earlier window and then to the window's own order. Questions are taken
    `block` at a time into n-best columns sized up front, so the temporaries stay the same size however
    many questions there are. `null_is_odds` is for the beam-search head (`qakit.beam`), whose null score
    is an answerability logit, not a span score: the odds are the smallest one itself, and the n-best
    lists get no null row (as `qakit.beam.postprocess_beam_reference`).
    """
    n_questions = len(ids)
    spans_per_window = (cand.start_index >= 0).sum(1)
    n_spans = np.minimum(np.bincount(windows.example_index, weights=spans_per_window, minlength=n_questions),
                         n_best_size).astype(np.int64)
    null_rows = version_2_with_negative and not null_is_odds
    row_bounds = np.concatenate([[0], np.cumsum(n_spans + null_rows)])
    nbest = NBest.allocate(ids, contexts, int(row_bounds[-1]))
    by_question = np.argsort(windows.example_index, kind="stable")  # each question's windows together, in order
    window_bounds = np.searchsorted(windows.example_index[by_question], np.arange(n_questions + 1))
    best_text: list[str] = []
    odds = np.empty(n_questions if version_2_with_negative else 0)
    for lo in range(0, n_questions, block):
        hi = min(lo + block, n_questions)
        rows = slice(row_bounds[lo], row_bounds[hi])
        text, block_odds = _answer_block(by_question[window_bounds[lo]:window_bounds[hi]], lo, hi - lo, windows,
                                         cand, n_best_size, version_2_with_negative, nbest, rows, null_is_odds)
        best_text += text
        if version_2_with_negative:
            odds[lo:hi] = block_odds
    if not version_2_with_negative:
        return QAPredictions(dict(zip(ids, best_text)), dict(zip(ids, best_text)), {}, nbest)
    odds_list = odds.tolist()
    preds = {qid: "" if o > null_score_diff_threshold else t for qid, o, t in zip(ids, odds_list, best_text)}
    return QAPredictions(preds, dict(zip(ids, best_text)), dict(zip(ids, odds_list)), nbest)


def _answer_block(win_of_block: np.ndarray, first: int, n_questions: int, windows: WindowIndex, cand: Candidates,
                  n_best_size: int, version_2_with_negative: bool, nbest: NBest,
                  rows: slice, null_is_odds: bool = False) -> tuple[list[str], np.ndarray | None]:
    """Questions first .. first + n_questions - 1: their best span texts and null odds; their n-best rows go
    into `nbest[rows]`."""
    w, rank = np.nonzero(cand.start_index[win_of_block] >= 0)
    win = win_of_block[w]
    sl, el = cand.start_logit[win, rank], cand.end_logit[win, rank]
    score = sl.astype(np.float64) + el.astype(np.float64)
    ex = windows.example_index[win] - first
    order = np.lexsort((rank, win, -score, ex))
    ex_sorted = ex[order]
    keep = order[np.arange(len(order)) - np.searchsorted(ex_sorted, ex_sorted, side="left") < n_best_size]
    win, rank, ex, score, sl, el = win[keep], rank[keep], ex[keep], score[keep], sl[keep], el[keep]
    char_start, char_end = windows.chars(win, cand.start_index[win, rank], cand.end_index[win, rank])
    contexts = nbest.contexts
    _strip_spans(contexts, ex + first, char_start, char_end)
    has_span = np.bincount(ex, minlength=n_questions) > 0
    best_row = np.searchsorted(ex, np.arange(n_questions))  # first (best) span row of each question
    best_text = [contexts[first + e][char_start[r]:char_end[r]] if has_span[e] else ""
                 for e, r in enumerate(best_row.tolist())]
    position = np.arange(len(ex)) - best_row[ex]  # rank within the question
    is_null = np.zeros(len(ex), dtype=bool)
    odds = None
    if version_2_with_negative:
        null = np.full(n_questions, np.inf)
        np.minimum.at(null, windows.example_index[win_of_block] - first, cand.null_score[win_of_block])
    if version_2_with_negative and null_is_odds:
        odds = np.where(null == np.inf, NO_SPAN_ODDS, null)  # inf: a question without windows
    elif version_2_with_negative:
        best_score = score[np.minimum(best_row, len(score) - 1)] if len(score) else np.zeros(n_questions)
        odds = np.where(has_span, null - best_score, NO_SPAN_ODDS)
        # the null answer goes before the first span that scores below it
        at = np.bincount(ex, weights=(score >= null[ex]), minlength=n_questions)
        nulls = np.arange(n_questions)
        ex, position, score = (np.concatenate(p) for p in ((ex, nulls), (position, at - 0.5), (score, null)))
        char_start, char_end = (np.concatenate([a, np.zeros(n_questions, a.dtype)]) for a in (char_start, char_end))
        sl, el = (np.concatenate([a, np.full(n_questions, np.nan, a.dtype)]) for a in (sl, el))
        is_null = np.concatenate([is_null, np.ones(n_questions, dtype=bool)])
        by_rank = np.lexsort((position, ex))
        ex, score, char_start, char_end, sl, el, is_null = (a[by_rank] for a in (ex, score, char_start, char_end,
                                                                                  sl, el, is_null))
    nbest.fill(rows, ex + first, char_start, char_end, sl, el, score, _group_softmax(score, ex, n_questions), is_null)
    return best_text, odds


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


@_without_gc
def postprocess_reference(ids: list[str], contexts: list[str], windows: WindowIndex, start_logits: list,
                          end_logits: list, context_end: list[int], null_index: list[int], n_best_size: int,
                          max_answer_length: int, version_2_with_negative: bool,
                          null_score_diff_threshold: float = 0.0) -> QAPredictions:
    """The obvious loop over every window and start/end pair; the oracle `postprocess` must equal."""
    by_example: dict[int, list[int]] = {}
    for w, e in enumerate(windows.example_index.tolist()):
        by_example.setdefault(e, []).append(w)
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
        spans = sorted(spans, key=lambda p: -p["score"])[:n_best_size]
        for p in spans:
            p["offsets"] = list(trim(contexts[e], *p["offsets"]))
            p["text"] = contexts[e][p["offsets"][0]:p["offsets"][1]]
        best[qid] = spans[0]["text"] if spans else ""
        entries = list(spans)
        if version_2_with_negative:
            insert_null(entries, {"text": "", "offsets": [0, 0], "start_logit": None, "end_logit": None,
                                  "score": null_score})
            odds[qid] = null_score - spans[0]["score"] if spans else NO_SPAN_ODDS
            preds[qid] = "" if odds[qid] > null_score_diff_threshold else best[qid]
        else:
            preds[qid] = best[qid]
        add_probabilities(entries)
        nbest[qid] = entries
    return QAPredictions(preds, best, odds, nbest)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _stream_nbest(preds: QAPredictions, f: Any) -> None:
    """One question at a time, so memory does not grow with the number of questions times n_best."""
    f.write("{")
    for i, (qid, rows) in enumerate(preds.nbest.items()):
        f.write(("," if i else "") + json.dumps(qid, ensure_ascii=False) + ":" + json.dumps(rows, ensure_ascii=False))
    f.write("}")


def write_predictions(preds: QAPredictions, output_dir: str, prefix: str) -> list[str]:
    """`<prefix>_predictions.json`, `_nbest_predictions.json` (compact: it is large), and for v2
    `_null_odds.json` with the best non-empty spans in `_span_predictions.json` (the pair the official v2
    scorer takes with --na-prob-file)."""
    os.makedirs(output_dir, exist_ok=True)
    small = {"predictions": preds.predictions}
    if preds.null_odds:
        small.update(null_odds=preds.null_odds, span_predictions=preds.best_spans)
    paths = []
    for name, obj in small.items():
        paths.append(os.path.join(output_dir, f"{prefix}_{name}.json"))
        write_json(paths[-1], obj)
    paths.append(os.path.join(output_dir, f"{prefix}_nbest_predictions.json"))
    write_atomic(paths[-1], lambda f: _stream_nbest(preds, f))
    return paths
