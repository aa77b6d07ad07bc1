"""The beam-search span head (XLNet, XLM): its inputs, its output layout read off tiny real models, and its
candidates and answers, vectorized against the plain loop and hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from helpers import assemble_spans, assert_same_answers, eval_features
from qakit import spans
from qakit import windows as qa_windows
from qakit.beam import beam_candidates, beam_inputs
from reference import postprocess_beam_reference

NEG = float("-inf")


def _log(p: float) -> float:
    return float(np.float32(math.log(p)))


# ---- inputs ------------------------------------------------------------------------------------


def test_beam_inputs_hand_worked():
    # window 0: context tokens 2..4, null at 0; window 1: context 1..2, null at 4; both padded to 6
    out = beam_inputs(torch.tensor([2, 1]), torch.tensor([5, 3]), torch.tensor([0, 4]), 6, torch.tensor([0, 2]))
    assert out["p_mask"].dtype == torch.float32
    assert out["p_mask"].tolist() == [[0, 1, 0, 0, 0, 1], [1, 0, 0, 1, 0, 1]]
    assert out["cls_index"].dtype == torch.long and out["cls_index"].tolist() == [0, 4]
    assert out["is_impossible"].dtype == torch.float32 and out["is_impossible"].tolist() == [1.0, 0.0]
    assert set(beam_inputs(torch.tensor([2]), torch.tensor([5]), torch.tensor([0]), 6)) == {"p_mask", "cls_index"}
    assert beam_inputs(torch.tensor([2]), torch.tensor([5]), torch.tensor([0]), 6,
                       dtype=torch.bfloat16)["p_mask"].dtype == torch.bfloat16


# ---- the models' output layout -------------------------------------------------------------------


def _tiny_xlnet() -> torch.nn.Module:
    from transformers import XLNetConfig, XLNetForQuestionAnswering

    torch.manual_seed(0)
    config = XLNetConfig(vocab_size=100, d_model=32, n_layer=2, n_head=2, d_inner=64, start_n_top=3, end_n_top=2,
                         initializer_range=0.3)  # sharper distributions than the default 0.02: no near-ties
    return XLNetForQuestionAnswering(config).eval()


def _tiny_xlm() -> torch.nn.Module:
    from transformers import XLMConfig, XLMForQuestionAnswering

    torch.manual_seed(0)
    config = XLMConfig(vocab_size=100, emb_dim=32, n_layers=2, n_heads=2, start_n_top=3, end_n_top=2, init_std=0.3)
    return XLMForQuestionAnswering(config).eval()


def _head(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "qa_outputs", model)  # XLM and FlauBERT keep the poolers in a SQuADHead


def _run_beam(model: torch.nn.Module, seed: int = 0):
    """(outputs, final hidden states, inputs) of one random batch at inference."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (3, 16), generator=gen)
    # window 0's null at the end, as XLNet puts its CLS; the others' at the start
    inputs = beam_inputs(torch.tensor([3, 2, 4]), torch.tensor([15, 12, 14]), torch.tensor([15, 0, 0]), 16)
    hidden = []
    hook = model.transformer.register_forward_hook(lambda module, args, out: hidden.append(out[0]))
    try:
        with torch.no_grad():
            out = model(ids, **inputs)
    finally:
        hook.remove()
    return out, hidden[0], inputs


@pytest.mark.parametrize("build", [_tiny_xlnet, _tiny_xlm], ids=["xlnet", "xlm"])
def test_end_of_rank_j_for_start_rank_i_is_at_j_times_S_plus_i(build):
    """Recompute each start's end distribution with the model's own end pooler: its top ends are the
    columns j * S + i (HF's run_qa_beam_search reads i * E + j, which differs here)."""
    model = build()
    n_start, n_end = model.config.start_n_top, model.config.end_n_top
    out, hidden, inputs = _run_beam(model)
    head = _head(model)
    with torch.no_grad():
        start_p = head.start_logits(hidden, p_mask=inputs["p_mask"]).softmax(-1)
    # the "log_probs" are probabilities: the top-S of the start softmax
    top_p, top_i = start_p.topk(n_start, dim=-1)
    assert torch.equal(out.start_top_index, top_i)
    assert torch.allclose(out.start_top_log_probs, top_p, atol=1e-6)
    assert (out.end_top_log_probs > 0).all() and (out.end_top_log_probs <= 1).all()
    hf_reading_differs = False
    for i in range(n_start):
        at = out.start_top_index[:, i, None, None].expand(-1, hidden.shape[1], hidden.shape[2])
        with torch.no_grad():
            end_p = head.end_logits(hidden, start_states=hidden.gather(1, at), p_mask=inputs["p_mask"]).softmax(1)
        want_p, want_i = end_p.topk(n_end, dim=1)
        cols = [j * n_start + i for j in range(n_end)]
        assert torch.equal(out.end_top_index[:, cols], want_i), i
        assert torch.allclose(out.end_top_log_probs[:, cols], want_p, atol=1e-6), i
        hf_cols = [i * n_end + j for j in range(n_end)]
        hf_reading_differs |= not torch.equal(out.end_top_index[:, hf_cols], want_i)
    assert hf_reading_differs
    # every start and end the model proposes with a non-zero probability is unmasked
    for index, prob in ((out.start_top_index, out.start_top_log_probs), (out.end_top_index, out.end_top_log_probs)):
        assert (inputs["p_mask"].gather(1, index)[prob > 0] == 0).all()


def test_training_needs_the_null_position_unmasked():
    """A window without an answer points start and end at the null position: beam_inputs leaves it unmasked,
    so the loss is ordinary; masked (as HF's p_mask docs suggest for CLS), the loss is ~1e30."""
    model = _tiny_xlnet()
    ids = torch.randint(5, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    start, end, null = torch.tensor([11, 4]), torch.tensor([11, 6]), torch.tensor([11, 11])
    inputs = beam_inputs(torch.tensor([2, 3]), torch.tensor([10, 9]), null, 12, start)
    with torch.no_grad():
        loss = model(ids, start_positions=start, end_positions=end, **inputs).loss
        inputs["p_mask"][:, 11] = 1.0
        masked = model(ids, start_positions=start, end_positions=end, **inputs).loss
    assert 0 < loss < 20 and masked > 1e20


def test_half_precision_model_with_p_mask_in_its_dtype():
    model = _tiny_xlnet().to(torch.bfloat16)
    ids = torch.randint(5, 100, (2, 12), generator=torch.Generator().manual_seed(2))
    cs, ce, null = torch.tensor([2, 3]), torch.tensor([10, 9]), torch.tensor([11, 11])
    with torch.no_grad():
        out = model(ids, **beam_inputs(cs, ce, null, 12, dtype=torch.bfloat16))
    assert out.start_top_log_probs.dtype == torch.bfloat16
    si, ei, sv, ev, nv, bad = beam_candidates(out.start_top_log_probs, out.start_top_index, out.end_top_log_probs,
                                              out.end_top_index, out.cls_logits, cs, ce, 4, 30)
    assert si.dtype == ei.dtype == torch.int32 and sv.dtype == ev.dtype == torch.float32
    assert nv.dtype == torch.float64 and torch.equal(nv, out.cls_logits.double()) and not bad.any()
    ok = si >= 0
    assert ok.any(1).all() and ((si >= cs[:, None]) & (ei < ce[:, None]) & (ei >= si))[ok].all()


# ---- candidates per window ------------------------------------------------------------------------


def _hand_batch():
    """Three windows, S = 3 start ranks, E = 2 end ranks, end columns laid out j * S + i."""
    start_index = torch.tensor([[3, 7, 2], [1, 2, 3], [3, 7, 2]])
    start_p = torch.tensor([[0.5, 0.3, 0.2], [0.25, 0.25, 0.0], [0.5, 0.3, 0.2]])
    # window 0: start 3 -> ends 4, 1; start 7 (the null, outside the context) -> 7, 3; start 2 -> 5, 2
    # window 1: start 1 -> 5 (past the context), 2; start 2 -> 3, 1 (before it); start 3 (p = 0) -> 4, 3
    # window 2: window 0 with a NaN probability on a pair that is dropped anyway
    end_index = torch.tensor([[4, 7, 5, 1, 3, 2], [5, 3, 4, 2, 1, 3], [4, 7, 5, 1, 3, 2]])
    end_p = torch.tensor([[0.5, 0.9, 0.25, 0.25, 0.05, 0.125], [0.5] * 6,
                          [0.5, 0.9, 0.25, float("nan"), 0.05, 0.125]])
    cls = torch.tensor([0.75, -0.25, 0.5])
    return start_p, start_index, end_p, end_index, cls, torch.tensor([2, 1, 2]), torch.tensor([6, 5, 6])


def test_beam_candidates_drop_invalid_pairs_hand_worked():
    si, ei, sv, ev, null, bad = beam_candidates(*_hand_batch(), n_best=3, max_answer_length=3)
    # window 0: (3, 4) log .5 + log .5; (2, 5) is 4 tokens long; (3, 1) ends before it starts; (2, 2) is last
    # window 1: (1, 2) and (2, 3) tie at log .25 + log .5: start rank 0 (end rank 1) before start rank 1
    # (end rank 0), though its column (3) comes after the other's (1)
    assert si.tolist() == [[3, 2, -1], [1, 2, -1], [3, 2, -1]]
    assert ei.tolist() == [[4, 2, -1], [2, 3, -1], [4, 2, -1]]
    assert sv.tolist() == [[_log(0.5), _log(0.2), NEG], [_log(0.25), _log(0.25), NEG], [_log(0.5), _log(0.2), NEG]]
    assert ev.tolist() == [[_log(0.5), _log(0.125), NEG], [_log(0.5), _log(0.5), NEG], [_log(0.5), _log(0.125), NEG]]
    assert null.dtype == torch.float64 and null.tolist() == [0.75, -0.25, 0.5]
    assert bad.tolist() == [False, False, True]
    # one more token allowed: (2, 5) comes in, between the two
    si, ei, *_ = beam_candidates(*_hand_batch(), n_best=5, max_answer_length=4)
    assert si[0].tolist() == [3, 2, 2, -1, -1] and ei[0].tolist() == [4, 5, 2, -1, -1]
    # n_best below the number of valid pairs: the best ones
    si, ei, *_ = beam_candidates(*_hand_batch(), n_best=1, max_answer_length=4)
    assert si.tolist() == [[3], [1], [3]] and ei.tolist() == [[4], [2], [4]]


def test_answers_hand_worked_two_windows():
    """One question, two windows: odds are the smaller answerability logit, the n-best lists hold spans only."""
    context = "alpha beta gamma delta"
    rows = [{"example_index": [0], "context_start": [1], "offset_starts": [[0, 6, 11]], "offset_ends": [[5, 10, 16]]},
            {"example_index": [0], "context_start": [1], "offset_starts": [[11, 17]], "offset_ends": [[16, 22]]}]
    windows = qa_windows.WindowIndex.from_features(pa.Table.from_batches([pa.RecordBatch.from_pydict(r) for r in rows]))
    start_index, start_p = [[1, 2], [2, 1]], [[0.5, 0.25], [0.75, 0.25]]  # S = 2, E = 1
    end_index, end_p = [[2, 3], [2, 2]], [[0.5, 0.5], [0.5, 0.5]]
    cls = [0.5, -0.5]
    arrays = [np.array(x, dtype) for x, dtype in ((start_p, np.float32), (start_index, np.int64),
                                                  (end_p, np.float32), (end_index, np.int64), (cls, np.float32))]

    def answers(threshold: float, reference: bool):
        if reference:
            return postprocess_beam_reference(["q"], [context], windows, *arrays, [4, 3], 3, 30, True, threshold)
        cand = beam_candidates(*map(torch.tensor, arrays), torch.tensor([1, 1]), torch.tensor([4, 3]), 3, 30)
        cand = spans.candidates_from_arrays(tuple(c.numpy() for c in cand))
        return assemble_spans(["q"], [context], windows, cand, 3, True, threshold, null_is_odds=True)

    for reference in (True, False):
        got = answers(0.0, reference)
        # delta .375, alpha beta .25, then beta gamma (window 0) and gamma delta (window 1) tie at .125
        assert got.predictions == {"q": "delta"} and got.best_spans == {"q": "delta"}
        assert got.null_odds == {"q": -0.5}
        nbest = got.nbest_dict()["q"]
        assert [p["text"] for p in nbest] == ["delta", "alpha beta", "beta gamma"]
        assert [p["offsets"] for p in nbest] == [[17, 22], [0, 10], [6, 16]]
        assert np.allclose([p["probability"] for p in nbest], [1 / 2, 1 / 3, 1 / 6], atol=1e-6)
        assert nbest[0]["score"] == _log(0.75) + _log(0.5)
        assert answers(-1.0, reference).predictions == {"q": ""}
    assert_same_answers(answers(0.0, True), answers(0.0, False))


# ---- vectorized against the plain loop ---------------------------------------------------------------


def _random_head(feats, seed: int, n_start: int, n_end: int, ties: bool) -> list[np.ndarray]:
    """Head outputs as the model lays them out: distinct starts per window, distinct ends per start (near it,
    so many pairs are valid), probabilities from a small set when `ties` (equal span scores), some zero."""
    rng = np.random.default_rng(seed)
    probs = lambda n: (rng.choice(np.array([0.0, 0.0625, 0.125, 0.25, 0.5], np.float32), n) if ties  # noqa: E731
                       else (rng.random(n) * (rng.random(n) > 0.1)).astype(np.float32))
    out = [[] for _ in range(5)]
    for ids, cs, ce, null in zip(feats["input_ids"], feats["context_start"], feats["context_end"], feats["null_index"]):
        length = len(ids)
        pool = sorted(set(range(max(cs - 2, 0), min(ce + 1, length))) | {null})
        starts = rng.choice(pool, n_start, replace=False)
        ends = np.empty((n_end, n_start), np.int64)  # the model's (end rank, start rank) layout
        for i, a in enumerate(starts):
            near = np.argsort(np.abs(np.arange(length) - a - 2), kind="stable")[:10]
            ends[:, i] = rng.choice(near, n_end, replace=False)
        cls = rng.choice(np.array([-1.5, -0.5, 0.0, 0.5, 1.0], np.float32)) if ties else rng.standard_normal()
        for column, x in zip(out, (probs(n_start), starts, probs(n_start * n_end), ends.ravel(), cls)):
            column.append(x)
    return [np.array(c, dtype) for c, dtype in zip(out, (np.float32, np.int64, np.float32, np.int64, np.float32))]


@pytest.mark.parametrize("seed,ties,n_start,n_end,n_best,max_len,v2,thresh,block", [
    (0, True, 5, 5, 20, 30, True, 0.0, 4096), (1, True, 4, 3, 3, 4, True, 0.25, 3),
    (2, False, 3, 2, 5, 2, False, 0.0, 2), (3, True, 5, 4, 1, 1, True, -1.0, 4096),
    (4, True, 2, 5, 7, 10, False, 0.0, 5), (5, False, 5, 5, 30, 30, True, 0.0, 1)])
def test_postprocess_beam_equals_plain_loop(family, sample, seed, ties, n_start, n_end, n_best, max_len, v2, thresh,
                                            block):
    feats = eval_features(sample, family, 96, 24)  # several windows per question
    head = _random_head(feats, seed, n_start, n_end, ties)
    windows = qa_windows.WindowIndex.from_features(feats)
    ref = postprocess_beam_reference(sample["id"], sample["context"], windows, *head, feats["context_end"], n_best,
                                     max_len, v2, thresh)
    cs, ce = torch.tensor(feats["context_start"]), torch.tensor(feats["context_end"])
    batches = [beam_candidates(*(torch.tensor(x[lo:lo + 7]) for x in head), cs[lo:lo + 7], ce[lo:lo + 7], n_best,
                               max_len) for lo in range(0, len(cs), 7)]  # batch by batch, as evaluation runs
    cand = spans.candidates_from_arrays(tuple(torch.cat(c).numpy() for c in zip(*batches)))
    assert not cand.nonfinite.any()
    ours = assemble_spans(sample["id"], sample["context"], windows, cand, n_best, v2, thresh, block,
                          null_is_odds=True)
    assert_same_answers(ref, ours)
    assert sum(map(bool, ref.best_spans.values())) > len(sample["id"]) // 2  # not a comparison of empty answers
    if v2:
        assert ref.null_odds == {q: min(float(c) for c, e in zip(head[4], windows.example_index) if e == k)
                                 for k, q in enumerate(sample["id"])}
