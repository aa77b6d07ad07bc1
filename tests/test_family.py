"""The family layer on its own: pair templates, null positions, lengths, and offsets by alignment.

Expected templates are written out by hand from each family's documented pair format (BERT:
[CLS] Q [SEP] C [SEP]; RoBERTa: <s> Q </s></s> C </s>; XLNet: Q <sep> C <sep> <cls>, padded on the left;
GPT-2: Q C with no special tokens), with tokenizers of those families built here.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import tiny_models
from qakit import alignment
from qakit.errors import QAConfigError, UnsupportedModelError
from qakit.family import QAFamily, _length_rule, model_length_limit, prepare_model
from qakit.batches import QACollator
from qakit.template import plain_call, probe_template
from qakit.windows import prepare_eval_features


def family_of(name: str, max_seq_length: int = 128) -> QAFamily:
    model, tokenizer = tiny_models.tiny_model(name)
    prepare_model(model, tokenizer)
    return QAFamily.detect(model, tokenizer, max_seq_length)


# ---- pair templates and null positions ---------------------------------------------------------


def test_bert_template():
    fam = family_of("Bert")
    tok = fam.tokenizer
    t = fam.template
    assert (t.prefix, t.middle, t.suffix) == ((tok.cls_token_id,), (tok.sep_token_id,), (tok.sep_token_id,))
    assert (t.question_type, t.context_type, t.null_at) == (0, 1, ("prefix", 0))
    w = fam.frame([7, 8], [9, 10, 11])
    assert w.input_ids == [tok.cls_token_id, 7, 8, tok.sep_token_id, 9, 10, 11, tok.sep_token_id]
    assert w.token_type_ids == [0, 0, 0, 0, 1, 1, 1, 1]
    assert (w.context_start, w.context_end, w.null_index) == (4, 7, 0)


def test_roberta_template_has_a_double_separator_and_no_token_types():
    fam = family_of("Roberta")
    tok = fam.tokenizer
    t = fam.template
    assert t.prefix == (tok.bos_token_id,) and t.middle == (tok.sep_token_id, tok.sep_token_id)
    assert t.suffix == (tok.sep_token_id,) and t.null_at == ("prefix", 0)
    assert not fam.uses_token_type_ids  # every type id is 0: nothing to send
    assert fam.frame([5], [6, 7]).context_start == 4


def test_xlnet_null_token_is_the_cls_at_the_end():
    fam = family_of("XLNet")
    tok = fam.tokenizer
    t = fam.template
    assert t.prefix == () and t.suffix[-1] == tok.cls_token_id
    w = fam.frame([5, 6], [7, 8, 9])
    assert w.input_ids[w.null_index] == tok.cls_token_id and w.null_index == len(w.input_ids) - 1
    assert w.input_ids[w.context_start:w.context_end] == [7, 8, 9]


def test_gpt2_without_special_tokens_points_null_at_the_first_token():
    fam = family_of("GPT2")
    t = fam.template
    assert t.num_special == 0 and t.null_at == ("prefix", 0)
    w = fam.frame([5, 6], [7, 8])
    assert w.input_ids == [5, 6, 7, 8] and w.null_index == 0 and w.context_start == 2


def test_probe_refuses_a_tokenizer_that_loses_the_texts():
    class Scrambler:
        cls_token_id = bos_token_id = None

        def __call__(self, text, text_pair=None, **kwargs):
            ids = [len(text), 1, 2] if text_pair is None else [99, 98]
            return {"input_ids": ids}

    with pytest.raises(UnsupportedModelError, match="does not contain the two texts"):
        probe_template(Scrambler(), Scrambler())


# ---- what the model needs ----------------------------------------------------------------------


def test_prepare_model_gives_gpt2_a_pad_token():
    model, tokenizer = tiny_models.tiny_model("GPT2")
    tokenizer.pad_token = None
    model.config.pad_token_id = None
    prepare_model(model, tokenizer)
    assert tokenizer.pad_token == tokenizer.eos_token and model.config.pad_token_id == tokenizer.eos_token_id


def test_prepare_model_refuses_a_model_without_a_span_head():
    class Classifier(torch.nn.Module):
        config = SimpleNamespace()

        def forward(self, input_ids, labels=None):
            return input_ids

    with pytest.raises(UnsupportedModelError, match="no start/end span head"):
        prepare_model(Classifier(), tiny_models.family_tokenizer("bert"))


def test_length_limit_skips_the_padding_rows_of_roberta_positions():
    model, tokenizer = tiny_models.tiny_model("Roberta")
    table = model.roberta.embeddings.position_embeddings
    tokenizer.model_max_length = 10**30  # "no limit" sentinel: only the table counts
    assert model_length_limit(model, tokenizer) == table.num_embeddings - table.padding_idx - 1
    tokenizer.model_max_length = 64
    assert model_length_limit(model, tokenizer) == 64


def test_length_rules():
    plain = SimpleNamespace()
    assert _length_rule(plain, frozenset({"attention_mask"}), 100) == (None, 8)
    chunked = SimpleNamespace(lsh_attn_chunk_length=12, local_attn_chunk_length=0)
    assert _length_rule(chunked, frozenset({"attention_mask"}), 100) == (None, 24)
    assert _length_rule(plain, frozenset(), 100) == (104, 8)  # no attention mask: always the same length
    axial = SimpleNamespace(axial_pos_embds=True, axial_pos_shape=(8, 16))
    assert _length_rule(axial, frozenset({"attention_mask"}), 128) == (128, 8)
    with pytest.raises(QAConfigError, match="exactly 128 tokens"):
        _length_rule(axial, frozenset({"attention_mask"}), 256)


def test_window_too_small_for_the_stride_is_refused():
    fam = family_of("Bert")
    assert fam.max_question_tokens(64, 16) == 64 - 3 - 16 - 1
    with pytest.raises(QAConfigError, match="no room for context"):
        fam.max_question_tokens(20, 16)


def test_max_seq_length_beyond_the_position_table_is_refused():
    model, tokenizer = tiny_models.tiny_model("Bert")
    prepare_model(model, tokenizer)
    with pytest.raises(QAConfigError, match="longer than this model takes"):
        QAFamily.detect(model, tokenizer, model.config.max_position_embeddings + 8)


# ---- offsets by alignment ----------------------------------------------------------------------


def test_align_offsets_hand_cases():
    text = "Héllo,  Wörld! [x]"
    assert alignment.align_offsets(text, ["hello", ",", "world", "!", "[", "x", "]"]) == [
        (0, 5), (5, 6), (8, 13), (13, 14), (15, 16), (16, 17), (17, 18)]
    assert alignment.align_offsets("a ☃ b", ["a", "[UNK]", "b"]) == [(0, 1), (2, 3), (4, 5)]


def test_align_offsets_recover_after_a_long_unknown_run():
    text = "a " + "\u2603" * 20 + " b c"
    assert alignment.align_offsets(text, ["a", "[UNK]", "b", "c"]) == [(0, 1), (2, 22), (23, 24), (25, 26)]


def test_align_offsets_repeated_words_and_trailing_unknowns():
    assert alignment.align_offsets("the cat the hat", ["the", "cat", "the", "hat"]) == [
        (0, 3), (4, 7), (8, 11), (12, 15)]
    # unknowns at the end take what is left of the text, trimmed; an empty surface matches nothing
    assert alignment.align_offsets("ab  ☃☃ ", ["ab", "[UNK]"]) == [(0, 2), (4, 6)]
    assert alignment.align_offsets("ab cd", ["ab", "", "cd"]) == [(0, 2), (3, 3), (3, 5)]


def test_trim_and_split_offsets_drop_surrounding_spaces():
    assert alignment.trim(" ab ", 0, 4) == (1, 3)
    assert alignment.trim("   ", 0, 3) == (3, 3)
    assert alignment.split_offsets(" x  y", [(0, 2), (2, 5)]) == ([1, 4], [2, 5])


def test_surface_strips_word_piece_markers():
    tok = tiny_models.family_tokenizer("bert")
    assert alignment.surface("##ing", tok) == "ing"
    assert alignment.surface("Café", tok) == "cafe"


def test_alignment_equals_fast_offsets_on_word_pieces():
    """The tiny WordPiece tokenizer both ways: aligned offsets equal the tokenizer's own."""
    fam = family_of("Bert")
    text = "The keeper, Thomas Reed, wrote in 1874 that storms had broken three windows."
    ids, starts, ends = alignment.encode_by_alignment(fam.tokenizer, text)
    fast_ids, fast_starts, fast_ends = fam.encode([text])[0]
    assert ids == fast_ids and (starts, ends) == (fast_starts, fast_ends)


# ---- the inputs HF's run_qa gives each family --------------------------------------------------

QUESTION = "Who built the bridge?"
CONTEXT = "The old lighthouse stood at the northern edge of the island for more than two hundred years."
ROWS_HERE = [r for r in tiny_models.ROWS if r.unavailable_reason() is None and r.name != "Lxmert"]


def _hf_inputs(family: QAFamily) -> dict[str, list]:
    """What run_qa feeds: the tokenizer's default pair encoding, minus what forward() does not take."""
    enc = plain_call(family.tokenizer)(QUESTION, CONTEXT)
    return {k: list(v) for k, v in enc.items() if k in family.forward_params}


def _our_inputs(family: QAFamily) -> dict[str, list]:
    """One window through the windows code and the collator, cut back to its real tokens."""
    batch = {"id": ["q"], "question": [QUESTION], "context": [CONTEXT]}
    feats = prepare_eval_features(batch, [0], family, 128, 32)
    assert len(feats["input_ids"]) == 1, "the pair fits one window"
    row = {k: v[0] for k, v in feats.items() if k not in ("offset_starts", "offset_ends")}
    collated = QACollator(family, 128)([row])
    n = len(row["input_ids"])
    return {k: v[0, :n].tolist() for k, v in collated.items() if k != "qa_meta"}


@pytest.mark.slow  # builds every architecture's tiny model
@pytest.mark.parametrize("row", ROWS_HERE, ids=[r.name for r in ROWS_HERE])
def test_window_inputs_are_the_ones_hf_run_qa_gives(row):
    """Same ids, and the same token types wherever they change what the model computes: a checkpoint
    fine-tuned with HF's tools sees here what it saw there."""
    fam = family_of(row.name)
    hf, ours = _hf_inputs(fam), _our_inputs(fam)
    assert ours["input_ids"] == hf["input_ids"]
    if "attention_mask" in ours:
        assert set(ours["attention_mask"]) == {1}
    types_matter = int(getattr(fam.model_config, "type_vocab_size", None) or 0) != 0 or \
        getattr(fam.model_config, "type_vocab_size", 0) is None
    if "token_type_ids" in hf and (any(hf["token_type_ids"]) and types_matter):
        assert ours.get("token_type_ids") == hf["token_type_ids"]
    else:  # HF sends none, only zeros, or types the model has no table for: ours must send nothing
        assert "token_type_ids" not in ours, ours.get("token_type_ids")
    assert "global_attention_mask" not in ours
    for key in set(ours) - {"input_ids", "attention_mask", "token_type_ids"}:
        if key in hf:
            assert ours[key] == hf[key], key
        else:
            assert key == "bbox" and not any(map(any, ours[key])), key  # layout models: text in a blank box
