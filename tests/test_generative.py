"""Generative QA: HF's input text, windows whose targets reach every answer, answers scored by the model's
own probabilities, and a run whose outputs have the span path's shape."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import squad_v2
import tiny_models
from helpers import SHARED_MISSING, SHARED_SQUAD, read_json, run_cli, truncation_losses
import reference
from qakit import generative
from qakit.answers import NO_SPAN_ODDS, AnswerSettings, assemble
from qakit.family import QAFamily, prepare_model
from qakit.windows import WindowIndex
from squad_data import squad_file

SEQ2SEQ = {"T5": "T5ForConditionalGeneration", "Bart": "BartForConditionalGeneration",
           "MT5": "MT5ForConditionalGeneration"}


@pytest.fixture(scope="module", params=list(SEQ2SEQ))
def seq2seq(request):
    model, tokenizer = tiny_models.tiny_model(request.param, SEQ2SEQ[request.param])
    prepare_model(model, tokenizer, generative=True)
    return model.eval(), tokenizer, QAFamily.detect(model, tokenizer, max_seq_length=512)


def _inputs(family, max_len=512, stride=32, answer_len=16):
    return generative.TextInputs.detect(family, max_len, stride, answer_len)


def _questions(path):
    ds, _ = squad_v2.read_squad_file(str(path), "train")
    return ds[:]


def test_window_is_hf_text_when_the_context_fits(seq2seq, sample):
    """HF's run_seq2seq_qa tokenizes `question: Q context: C` as one text: a context that fits gives the same ids."""
    _, tokenizer, family = seq2seq
    rows = generative.prepare_eval_features(sample, list(range(len(sample["id"]))), family, _inputs(family))
    assert len(rows["input_ids"]) == len(sample["id"])  # one window per question
    for q, c, ids in zip(sample["question"], sample["context"], rows["input_ids"]):
        assert ids == tokenizer(" ".join(["question:", q.lstrip(), "context:", c.lstrip()]))["input_ids"]


def test_answer_in_a_later_window_is_that_windows_target(seq2seq, tmp_path):
    """Long contexts: the window that holds the answer learns to write it; the others learn the empty answer."""
    _, tokenizer, family = seq2seq
    batch = _questions(squad_file(tmp_path / "long.json"))
    inputs = _inputs(family, max_len=48, stride=8)
    rows = generative.prepare_train_features(batch, family, inputs)
    windows = list(generative.text_windows(batch, family, inputs))
    assert len(windows) == len(rows["input_ids"]) > 2 * len(batch["id"])
    empty = tokenizer(text_target="")["input_ids"]
    late = 0
    for (i, ids, _, starts, ends), labels in zip(windows, rows["labels"]):
        assert len(ids) <= 48
        answer = batch["answers"][i]
        inside = bool(answer["text"]) and starts[0] <= answer["answer_start"][0] and \
            answer["answer_start"][0] + len(answer["text"][0]) <= ends[-1]
        expected = tokenizer(text_target=answer["text"][0])["input_ids"] if inside else empty
        assert labels == expected
        late += inside and starts[0] > 0
    for i, answer in enumerate(batch["answers"]):  # every answer has a window that holds it
        if answer["text"]:
            assert any(w[0] == i and w[3][0] <= answer["answer_start"][0] and
                       answer["answer_start"][0] + len(answer["text"][0]) <= w[4][-1] for w in windows)
    assert late  # some answers only a later window reaches


def test_context_offsets_point_into_the_context(seq2seq, tmp_path):
    _, _, family = seq2seq
    batch = _questions(squad_file(tmp_path / "long.json"))
    rows = generative.prepare_eval_features(batch, list(range(len(batch["id"]))), family, _inputs(family, 48, 8))
    for e, starts, ends in zip(rows["example_index"], rows["offset_starts"], rows["offset_ends"]):
        context = batch["context"][e]
        # a token that is only whitespace (byte-level BPE's lone space) has an empty surface
        assert all(0 <= s <= t <= len(context) and (s == t or not context[s].isspace()) for s, t in zip(starts, ends))
        assert starts == sorted(starts) and any(s < t for s, t in zip(starts, ends))


def test_scores_are_the_models_log_probabilities(seq2seq, sample):
    """Each answer's score is the sum of its tokens' log-probabilities, as the loss on that target gives it."""
    model, tokenizer, family = seq2seq
    inputs = _inputs(family, 128, 32, 4)
    rows = generative.prepare_eval_features({k: v[:3] for k, v in sample.items()}, [0, 1, 2], family, inputs)
    ids = rows["input_ids"][:3]
    width = max(map(len, ids))
    batch = torch.tensor([x + [family.pad_token_id] * (width - len(x)) for x in ids])
    mask = (torch.arange(width)[None] < torch.tensor([len(x) for x in ids])[:, None]).long()
    settings = generative.GenerationSettings(2, 2, 4, inputs.empty_answer, tokenizer.eos_token_id)
    tokens, scores, null, bad = generated_candidates_cpu(model, batch, mask, settings)
    assert tokens.shape == (3, 2, 4) and not bad.any()
    for w in range(3):
        cases = [(tokens[w, k][tokens[w, k] >= 0], scores[w, k]) for k in range(2)]
        for target, score in cases + [(torch.tensor(inputs.empty_answer), null[w])]:
            with torch.no_grad():
                one = model(input_ids=batch[w:w + 1], attention_mask=mask[w:w + 1], labels=target[None])
            assert float(score) == pytest.approx(-one.loss.item() * len(target), abs=1e-4)


def generated_candidates_cpu(model, batch, mask, settings):
    with torch.no_grad():
        return generative.generated_candidates(model, batch, mask, settings)


# ---- answers per question ---------------------------------------------------------------------


def _window_index(example_index, spans):
    import pyarrow as pa

    return WindowIndex.from_features(pa.table({
        "example_index": example_index, "context_start": [0] * len(example_index),
        "offset_starts": [[s] for s, _ in spans], "offset_ends": [[e] for _, e in spans]}))


def test_postprocess_generated_hand_worked(seq2seq):
    """Two questions; q0 has two windows that write the same text (kept once, best score), the null is the
    windows' smaller empty-answer score; q1's only answer is empty text, so it has no answer at all."""
    _, tokenizer, _ = seq2seq
    contexts = ["the cat sat on the mat", "dogs bark"]
    windows = _window_index([0, 0, 1], [(0, 11), (8, 22), (0, 9)])

    def enc(text):
        return tokenizer(text_target=text)["input_ids"]

    answers = [[enc("cat"), enc("mat")], [enc("mat"), enc("sat")], [enc(""), enc("")]]
    width = max(len(t) for row in answers for t in row)
    tokens = np.full((3, 2, width), -100)
    for w, row in enumerate(answers):
        for k, t in enumerate(row):
            tokens[w, k, :len(t)] = t
    gen = generative.Generated(tokens, np.array([[-1.0, -3.0], [-2.0, -2.5], [-0.5, -0.7]]),
                               np.array([-4.0, -1.5, -0.1]), np.zeros(3, bool))
    preds = _answers(["q0", "q1"], contexts, windows, gen, tokenizer, 3, True, 0.0)
    texts = generative.decode_answers(tokenizer, tokens)
    cat, mat, sat = texts[0], texts[1], texts[3]
    assert preds.best_spans == {"q0": cat, "q1": ""}
    assert preds.null_odds["q0"] == pytest.approx(-4.0 - -1.0)
    assert preds.null_odds["q1"] == NO_SPAN_ODDS
    assert preds.predictions == {"q0": cat, "q1": ""}
    rows = preds.nbest_dict()["q0"]
    assert [(r["text"], r["score"]) for r in rows] == [(cat, -1.0), (mat, -2.0), (sat, -2.5), ("", -4.0)]
    assert rows[0]["offsets"] == ([4, 7] if cat == "cat" else rows[0]["offsets"])
    assert sum(r["probability"] for r in rows) == pytest.approx(1.0)
    assert rows[0]["probability"] == pytest.approx(1 / sum(math.exp(s + 1.0) for s in (-1.0, -2.0, -2.5, -4.0)))
    high = _answers(["q0", "q1"], contexts, windows, gen, tokenizer, 3, True, -3.5)
    assert high.predictions["q0"] == ""  # odds -3.0 above the threshold -3.5


def _answers(ids, contexts, windows, gen, tokenizer, n_best, v2, threshold):
    """The tool's answers: generated rows through the one assembly of every head."""
    rows = generative.generated_rows(contexts, windows, gen, tokenizer)
    return assemble(ids, contexts, windows, rows, AnswerSettings(n_best, 30, v2, threshold))


@pytest.mark.parametrize("seed,n_best,v2,threshold", [(0, 3, True, 0.0), (1, 1, True, -1.0), (2, 5, False, 0.0),
                                                      (3, 2, True, 2.0)])
def test_generated_answers_equal_plain_loop(seq2seq, seed, n_best, v2, threshold):
    """Random beams over few texts (repeats within and across windows, tied scores, empty answers) answered
    by the assembly equal the plain per-question loop: texts, offsets, scores, null odds; probabilities to 1e-12."""
    _, tokenizer, _ = seq2seq
    rng = np.random.default_rng(seed)
    contexts = ["the cat sat on the mat", "dogs bark at night", "a tree in the park"]
    words = ["cat", "mat", "sat", "dogs", "night", "tree", "park", ""]
    example_index = [0, 0, 0, 1, 2, 2]
    windows = _window_index(example_index, [(0, 11), (8, 22), (4, 18), (0, 18), (0, 10), (5, 18)])
    encoded = [tokenizer(text_target=w)["input_ids"] for w in words]
    r = 3
    tokens = np.full((len(example_index), r, max(map(len, encoded))), -100)
    for w in range(len(example_index)):
        for k in range(r):
            ids = encoded[rng.integers(len(words))]
            tokens[w, k, :len(ids)] = ids
    scores = -rng.integers(1, 5, size=(len(example_index), r)).astype(float) / 2  # ties on purpose
    gen = generative.Generated(tokens, scores, -rng.integers(0, 6, len(example_index)) / 2.0,
                               np.zeros(len(example_index), bool))
    ids = ["q0", "q1", "q2"]
    ref = reference.postprocess_generated(ids, contexts, windows, gen, tokenizer, n_best, v2, threshold)
    ours = _answers(ids, contexts, windows, gen, tokenizer, n_best, v2, threshold)
    assert (ours.predictions, ours.best_spans, ours.null_odds) == (ref.predictions, ref.best_spans, ref.null_odds)
    nbest = ours.nbest_dict()
    for qid, entries in ref.nbest.items():
        assert [(e["text"], e["offsets"], e["score"]) for e in nbest[qid]] == \
            [(e["text"], e["offsets"], e["score"]) for e in entries], qid
        assert np.allclose([e["probability"] for e in nbest[qid]], [e["probability"] for e in entries], atol=1e-12)


# ---- windows against truncation on the real dev set -------------------------------------------------


@pytest.mark.slow
def test_dev_v2_windows_lose_no_answer_that_truncation_loses(minilm_family):
    """HF's run_seq2seq_qa cuts `question: Q context: C` at --max_seq_length; windows keep every answer."""
    if not (SHARED_SQUAD / "dev-v2.0.json").is_file():
        pytest.skip(SHARED_MISSING)
    ds, _ = squad_v2.read_squad_file(str(SHARED_SQUAD / "dev-v2.0.json"), "train")
    answerable = ds.filter(lambda r: bool(r["answers"]["text"]))
    lost_by_truncation, lost_by_windows = truncation_losses(answerable, minilm_family, 384, 128)
    assert lost_by_windows == 0
    assert lost_by_truncation > 0


# ---- a whole run --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SEQ2SEQ))
def test_generative_run_has_the_span_paths_outputs(name, tmp_path, capsys):
    model_dir = tiny_models.build_tiny(name, tmp_path / "model", SEQ2SEQ[name])
    data = squad_file(tmp_path / "long.json")
    out = tmp_path / "out"
    code, err = run_cli(["--model_name_or_path", model_dir, "--train_file", data, "--validation_file", data,
                         "--version_2_with_negative", "--do_train", "--do_eval", "--max_steps", 3,
                         "--per_device_train_batch_size", 4, "--max_seq_length", 48, "--doc_stride", 8,
                         "--max_answer_length", 6, "--generation_num_beams", 2, "--n_best_size", 3,
                         "--output_dir", out, "--report_to", "none", "--save_strategy", "no"], capsys)
    assert code == 0, err
    ids = [q["id"] for a in json.loads(data.read_text())["data"] for p in a["paragraphs"] for q in p["qas"]]
    preds, spans, odds = (read_json(out / f"eval_{k}.json") for k in ("predictions", "span_predictions", "null_odds"))
    nbest = read_json(out / "eval_nbest_predictions.json")
    assert list(preds) == list(spans) == list(odds) == list(nbest) == ids
    results = read_json(out / "eval_results.json")
    for key in ("eval_exact", "eval_f1", "eval_best_f1", "eval_best_f1_thresh", "eval_HasAns_f1", "eval_NoAns_f1"):
        assert math.isfinite(results[key])
    assert results["eval_windows"] > 2 * len(ids)
    for qid in ids:
        rows = nbest[qid]
        assert 1 <= len(rows) <= 3 + 1 and [r["score"] for r in rows] == sorted((r["score"] for r in rows),
                                                                               reverse=True)
        null = next(r["score"] for r in rows if r["text"] == "")
        answers = [r for r in rows if r["text"]]
        assert spans[qid] == (answers[0]["text"] if answers else "")
        if answers:
            assert odds[qid] == pytest.approx(null - answers[0]["score"])
        assert preds[qid] == ("" if odds[qid] > 0.0 else spans[qid])
    train = read_json(out / "train_results.json")
    assert math.isfinite(train["train_loss"]) and train["train_loss"] > 0

