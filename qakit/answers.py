"""Candidate answers of every window -> each question's answer, n-best list and null odds: one assembly for
every head.

A head turns what its model gave into `CandidateRows` (a span head: its windows' best start/end pairs; the
beam-search head: its beam's pairs; a generative model: the answers it wrote), and `assemble` ranks them per
question over all of the question's windows, keeps the `n_best_size` best, adds the null answer, and decides
"no answer" by the threshold, with array operations, `QUESTION_BLOCK` questions at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from qakit.alignment import trim
from qakit.errors import QARunError
from qakit.windows import WindowIndex

NO_SPAN_ODDS = 1e9  # null odds written for a question with no candidate answer (JSON has no infinity)
QUESTION_BLOCK = 4096  # questions post-processed / written at a time: temporaries stay this size at any scale


@dataclass(frozen=True)
class AnswerSettings:
    """The post-processing flags, as HF's run_qa names them."""

    n_best_size: int = 20
    max_answer_length: int = 30
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0
    every_pair: bool = False  # span candidates from every (start, end) pair, as transformers' QA pipeline searched


def without_gc(fn):
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
class CandidateRows:
    """Every window's candidate answers, one row each, in window order and each window's best first.

    Span heads give token positions (`start_token`, `end_token`), turned into characters only for the rows
    kept; a generative model gives the texts it wrote (`texts`) with where each appears in its window
    (`char_start`, -1 where it does not). `tie` orders rows of equal score (default: the row's own place).
    """

    window: np.ndarray  # [R] window of each row
    score: np.ndarray  # [R] float64
    null_score: np.ndarray  # [N] per window: the null answer's score (the beam head: its answerability logit)
    start_logit: np.ndarray | None = None  # [R] float32, as the model gave them (span heads)
    end_logit: np.ndarray | None = None
    start_token: np.ndarray | None = None  # [R] (span heads)
    end_token: np.ndarray | None = None
    texts: list[str] | None = None  # [R] (generated answers)
    char_start: np.ndarray | None = None  # [R] (generated answers)
    char_end: np.ndarray | None = None
    tie: np.ndarray | None = None  # [R]
    null_is_odds: bool = False  # the null score is itself the odds (beam head): no null row in the n-best

    def take(self, rows: np.ndarray) -> "CandidateRows":
        """The rows at `rows` (windows' null scores unchanged)."""
        pick = {f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)
                if f.name not in ("null_score", "texts", "null_is_odds") and getattr(self, f.name) is not None}
        if self.texts is not None:
            pick["texts"] = [self.texts[r] for r in rows.tolist()]
        return dataclasses.replace(self, **pick)


def check_finite(nonfinite: np.ndarray, example_index: np.ndarray, ids: list[str], shown: int = 5) -> None:
    """NaN or infinite outputs would end as "no answer" everywhere with a plausible-looking score: refuse."""
    bad = np.flatnonzero(nonfinite)
    if len(bad):
        questions = list(dict.fromkeys(ids[e] for e in example_index[bad].tolist()))
        raise QARunError(
            f"the model gave NaN or infinite logits for {len(bad)} of {len(nonfinite)} windows (windows "
            f"{', '.join(map(str, bad[:shown].tolist()))}{', ...' if len(bad) > shown else ''}; questions "
            f"{', '.join(questions[:shown])}{', ...' if len(questions) > shown else ''}): its weights or the "
            "training diverged (check the loss; with --fp16 try --bf16 or full precision); nothing was written")


# --------------------------------------------------------------------------------------------
# The n-best lists
# --------------------------------------------------------------------------------------------


@dataclass
class NBest:
    """Every question's n-best list in columns, rows grouped by question, best first.

    Kept as arrays until a file is written or a caller asks for `to_dict()`: turning ~10^5 rows into
    dicts costs more than finding them. Rows of generated answers carry their text and no logits.
    """

    ids: list[str]
    contexts: list[str]
    example: np.ndarray  # [R] question of each row, ascending
    char_start: np.ndarray  # [R]; -1: a generated answer not found in its window
    char_end: np.ndarray
    start_logit: np.ndarray  # float32 as the model gave them; NaN on a null row
    end_logit: np.ndarray
    score: np.ndarray  # float64
    probability: np.ndarray
    is_null: np.ndarray
    texts: list[str] | None = None  # generated answers' texts ("" on a null row)

    @classmethod
    def allocate(cls, ids: list[str], contexts: list[str], n_rows: int, generated: bool) -> "NBest":
        """Columns for `n_rows` rows, filled block by block: no concatenated copy of the whole."""
        columns = (np.empty(n_rows, dtype) for dtype in (
            np.int32, np.int32, np.int32, np.float32, np.float32, np.float64, np.float64, bool))
        return cls(ids, contexts, *columns, texts=[""] * n_rows if generated else None)

    def fill(self, rows: slice, *columns: np.ndarray, texts: list[str] | None = None) -> None:
        """Columns in field order, from `example` to `is_null`."""
        for f, values in zip(dataclasses.fields(self)[2:10], columns, strict=True):
            getattr(self, f.name)[rows] = values
        if texts is not None:
            self.texts[rows] = texts

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
            texts = self.texts[r0:r1] if self.texts is not None else None
            for e in range(lo, hi):
                rows = []
                for r in range(bounds[e] - r0, bounds[e + 1] - r0):
                    if texts is not None:  # a generated answer: its text, where it was found (if it was)
                        row = {"text": texts[r], "offsets": [cs[r], ce[r]] if cs[r] >= 0 else None}
                    elif null[r]:
                        row = {"text": "", "offsets": [0, 0], "start_logit": None, "end_logit": None}
                    else:
                        row = {"text": self.contexts[e][cs[r]:ce[r]], "offsets": [cs[r], ce[r]],
                               "start_logit": sl[r], "end_logit": el[r]}
                    row["score"], row["probability"] = sc[r], p[r]
                    rows.append(row)
                yield self.ids[e], rows

    @without_gc
    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        return dict(self.items())


@dataclass
class QAPredictions:
    """What the post-processing produces for each question id."""

    predictions: dict[str, str]  # thresholded answer ("" = no answer)
    best_spans: dict[str, str]  # best non-empty answer, whatever the null score
    null_odds: dict[str, float]  # null score minus best answer score (v2 only; beam head: the null score itself)
    nbest: NBest | dict[str, list[dict[str, Any]]]

    def nbest_dict(self) -> dict[str, list[dict[str, Any]]]:
        return self.nbest.to_dict() if isinstance(self.nbest, NBest) else self.nbest


# --------------------------------------------------------------------------------------------
# The assembly
# --------------------------------------------------------------------------------------------


@without_gc
def assemble(ids: list[str], contexts: list[str], windows: WindowIndex, rows: CandidateRows,
             settings: AnswerSettings, block: int = QUESTION_BLOCK) -> QAPredictions:
    """Best answers per question from every window's candidate rows.

    Rows are ranked by score over all windows of a question, ties going to the earlier row (window, then
    the window's own order). With v2 the null answer's score is the smallest over the question's windows;
    the null odds are it minus the best answer's score (the beam head: the null score itself), the null
    answer enters the n-best list before the first row that scores below it, and a question answers ""
    when its odds are above the threshold.
    """
    n_questions, v2 = len(ids), settings.version_2_with_negative
    row_question = windows.example_index[rows.window]
    by_question = np.argsort(row_question, kind="stable")
    row_bounds = np.searchsorted(row_question[by_question], np.arange(n_questions + 1))
    kept = np.minimum(np.diff(row_bounds), settings.n_best_size)
    null_rows = v2 and not rows.null_is_odds
    out_bounds = np.concatenate([[0], np.cumsum(kept + null_rows)])
    nbest = NBest.allocate(ids, contexts, int(out_bounds[-1]), generated=rows.texts is not None)
    win_by_question = np.argsort(windows.example_index, kind="stable")
    window_bounds = np.searchsorted(windows.example_index[win_by_question], np.arange(n_questions + 1))
    best_text: list[str] = []
    odds = np.empty(n_questions if v2 else 0)
    for lo in range(0, n_questions, block):
        hi = min(lo + block, n_questions)
        block_rows = rows.take(by_question[row_bounds[lo]:row_bounds[hi]])
        block_windows = win_by_question[window_bounds[lo]:window_bounds[hi]]
        text, block_odds = _answer_block(block_rows, block_windows, lo, hi - lo, windows, settings, nbest,
                                         slice(out_bounds[lo], out_bounds[hi]))
        best_text += text
        if v2:
            odds[lo:hi] = block_odds
    if not v2:
        return QAPredictions(dict(zip(ids, best_text)), dict(zip(ids, best_text)), {}, nbest)
    odds_list = odds.tolist()
    threshold = settings.null_score_diff_threshold
    preds = {qid: "" if o > threshold else t for qid, o, t in zip(ids, odds_list, best_text)}
    return QAPredictions(preds, dict(zip(ids, best_text)), dict(zip(ids, odds_list)), nbest)


def _answer_block(rows: CandidateRows, block_windows: np.ndarray, first: int, n_questions: int,
                  windows: WindowIndex, settings: AnswerSettings, nbest: NBest,
                  out: slice) -> tuple[list[str], np.ndarray | None]:
    """Questions first .. first + n_questions - 1: their best texts and null odds; their n-best rows go into
    `nbest[out]`."""
    ex = windows.example_index[rows.window] - first
    tie = rows.tie if rows.tie is not None else np.arange(len(ex))
    order = np.lexsort((tie, -rows.score, ex))
    ex_sorted = ex[order]
    keep = order[np.arange(len(order)) - np.searchsorted(ex_sorted, ex_sorted, side="left") < settings.n_best_size]
    rows, ex = rows.take(keep), ex[keep]
    score = rows.score
    char_start, char_end = _characters(rows, ex + first, windows, nbest.contexts)
    has_answer = np.bincount(ex, minlength=n_questions) > 0
    best_row = np.searchsorted(ex, np.arange(n_questions))  # first (best) row of each question
    texts = rows.texts
    best_text = [("" if not has_answer[e] else texts[r] if texts is not None
                  else nbest.contexts[first + e][char_start[r]:char_end[r]]) for e, r in enumerate(best_row.tolist())]
    nan = np.full(len(ex), np.nan, np.float32)
    sl = rows.start_logit if rows.start_logit is not None else nan
    el = rows.end_logit if rows.end_logit is not None else nan
    is_null = np.zeros(len(ex), dtype=bool)
    odds = None
    if settings.version_2_with_negative:
        null = np.full(n_questions, np.inf)
        np.minimum.at(null, windows.example_index[block_windows] - first, rows.null_score[block_windows])
        if rows.null_is_odds:
            odds = np.where(null == np.inf, NO_SPAN_ODDS, null)  # inf: a question without windows
        else:
            best_score = score[np.minimum(best_row, len(score) - 1)] if len(score) else np.zeros(n_questions)
            odds = np.where(has_answer, null - best_score, NO_SPAN_ODDS)
            ex, score, char_start, char_end, sl, el, is_null, texts = _with_null_rows(
                null, ex, score, char_start, char_end, sl, el, is_null, texts)
    nbest.fill(out, ex + first, char_start, char_end, sl, el, score, _group_softmax(score, ex, n_questions), is_null,
               texts=texts)
    return best_text, odds


def _characters(rows: CandidateRows, question: np.ndarray, windows: WindowIndex,
                contexts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each kept row's characters: a span's are read from its tokens and stripped of edge whitespace."""
    if rows.texts is not None:
        return rows.char_start, rows.char_end
    char_start, char_end = windows.chars(rows.window, rows.start_token, rows.end_token)
    _strip_spans(contexts, question, char_start, char_end)
    return char_start, char_end


def _with_null_rows(null: np.ndarray, ex: np.ndarray, score: np.ndarray, *columns: Any) -> tuple:
    """Each question's null answer added before the first row that scores below it."""
    n_questions = len(null)
    at = np.bincount(ex, weights=(score >= null[ex]), minlength=n_questions)
    position = np.arange(len(ex)) - np.searchsorted(ex, ex, side="left")  # rank within the question
    questions = np.arange(n_questions)
    by_rank = np.lexsort((np.concatenate([position, at - 0.5]), np.concatenate([ex, questions])))
    out = [np.concatenate([ex, questions])[by_rank], np.concatenate([score, null])[by_rank]]
    for column in columns:
        if column is None:
            out.append(None)
        elif isinstance(column, list):  # generated texts; the null answer's is ""
            merged = column + [""] * n_questions
            out.append([merged[i] for i in by_rank.tolist()])
        else:  # the null rows' offsets 0, logits NaN, is_null True
            fill = True if column.dtype == bool else np.nan if column.dtype.kind == "f" else 0
            out.append(np.concatenate([column, np.full(n_questions, fill, column.dtype)])[by_rank])
    return tuple(out)


_SPACE = np.array([chr(c).isspace() for c in range(0x3001)])  # no code point above U+3000 is whitespace


def _space_mask(text: str) -> np.ndarray:
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return _SPACE[np.minimum(codes, len(_SPACE) - 1)] & (codes < len(_SPACE))


def _strip_spans(contexts: list[str], question: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
    """`alignment.trim` on every row, in place: whitespace at the edges is found with array operations, and
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
