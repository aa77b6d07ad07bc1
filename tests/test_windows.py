"""Questions to windows: coverage, training labels, and offsets for tokenizers without them."""

from __future__ import annotations

import pytest

import squad_v2
from helpers import SHARED_MISSING, SHARED_SQUAD, eval_features, offset_agreement
from qakit import windows as qa_windows
from qakit.family import QAFamily


# ---- windows ----------------------------------------------------------------------------------


def test_context_windows_overlap_by_stride():
    assert list(qa_windows.context_windows(10, 4, 2)) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert list(qa_windows.context_windows(3, 4, 2)) == [(0, 3)]
    assert list(qa_windows.context_windows(0, 4, 2)) == [(0, 0)]


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
    train = qa_windows.prepare_train_features(batch, family, max_len, stride)
    feats = qa_windows.prepare_eval_features(batch, list(range(len(batch["id"]))), family, max_len, stride)
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
    train = qa_windows.prepare_train_features(sample, family, 48, 8)
    feats = qa_windows.prepare_eval_features(sample, list(range(len(sample["id"]))), family, 48, 8)
    for w, e in enumerate(feats["example_index"]):
        s, t = train["start_positions"][w], train["end_positions"][w]
        if sample["is_impossible"][e]:
            assert s == t == train["null_index"][w]
        elif s != train["null_index"][w]:
            assert train["context_start"][w] <= s <= t < train["context_end"][w]


@pytest.mark.slow  # every dev-v2.0 question
@pytest.mark.skipif(not SHARED_SQUAD.is_dir(), reason=SHARED_MISSING)
def test_training_labels_on_real_dev_v2(minilm_family):
    family = minilm_family
    ds, _ = squad_v2.read_squad_file(str(SHARED_SQUAD / "dev-v2.0.json"), "validation")
    answerable, labelled, exact = _labelled_texts(ds[:], family, 384, 128)
    # Measured: 5,922 of 5,928 answerable questions (99.90%); the rest are gold answers that start or
    # end inside a word piece (e.g. "1,500" inside "£1,500"), which no token span can reproduce.
    assert labelled == answerable
    assert exact / answerable >= 0.998


# ---- offsets without a fast tokenizer -----------------------------------------------------------


def _offset_agreement(family_fast: QAFamily, family_slow: QAFamily, contexts: list[str]) -> float:
    same, total = offset_agreement(family_fast, family_slow, contexts)
    return same / total


def test_alignment_reproduces_fast_offsets_on_sample(minilm, minilm_family, sample):
    family = minilm_family
    slow = QAFamily.detect(*minilm, max_seq_length=384, force_alignment=True)
    assert not slow.fast_offsets and family.fast_offsets
    assert _offset_agreement(family, slow, sorted(set(sample["context"]))) == 1.0


@pytest.mark.slow  # every dev-v2.0 context, aligned in Python
@pytest.mark.skipif(not SHARED_SQUAD.is_dir(), reason=SHARED_MISSING)
def test_alignment_reproduces_fast_offsets_on_dev_v2(minilm, minilm_family):
    family = minilm_family
    ds, _ = squad_v2.read_squad_file(str(SHARED_SQUAD / "dev-v2.0.json"), "validation")
    slow = QAFamily.detect(*minilm, max_seq_length=384, force_alignment=True)
    assert _offset_agreement(family, slow, sorted(set(ds["context"]))) >= 0.995
