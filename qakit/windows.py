"""Questions to windows: each (question, context) becomes one or more model inputs.

A window holds the question and a stretch of at most `max_seq_length` tokens in all; consecutive windows
of one context overlap by `doc_stride` context tokens. Training windows carry the answer's first and last
token (or the window's null position when the answer is not wholly inside); evaluation windows carry
where their context tokens sit in the text, which `WindowIndex` reads back when answers are made.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from qakit.family import QAFamily

logger = logging.getLogger(__name__)

EVAL_META = ("offset_starts", "offset_ends", "example_index")  # bookkeeping kept out of the model's batches


def context_windows(n_tokens: int, budget: int, stride: int) -> Iterator[tuple[int, int]]:
    """Token ranges of the context, `budget` long, each overlapping the previous by `stride`."""
    start = 0
    while True:
        end = min(start + budget, n_tokens)
        yield start, end
        if end >= n_tokens:
            return
        start = end - stride


def _windows(examples: dict[str, list], family: QAFamily, max_seq_length: int, doc_stride: int):
    """Yield (example position in batch, window, context token range, context encoding) for a batch."""
    contexts = examples["context"]
    q_cap = family.max_question_tokens(max_seq_length, doc_stride)
    question_ids = _question_ids(examples["question"], family)
    unique = list(dict.fromkeys(contexts))  # SQuAD asks ~10 questions per paragraph: tokenize each once
    encoded = dict(zip(unique, family.encode(unique)))
    for i, (ids, starts, ends) in enumerate(encoded[c] for c in contexts):
        q_ids = question_ids[i][:q_cap]
        budget = max_seq_length - family.template.num_special - len(q_ids)
        for ws, we in context_windows(len(ids), budget, doc_stride):
            yield i, family.frame(q_ids, ids[ws:we]), (ws, we), (starts, ends)


def _question_ids(questions: list[str], family: QAFamily) -> list[list[int]]:
    return family.encode_ids([q.strip() for q in questions])  # leading spaces would only eat the window


def check_window_room(questions: list[str], ids: list[str], family: QAFamily, max_seq_length: int,
                      doc_stride: int, where: str) -> None:
    """Say once per split what the window settings do to these questions: how many are cut to fit, and
    whether the windows crawl (advance by a few tokens, so each context makes very many windows)."""
    q_cap = family.max_question_tokens(max_seq_length, doc_stride)
    lengths = [len(q) for q in _question_ids(questions, family)]
    cut = [qid for qid, n in zip(ids, lengths) if n > q_cap]
    if cut:
        logger.warning("%s: %d question(s) longer than %d tokens were cut to fit the window (first: %s)", where,
                       len(cut), q_cap, cut[0])
    longest = min(max(lengths, default=0), q_cap)
    room = max_seq_length - family.template.num_special - longest
    advance = room - doc_stride
    if advance < room / 4:
        logger.warning("%s: --max_seq_length %d with --doc_stride %d leaves %d context tokens next to the longest "
                       "question (%d tokens), so its windows advance by only %d token(s) and a context of T tokens "
                       "makes about T/%d windows: raise --max_seq_length or lower --doc_stride", where,
                       max_seq_length, doc_stride, room, longest, advance, advance)


def _model_columns(family: QAFamily, window) -> dict[str, Any]:
    row = {"input_ids": window.input_ids, "context_start": window.context_start,
           "context_end": window.context_end, "null_index": window.null_index}
    if family.uses_token_type_ids:
        row["token_type_ids"] = window.token_type_ids
    row.update(family.token_inputs(window))
    return row


def _append(columns: dict[str, list], row: dict[str, Any]) -> None:
    for key, value in row.items():
        columns.setdefault(key, []).append(value)


def _answer_tokens(answer_start: int, answer_text: str, starts: list[int], ends: list[int]) -> tuple[int, int]:
    """First and last context token of an answer, by character offsets."""
    first = max(bisect.bisect_right(starts, answer_start) - 1, 0)
    last = min(bisect.bisect_left(ends, answer_start + len(answer_text)), len(ends) - 1)
    return first, last


def prepare_train_features(examples: dict[str, list], family: QAFamily, max_seq_length: int,
                           doc_stride: int) -> dict[str, list]:
    """Windows labelled with the answer's token span, or the null position when it is not wholly inside."""
    out: dict[str, list] = {}
    for i, window, (ws, we), (starts, ends) in _windows(examples, family, max_seq_length, doc_stride):
        row = _model_columns(family, window)
        start_pos = end_pos = window.null_index
        answers = examples["answers"][i]
        if answers["text"] and starts:
            first, last = _answer_tokens(answers["answer_start"][0], answers["text"][0], starts, ends)
            if ws <= first and last < we:
                start_pos = window.context_start + first - ws
                end_pos = window.context_start + last - ws
        row["start_positions"], row["end_positions"] = start_pos, end_pos
        row["length"] = len(window.input_ids)  # lets length-grouped sampling skip reading every window
        _append(out, row)
    return out


def prepare_eval_features(examples: dict[str, list], indices: list[int], family: QAFamily,
                          max_seq_length: int, doc_stride: int) -> dict[str, list]:
    """Windows that remember their question (`example_index`) and their context tokens' offsets."""
    out: dict[str, list] = {}
    for i, window, (ws, we), (starts, ends) in _windows(examples, family, max_seq_length, doc_stride):
        row = _model_columns(family, window)
        row["example_index"] = indices[i]
        row["offset_starts"], row["offset_ends"] = starts[ws:we], ends[ws:we]
        _append(out, row)
    return out


# --------------------------------------------------------------------------------------------
# Windows' positions in the text
# --------------------------------------------------------------------------------------------


@dataclass
class WindowIndex:
    """Turns (window, token) into character offsets, reading the Arrow columns where they lie.

    The offsets stay in the blocks (record batches) of the features file, as views: one concatenated
    copy would cost as much memory as the offsets themselves, and grows with the data.
    """

    example_index: np.ndarray  # [N]
    context_start: np.ndarray  # [N] first context token of each window
    block: np.ndarray  # [N] which block holds the window's offsets
    base: np.ndarray  # [N] where they begin in that block
    length: np.ndarray  # [N] how many context tokens the window has
    char_start: list[np.ndarray]  # per block
    char_end: list[np.ndarray]

    @classmethod
    def from_features(cls, features: Any) -> "WindowIndex":
        """Read straight from the Arrow columns of an evaluation feature dataset (or a pyarrow Table)."""
        table = features.data.table if hasattr(features, "data") else features
        blocks = table.select(["offset_starts", "offset_ends"]).to_batches()  # both columns cut alike
        block, base, length = [], [], []
        for k, batch in enumerate(blocks):
            offsets = np.asarray(batch.column(0).offsets, dtype=np.int64)
            block.append(np.full(batch.num_rows, k, dtype=np.int32))
            base.append(offsets[:-1] - offsets[0])
            length.append(np.diff(offsets))
        flat = [(np.asarray(b.column(0).flatten()), np.asarray(b.column(1).flatten())) for b in blocks]
        join = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
        return cls(example_index=table.column("example_index").to_numpy(),
                   context_start=table.column("context_start").to_numpy(),
                   block=join(block, np.int32), base=join(base, np.int64), length=join(length, np.int64),
                   char_start=[s for s, _ in flat], char_end=[e for _, e in flat])

    def offsets(self, window: int) -> tuple[np.ndarray, np.ndarray]:
        """Start and end characters of one window's context tokens."""
        k, b = self.block[window], self.base[window]
        return self.char_start[k][b:b + self.length[window]], self.char_end[k][b:b + self.length[window]]

    def chars(self, window: np.ndarray, first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Characters where token `first` starts and token `last` ends, for each (window, first, last)."""
        dtype = self.char_start[0].dtype if self.char_start else np.int64
        start, end = np.zeros(len(window), dtype), np.zeros(len(window), dtype)
        pos = self.base[window] - self.context_start[window]
        blocks = self.block[window]
        by_block = np.argsort(blocks, kind="stable")
        present, first_row = np.unique(blocks[by_block], return_index=True)
        for k, rows in zip(present.tolist(), np.split(by_block, first_row[1:])):
            start[rows] = self.char_start[k][pos[rows] + first[rows]]
            end[rows] = self.char_end[k][pos[rows] + last[rows]]
        return start, end
