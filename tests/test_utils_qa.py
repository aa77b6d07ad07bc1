"""Logits to answers: the vectorized post-processing against the plain loop and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

import reference
from helpers import assemble_spans, assert_same_answers, eval_features
from qakit import spans
from qakit import windows as qa_windows


# ---- post-processing --------------------------------------------------------------------------


def _random_logits(feats, seed: int, ties: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    starts, ends = [], []
    for ids in feats["input_ids"]:
        s, e = rng.standard_normal(len(ids)).astype(np.float32), rng.standard_normal(len(ids)).astype(np.float32)
        if ties:  # coarse values: many equal logits and equal span scores
            s, e = np.round(s * 2) / 2, np.round(e * 2) / 2
        starts.append(s)
        ends.append(e)
    return starts, ends


def _vectorized(sample, feats, starts, ends, n_best, max_len, v2, thresh, block=4096):
    width = max(len(s) for s in starts)
    pad = lambda rows: torch.tensor(np.stack([np.pad(r, (0, width - len(r)), constant_values=-5.0) for r in rows]))
    cand = spans.top_candidates(pad(starts), pad(ends), torch.tensor(feats["context_start"]),
                                   torch.tensor(feats["context_end"]), torch.tensor(feats["null_index"]), n_best,
                                   max_len)
    cand = spans.candidates_from_arrays(tuple(c.numpy() for c in cand))
    return assemble_spans(sample["id"], sample["context"], qa_windows.WindowIndex.from_features(feats), cand,
                                n_best, v2, thresh, block)


@pytest.mark.parametrize("seed,ties,n_best,max_len,v2,thresh,block", [
    (0, False, 20, 30, True, 0.0, 4096), (1, True, 20, 30, True, 0.0, 3), (2, True, 5, 3, True, 1.5, 4096),
    (3, False, 20, 30, False, 0.0, 2), (4, True, 1, 1, False, 0.0, 4096), (5, True, 7, 10, True, -2.0, 5)])
def test_postprocess_equals_plain_loop(family, sample, seed, ties, n_best, max_len, v2, thresh, block):
    feats = eval_features(sample, family, 96, 24)  # several windows per question (6 on average)
    starts, ends = _random_logits(feats, seed, ties)
    ref = reference.postprocess_reference(sample["id"], sample["context"], qa_windows.WindowIndex.from_features(feats),
                                         starts, ends, feats["context_end"], feats["null_index"], n_best, max_len,
                                         v2, thresh)
    ours = _vectorized(sample, feats, starts, ends, n_best, max_len, v2, thresh, block)  # small blocks: several
    assert_same_answers(ref, ours)


def test_postprocess_hand_worked_two_windows():
    """One question, two windows; the best span is in the second window, the null is the smaller one."""
    context = "alpha beta gamma delta"
    # window 0 holds tokens alpha beta gamma at positions 1..3, window 1 holds gamma delta at 1..2
    # each window in its own record batch, as a features file written in blocks has them
    rows = [{"example_index": [0], "context_start": [1], "offset_starts": [[0, 6, 11]], "offset_ends": [[5, 10, 16]]},
            {"example_index": [0], "context_start": [1], "offset_starts": [[11, 17]], "offset_ends": [[16, 22]]}]
    windows = qa_windows.WindowIndex.from_features(pa.Table.from_batches([pa.RecordBatch.from_pydict(r) for r in rows]))
    assert len(windows.char_start) == 2
    s0 = np.array([3.0, 1.0, 0.5, 0.0, -9.0], dtype=np.float32)  # null 3.0 + 1.0 = 4.0
    e0 = np.array([1.0, 0.0, 2.0, 1.0, -9.0], dtype=np.float32)
    s1 = np.array([1.0, -1.0, 2.5, -9.0, -9.0], dtype=np.float32)  # null 1.0 + 0.5 = 1.5
    e1 = np.array([0.5, 0.0, 1.5, -9.0, -9.0], dtype=np.float32)
    ref = reference.postprocess_reference(["q"], [context], windows, [s0, s1], [e0, e1], [4, 3], [0, 0], 3, 30,
                                         True, 0.0)
    # best span: window 1 "delta" (2.5 + 1.5 = 4.0); null = min(4.0, 1.5) = 1.5; odds = 1.5 - 4.0
    assert ref.best_spans == {"q": "delta"} and ref.predictions == {"q": "delta"}
    assert ref.null_odds == {"q": -2.5}
    texts = [p["text"] for p in ref.nbest["q"]]
    assert texts == ["delta", "alpha beta", "beta", ""]
    strict = reference.postprocess_reference(["q"], [context], windows, [s0, s1], [e0, e1], [4, 3], [0, 0], 3, 30,
                                            True, -3.0)
    assert strict.predictions == {"q": ""}
    # the same case through the device-side candidates and the vectorized merge
    cand = spans.top_candidates(torch.tensor(np.stack([s0, s1])), torch.tensor(np.stack([e0, e1])),
                                   torch.tensor([1, 1]), torch.tensor([4, 3]), torch.tensor([0, 0]), 3, 30)
    ours = assemble_spans(["q"], [context], windows, spans.candidates_from_arrays(
        tuple(c.numpy() for c in cand)), 3, True, 0.0)
    assert ours.predictions == {"q": "delta"} and ours.null_odds == {"q": -2.5}
    assert [p["text"] for p in ours.nbest_dict()["q"]] == ["delta", "alpha beta", "beta", ""]


def test_nan_logits_never_win():
    start = torch.tensor([[0.0, float("nan"), 1.0, 2.0, float("nan")]])
    cand = spans.top_candidates(start, start.clone(), torch.tensor([1]), torch.tensor([5]), torch.tensor([0]), 3, 30)
    assert set(cand[0][0].tolist()) <= {2, 3, -1} and 3 in cand[0][0].tolist()


def test_answers_never_start_or_end_on_whitespace():
    """Tokens that carry a space or a newline (byte-level BPE, characters) at a span's edge: the answer is
    trimmed on both sides, in both the plain loop and the vectorized path (hand-worked)."""
    context = "alpha \n beta  gamma"
    #          0    5 6 7 8   12 14   19
    starts, ends = [0, 5, 6, 8, 12, 14], [5, 6, 7, 12, 14, 19]  # alpha, " ", "\n", beta, "  ", gamma
    rows = [{"example_index": [0], "context_start": [1], "offset_starts": [starts], "offset_ends": [ends]}]
    windows = qa_windows.WindowIndex.from_features(pa.Table.from_batches([pa.RecordBatch.from_pydict(r) for r in rows]))
    # tokens at positions 1..6; starts ranked 2, 1, 3 and ends 5, 2, 1, so the best spans are 2..5 (6.0:
    # " \n beta  ", whitespace at both edges), 2..2 (5.5: " ", nothing left) and 1..5 (4.0: "alpha \n beta  ")
    s = np.array([-9, 1.0, 3.0, 0.0, 0.0, 0.0, -1.0, -9], dtype=np.float32)
    e = np.array([-9, 0.0, 2.5, 0.0, 0.0, 3.0, -1.0, -9], dtype=np.float32)
    ref = reference.postprocess_reference(["q"], [context], windows, [s], [e], [7], [0], 3, 30, False)
    assert ref.predictions == {"q": "beta"}
    assert [(p["text"], p["offsets"]) for p in ref.nbest["q"]] == [
        ("beta", [8, 12]), ("", [6, 6]), ("alpha \n beta", [0, 12])]
    cand = spans.top_candidates(torch.tensor(s[None]), torch.tensor(e[None]), torch.tensor([1]), torch.tensor([7]),
                                   torch.tensor([0]), 3, 30)
    ours = assemble_spans(["q"], [context], windows, spans.candidates_from_arrays(
        tuple(c.numpy() for c in cand)), 3, False)
    assert_same_answers(ref, ours)
