"""Which way the model answers, chosen from the checkpoint and the flags, never from the model's name.

- `span`: a start/end span head (`AutoModelForQuestionAnswering`), what HF's run_qa.py trains;
- `beam`: the beam-search span head of XLNet, XLM and Flaubert (their `...ForQuestionAnswering`, of which
  run_qa.py's `...Simple` class is the plain variant): top starts, ends conditioned on each start, and an
  answerability logit, as HF's run_qa_beam_search.py and the original XLNet SQuAD code;
- `generate`: an encoder-decoder LM (T5, BART, mT5, ...) writes the answer text, as HF's run_seq2seq_qa.py.
"""

from __future__ import annotations

from typing import Any

import transformers
from transformers import AutoModelForQuestionAnswering, AutoModelForSeq2SeqLM
from transformers.models.auto.modeling_auto import (MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES,
                                                    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)

from qakit.errors import QAConfigError

HEADS = ("auto", "span", "beam", "generate")
_PLAIN_SUFFIX = "Simple"  # transformers names the plain span head of a beam-search family `...Simple`


def resolve_head(config: Any, requested: str, predict_with_generate: bool) -> str:
    """`auto` means: the head the checkpoint was saved with (a sequence-to-sequence LM generates; a beam-search
    span head stays one), else span."""
    if predict_with_generate:
        if requested not in ("auto", "generate"):
            raise QAConfigError(f"--predict_with_generate asks for generated answers but --answer_head is "
                                f"{requested}: drop one of the two")
        requested = "generate"
    if requested == "auto":
        saved_as = list(getattr(config, "architectures", None) or [])
        seq2seq = set(MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES.values())
        if saved_as and all(name in seq2seq for name in saved_as):
            requested = "generate"
        elif _beam_class_name(getattr(config, "model_type", None)) in saved_as:
            requested = "beam"
        else:
            requested = "span"
    head_class(config, requested)  # can this model answer that way at all?
    return requested


def head_class(config: Any, head: str) -> Any:
    """The class that loads the checkpoint with the head's weights (new ones where the checkpoint has none)."""
    model_type = getattr(config, "model_type", None)
    if head == "span":
        return AutoModelForQuestionAnswering
    if head == "generate":
        if model_type not in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
            raise QAConfigError(f"--answer_head generate (--predict_with_generate) needs an encoder-decoder LM "
                                f"(T5, BART, mT5, ...); {model_type} is not one: use --answer_head span")
        return AutoModelForSeq2SeqLM
    if head == "beam":
        beam = _beam_class_name(model_type)
        if not beam:
            families = ", ".join(sorted(t for t, n in MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES.items()
                                        if n.endswith(_PLAIN_SUFFIX)))
            raise QAConfigError(f"--answer_head beam: {model_type} has no beam-search span head (those that do: "
                                f"{families}); use --answer_head span")
        return getattr(transformers, beam)
    raise QAConfigError(f"--answer_head must be one of {', '.join(HEADS)} (got {head!r})")


def _beam_class_name(model_type: str | None) -> str:
    """The beam-search head's class name, for families whose plain span head is the `...Simple` one."""
    plain = MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES.get(model_type or "", "")
    beam = plain[:-len(_PLAIN_SUFFIX)] if plain.endswith(_PLAIN_SUFFIX) else ""
    return beam if beam and hasattr(transformers, beam) else ""


def configure_beam(config: Any, start_n_top: int | None, end_n_top: int | None) -> None:
    """The beam widths are part of the config (the model reads them when built)."""
    for name, value in (("start_n_top", start_n_top), ("end_n_top", end_n_top)):
        if value is not None:
            if value < 1:
                raise QAConfigError(f"--{name} must be at least 1 (got {value})")
            setattr(config, name, value)
