"""Which way the model answers, chosen from the checkpoint and the flags, never from the model's name.

- `span`: a start/end span head (`AutoModelForQuestionAnswering`), what HF's run_qa.py trains;
- `beam`: the beam-search span head of XLNet, XLM and Flaubert (their `...ForQuestionAnswering`, of which
  run_qa.py's `...Simple` class is the plain variant): top starts, ends conditioned on each start, and an
  answerability logit, as HF's run_qa_beam_search.py and the original XLNet SQuAD code;
- `generate`: an encoder-decoder LM (T5, BART, mT5, ...) writes the answer text, as HF's run_seq2seq_qa.py.

A head is one object that knows how its model is loaded (`model_class`), batched (`collator`), run on the
device (`device_candidates`) and answered (`answer`: its candidates as rows for the one assembly in
`qakit.answers`); the rest of the tool never asks which head it has.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import transformers
from transformers import AutoModelForQuestionAnswering, AutoModelForSeq2SeqLM
from transformers.models.auto.modeling_auto import (MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES,
                                                    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)

from qakit import generative
from qakit.answers import AnswerSettings, CandidateRows, QAPredictions, assemble, check_finite
from qakit.batches import QACollator, Seq2SeqCollator
from qakit.beam import beam_candidates
from qakit.errors import QAConfigError
from qakit.family import QAFamily
from qakit.features import EvalSet
from qakit.spans import candidates_from_arrays, log_normalizer, span_rows, top_candidates, top_pairs

HEADS = ("auto", "span", "beam", "generate")
_PLAIN_SUFFIX = "Simple"  # transformers names the plain span head of a beam-search family `...Simple`


@dataclass(frozen=True)
class SpanHead:
    """A start/end logit per token; each window's best valid pairs are the candidates."""

    name = "span"
    generative = False

    def model_class(self, config: Any) -> Any:
        return AutoModelForQuestionAnswering

    def configure(self, config: Any, model_args: Any) -> None:
        """Settings the head takes from the flags into the config before the model is built (none)."""

    def prepare(self, family: QAFamily, model: Any, data_args: Any, training_args: Any) -> "SpanHead":
        """The head ready for this model and these flags (a span head needs nothing more)."""
        return self

    @property
    def text_inputs(self) -> generative.TextInputs | None:
        """How windows are framed as text (generative models only)."""
        return None

    def collator(self, family: QAFamily, data_args: Any) -> Any:
        return QACollator(family, data_args.max_seq_length, data_args.pad_to_max_length)

    def device_candidates(self, model: Any, inputs: dict, meta: dict, s: AnswerSettings,
                          synced_gpus: bool = False) -> tuple[torch.Tensor, ...]:
        """One batch's candidates, found on the device (only O(n_best) numbers per window leave it); searching
        every pair (the pipeline), also each window's `log_normalizer`, which turns their scores into the
        pipeline's probabilities."""
        out = model(**inputs)
        where = (meta["context_start"], meta["context_end"], meta["null_index"])
        if not s.every_pair:
            return top_candidates(out.start_logits, out.end_logits, *where, s.n_best_size, s.max_answer_length)
        *cand, nonfinite = top_pairs(out.start_logits, out.end_logits, *where, s.n_best_size, s.max_answer_length)
        return (*cand, log_normalizer(out.start_logits, out.end_logits, *where), nonfinite)

    def rows(self, arrays: tuple[np.ndarray, ...], data: EvalSet, tokenizer: Any) -> CandidateRows:
        return span_rows(candidates_from_arrays(arrays))

    def answer(self, arrays: tuple[np.ndarray, ...], data: EvalSet, settings: AnswerSettings,
               tokenizer: Any) -> QAPredictions:
        """Post-processing: every window's candidates (gathered, in window order) -> answers per question."""
        check_finite(np.asarray(arrays[-1], dtype=bool), data.windows.example_index, data.ids)
        return assemble(data.ids, data.contexts, data.windows, self.rows(arrays, data, tokenizer), settings)

    def log_norm(self, arrays: tuple[np.ndarray, ...]) -> np.ndarray:
        """Each window's log-normalizer of its rows' scores (0 where they are log-probabilities already)."""
        cand = candidates_from_arrays(arrays)
        return cand.log_norm if cand.log_norm is not None else np.zeros(len(cand.null_score))


@dataclass(frozen=True)
class BeamHead(SpanHead):
    """Top starts, ends conditioned on each start, and an answerability logit (the null odds themselves)."""

    name = "beam"

    def model_class(self, config: Any) -> Any:
        beam = _beam_class_name(getattr(config, "model_type", None))
        if not beam:
            families = ", ".join(sorted(t for t, n in MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES.items()
                                        if n.endswith(_PLAIN_SUFFIX)))
            raise QAConfigError(f"--answer_head beam: {getattr(config, 'model_type', None)} has no beam-search span "
                                f"head (those that do: {families}); use --answer_head span")
        return getattr(transformers, beam)

    def configure(self, config: Any, model_args: Any) -> None:
        """The beam widths are part of the config (the model reads them when built)."""
        for name in ("start_n_top", "end_n_top"):
            value = getattr(model_args, name)
            if value is not None:
                if value < 1:
                    raise QAConfigError(f"--{name} must be at least 1 (got {value})")
                setattr(config, name, value)

    def collator(self, family: QAFamily, data_args: Any) -> Any:
        return QACollator(family, data_args.max_seq_length, data_args.pad_to_max_length, beam=True)

    def device_candidates(self, model: Any, inputs: dict, meta: dict, s: AnswerSettings,
                          synced_gpus: bool = False) -> tuple[torch.Tensor, ...]:
        out = model(**inputs)
        return beam_candidates(out.start_top_log_probs, out.start_top_index, out.end_top_log_probs,
                               out.end_top_index, out.cls_logits, meta["context_start"], meta["context_end"],
                               s.n_best_size, s.max_answer_length)

    def rows(self, arrays: tuple[np.ndarray, ...], data: EvalSet, tokenizer: Any) -> CandidateRows:
        return span_rows(candidates_from_arrays(arrays), null_is_odds=True)


@dataclass(frozen=True)
class GenerateHead(SpanHead):
    """An encoder-decoder writes answers; each window's best ones and the empty one are scored by the model."""

    name = "generate"
    generative = True
    inputs: generative.TextInputs | None = None
    generation: generative.GenerationSettings | None = None

    def model_class(self, config: Any) -> Any:
        if getattr(config, "model_type", None) not in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
            raise QAConfigError(f"--answer_head generate (--predict_with_generate) needs an encoder-decoder LM "
                                f"(T5, BART, mT5, ...); {getattr(config, 'model_type', None)} is not one: use "
                                "--answer_head span")
        return AutoModelForSeq2SeqLM

    def prepare(self, family: QAFamily, model: Any, data_args: Any, training_args: Any) -> "GenerateHead":
        inputs = generative.TextInputs.detect(family, data_args.max_seq_length, data_args.doc_stride,
                                              data_args.max_answer_length)
        settings = generative.generation_settings(training_args, data_args, inputs, model, family.tokenizer)
        return dataclasses.replace(self, inputs=inputs, generation=settings)

    @property
    def text_inputs(self) -> generative.TextInputs | None:
        return self.inputs

    def collator(self, family: QAFamily, data_args: Any) -> Any:
        return Seq2SeqCollator(family, data_args.max_seq_length, data_args.pad_to_max_length,
                               data_args.ignore_pad_token_for_loss)

    def device_candidates(self, model: Any, inputs: dict, meta: dict, s: AnswerSettings,
                          synced_gpus: bool = False) -> tuple[torch.Tensor, ...]:
        """The unwrapped model generates, as in HF's Seq2SeqTrainer; sharded models step in sync."""
        return generative.generated_candidates(model, inputs["input_ids"], inputs["attention_mask"],
                                               self.generation, synced_gpus=synced_gpus)

    def log_norm(self, arrays: tuple[np.ndarray, ...]) -> np.ndarray:
        return np.zeros(len(arrays[0]))  # generated answers are scored by their log-likelihood

    def rows(self, arrays: tuple[np.ndarray, ...], data: EvalSet, tokenizer: Any) -> CandidateRows:
        return generative.generated_rows(data.contexts, data.windows, generative.Generated.from_arrays(arrays),
                                         tokenizer)


def resolve_head(config: Any, requested: str, predict_with_generate: bool) -> SpanHead:
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
    head = HEADS_BY_NAME.get(requested)
    if head is None:
        raise QAConfigError(f"--answer_head must be one of {', '.join(HEADS)} (got {requested!r})")
    head.model_class(config)  # can this model answer that way at all?
    return head


def _beam_class_name(model_type: str | None) -> str:
    """The beam-search head's class name, for families whose plain span head is the `...Simple` one."""
    plain = MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES.get(model_type or "", "")
    beam = plain[:-len(_PLAIN_SUFFIX)] if plain.endswith(_PLAIN_SUFFIX) else ""
    return beam if beam and hasattr(transformers, beam) else ""


HEADS_BY_NAME: dict[str, SpanHead] = {h.name: h for h in (SpanHead(), BeamHead(), GenerateHead())}


def head_modules(model: torch.nn.Module) -> list[str]:
    """The top-level modules that answer, outside the pretrained body: qa_outputs, the beam head's three. Found
    from the model itself: the modules outside `model.base_model`, or (where the class is its own base, as T5's
    span head) those its family's bare model does not have. A seq2seq LM's output layer, tied to its input
    embeddings, is the body's."""
    if model.base_model is not model:
        inside = {id(p) for p in model.base_model.parameters()}
        names = [name.split(".")[0] for name, p in model.named_parameters() if id(p) not in inside]
    else:
        try:
            with torch.device("meta"):
                bare = transformers.AutoModel.from_config(model.config)
        except (ValueError, KeyError):  # no bare model of this family: nothing to tell the head by
            return []
        names = [name for name, _ in model.named_children() if name not in dict(bare.named_children())]
    output = model.get_output_embeddings()
    return [name for name in dict.fromkeys(names) if getattr(model, name, None) is not output]
