"""Everything that differs between model families, in one place.

The rest of the pipeline only asks a `QAFamily` four things: how to turn texts into token ids with
character offsets, how a (question, context) pair is framed by special tokens, which inputs the model
takes besides `input_ids`, and how long a padded batch must be. The answers come from the tokenizer
and the model's config and `forward()` signature, never from a list of model names.

`prepare_model` is the one place that changes a loaded model or tokenizer (a pad token, a default
language) so that it can run; `QAFamily.detect` then only looks.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from datasets.fingerprint import Hasher

from qakit.alignment import encode_by_alignment, split_offsets
from qakit.errors import QAConfigError, UnsupportedModelError
from qakit.template import PairTemplate, has_offsets, plain_call, probe_template

logger = logging.getLogger(__name__)


def prepare_model(model: torch.nn.Module, tokenizer: Any, generative: bool = False) -> None:
    """Refuse models without a span head (unless they generate answers); give the tokenizer/model what they
    need to run on padded batches."""
    if not generative and "start_positions" not in inspect.signature(model.forward).parameters:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no start/end span head (it classifies over a fixed answer set), "
            "so it cannot do extractive question answering; use a model with a span head")
    _ensure_pad_token(tokenizer, model)
    _ensure_default_language(model)


@dataclass
class Window:
    """One model input: the framed ids plus where the context and the null token sit."""

    input_ids: list[int]
    token_type_ids: list[int]
    context_start: int
    context_end: int
    null_index: int


@dataclass
class QAFamily:
    """How one model/tokenizer pair is fed. Built by `QAFamily.detect`."""

    tokenizer: Any
    template: PairTemplate
    fast_offsets: bool
    forward_params: frozenset[str]
    pad_token_id: int
    fixed_length: int | None = None  # every batch padded to exactly this length
    pad_multiple: int = 8
    model_config: Any = None
    _call: Callable[..., dict] | None = field(default=None, repr=False)

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def detect(cls, model: torch.nn.Module, tokenizer: Any, max_seq_length: int,
               force_alignment: bool = False) -> "QAFamily":
        """Inspect the tokenizer, config and forward() once (after `prepare_model`)."""
        config = model.config
        params = frozenset(inspect.signature(model.forward).parameters)
        call = plain_call(tokenizer)
        fixed, multiple = _length_rule(config, params, max_seq_length)
        limit = model_length_limit(model, tokenizer)
        if limit is not None and max_seq_length > limit:
            raise QAConfigError(f"--max_seq_length {max_seq_length} is longer than this model takes ({limit} "
                                f"positions): pass --max_seq_length {limit} or less")
        if limit is not None and fixed is None:
            multiple = multiple if math.ceil(max_seq_length / multiple) * multiple <= limit else 1
        fast = bool(getattr(tokenizer, "is_fast", False)) and not force_alignment and has_offsets(call)
        family = cls(tokenizer=tokenizer, template=probe_template(tokenizer, call), fast_offsets=fast,
                     forward_params=params, pad_token_id=tokenizer.pad_token_id, fixed_length=fixed,
                     pad_multiple=multiple, model_config=config, _call=call)
        logger.info("Model family: %s", family.describe())
        return family

    def describe(self) -> str:
        t = self.template
        parts = [f"tokenizer {type(self.tokenizer).__name__}",
                 "offsets from the tokenizer" if self.fast_offsets else "offsets by alignment",
                 f"template {list(t.prefix)} Q {list(t.middle)} C {list(t.suffix)}",
                 f"null at {t.null_at[0]}[{t.null_at[1]}]", f"inputs {sorted(self.model_inputs())}"]
        if self.fixed_length:
            parts.append(f"fixed length {self.fixed_length}")
        return "; ".join(parts)

    # ---- what the model takes ---------------------------------------------------------------

    @functools.cached_property
    def uses_token_type_ids(self) -> bool:
        """Exactly when HF's run_qa sends them: the tokenizer returns them by default (they are among its
        `model_input_names`), the model takes them, and it has an embedding for every type id used.

        Sending them otherwise changes what a checkpoint sees: GPT-2 and XLM add the *word* embeddings of
        ids 0 and 1 for token types, so a model fine-tuned with HF's tools would evaluate differently here.
        """
        t = self.template
        types = {*t.prefix_types, *t.middle_types, *t.suffix_types, t.question_type, t.context_type}
        vocab = getattr(self.model_config, "type_vocab_size", None)
        returned = "token_type_ids" in (getattr(self.tokenizer, "model_input_names", None) or ())
        return (returned and "token_type_ids" in self.forward_params and types != {0}
                and (vocab is None or max(types) < vocab))

    @property
    def uses_attention_mask(self) -> bool:
        return "attention_mask" in self.forward_params

    def model_inputs(self) -> set[str]:
        names = {"input_ids"}
        if self.uses_attention_mask:
            names.add("attention_mask")
        if self.uses_token_type_ids:
            names.add("token_type_ids")
        return names | set(self.extra_inputs(torch.zeros((1, 8), dtype=torch.long)))

    def fingerprint(self) -> str:
        """Identity of everything that shapes the windows: the tokenizer, the template, the model's inputs."""
        try:
            tokenizer = Hasher.hash(self.tokenizer)
        except Exception:  # tokenizers with Python pre-tokenizers (RoFormer's jieba) do not pickle
            tokenizer = Hasher.hash((type(self.tokenizer).__name__, repr(self.tokenizer.init_kwargs),
                                     sorted(self.tokenizer.get_vocab().items())))
        return Hasher.hash((tokenizer, self.describe(), sorted(self.model_inputs())))

    def max_question_tokens(self, max_seq_length: int, doc_stride: int) -> int:
        """Longest question that still leaves room for `doc_stride` + 1 context tokens."""
        room = max_seq_length - self.template.num_special - doc_stride - 1
        if room < 1:
            raise QAConfigError(
                f"--max_seq_length {max_seq_length} leaves no room for context after {self.template.num_special} "
                f"special tokens and --doc_stride {doc_stride}: lower --doc_stride or raise --max_seq_length"
            )
        return room

    # ---- texts to tokens --------------------------------------------------------------------

    def encode(self, texts: list[str]) -> list[tuple[list[int], list[int], list[int]]]:
        """Token ids with character start/end offsets (whitespace-trimmed) for each text."""
        if self.fast_offsets:
            enc = self._call(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            return [
                (ids, *split_offsets(text, offs))
                for text, ids, offs in zip(texts, enc["input_ids"], enc["offset_mapping"])
            ]
        return [encode_by_alignment(self.tokenizer, text) for text in texts]

    def words(self, text: str) -> np.ndarray:
        """The text's words as [start, end) characters, ascending: as the tokenizer splits them where it says
        (a fast tokenizer's word ids, as transformers' pipeline aligns answers to words), else at whitespace
        (as that pipeline does for the others)."""
        word_ids = None
        if self._call is self.tokenizer:  # layout tokenizers take the whole text as one word: no word ids
            try:
                enc = self._call([text], add_special_tokens=False, return_offsets_mapping=True, verbose=False)
                word_ids, offsets = enc.word_ids(0), enc["offset_mapping"][0]
            except (AttributeError, NotImplementedError, TypeError, ValueError):  # no word ids or offsets
                word_ids = None
        if not word_ids or None in word_ids:
            return np.array([m.span() for m in re.finditer(r"\S+", text)], dtype=np.int64).reshape(-1, 2)
        spans: dict[int, list[int]] = {}
        for w, (s, e) in zip(word_ids, offsets):
            span = spans.setdefault(w, [s, e])
            span[1] = e
        return np.array(sorted(spans.values()), dtype=np.int64).reshape(-1, 2)

    def encode_ids(self, texts: list[str]) -> list[list[int]]:
        return list(self._call(texts, add_special_tokens=False)["input_ids"]) if texts else []

    def unknown_share(self, texts: list[str]) -> float:
        """Share of the texts' tokens that are the unknown token (0 for a tokenizer without one)."""
        unk = self.tokenizer.unk_token_id
        ids = [i for seq in self.encode_ids(texts) for i in seq] if unk is not None else []
        return sum(i == unk for i in ids) / len(ids) if ids else 0.0

    # ---- windows ----------------------------------------------------------------------------

    def frame(self, question_ids: list[int], context_ids: list[int]) -> Window:
        """Put one window's question and context tokens between the template's special tokens."""
        t = self.template
        ids = [*t.prefix, *question_ids, *t.middle, *context_ids, *t.suffix]
        types = [*t.prefix_types, *[t.question_type] * len(question_ids), *t.middle_types,
                 *[t.context_type] * len(context_ids), *t.suffix_types]
        c_start = len(t.prefix) + len(question_ids) + len(t.middle)
        part, index = t.null_at
        base = {"prefix": 0, "middle": len(t.prefix) + len(question_ids), "suffix": c_start + len(context_ids)}[part]
        return Window(ids, types, c_start, c_start + len(context_ids), base + index)

    def token_inputs(self, window: Window) -> dict[str, list[int]]:
        """Per-token inputs some tokenizers derive from the tokens (RoCBert's shape and pronunciation).

        The question's and the context's tokens are converted; special tokens get the unknown token's value,
        as the tokenizer's own pair encoding frames these sequences.
        """
        out: dict[str, list[int]] = {}
        t = self.template
        texts = (slice(len(t.prefix), window.context_start - len(t.middle)),
                 slice(window.context_start, window.context_end))
        for name, method in (("input_shape_ids", "convert_tokens_to_shape_ids"),
                             ("input_pronunciation_ids", "convert_tokens_to_pronunciation_ids")):
            if name in self.forward_params and hasattr(self.tokenizer, method):
                convert = getattr(self.tokenizer, method)
                values = convert([self.tokenizer.unk_token]) * len(window.input_ids)
                for part in texts:
                    tokens = self.tokenizer.convert_ids_to_tokens(window.input_ids[part])
                    values[part] = list(convert(tokens))
                out[name] = values
        return out

    # ---- batches ----------------------------------------------------------------------------

    def padded_length(self, longest: int, pad_to_max_length: bool, max_seq_length: int) -> int:
        if self.fixed_length:
            return self.fixed_length
        target = max_seq_length if pad_to_max_length else longest
        return int(math.ceil(target / self.pad_multiple) * self.pad_multiple)

    def extra_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inputs a model needs beyond ids/mask/types, built for a padded batch.

        No global_attention_mask: HF's run_qa sends none, and Longformer then puts the question's tokens
        (up to the first separator) in global attention itself.
        """
        b, n = input_ids.shape
        if "bbox" in self.forward_params:  # layout models: text with no layout sits in a zero box
            return {"bbox": torch.zeros((b, n, 4), dtype=torch.long)}
        return {}


def model_length_limit(model: torch.nn.Module, tokenizer: Any) -> int | None:
    """Most tokens the model can take: its learned position table, and the tokenizer's declared maximum.

    RoBERTa-style tables skip the rows up to the padding index, so those do not count.
    """
    limits = []
    for module in model.modules():
        table = getattr(module, "position_embeddings", None)
        if isinstance(table, torch.nn.Embedding):
            skipped = table.padding_idx + 1 if table.padding_idx is not None else 0
            limits.append(table.num_embeddings - skipped)
            break
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < 10**6:  # "no limit" is a huge sentinel value
        limits.append(declared)
    return min(limits) if limits else None


def _ensure_pad_token(tokenizer: Any, model: torch.nn.Module) -> None:
    """Decoder-only tokenizers often have no pad token; padding positions are masked, so EOS will do."""
    if tokenizer.pad_token_id is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token or tokenizer.bos_token
        if fallback is None:
            raise UnsupportedModelError(f"{type(tokenizer).__name__} has no pad, eos, unk or bos token to pad with")
        tokenizer.pad_token = fallback
        logger.info("Tokenizer has no pad token; padding with %r", fallback)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def _ensure_default_language(model: torch.nn.Module) -> None:
    """X-MOD routes every input through a language adapter and refuses to run without one."""
    cfg = model.config
    if hasattr(model, "set_default_language") and getattr(cfg, "default_language", None) is None:
        languages = list(getattr(cfg, "languages", []) or [])
        language = "en_XX" if "en_XX" in languages else (languages[0] if languages else None)
        if language is None:
            raise UnsupportedModelError("the model needs a default language but its config lists none")
        model.set_default_language(language)
        logger.info("No default language in the config; using %s", language)


def _length_rule(config: Any, params: frozenset[str], max_seq_length: int) -> tuple[int | None, int]:
    """Sequence lengths the architecture accepts: a fixed length, or a multiple to pad to."""
    multiple = 8
    for name in ("lsh_attn_chunk_length", "local_attn_chunk_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            multiple = multiple * value // math.gcd(multiple, value)
    fixed = None
    if getattr(config, "axial_pos_embds", False):  # Reformer: axial positions must be filled exactly in training
        fixed = math.prod(config.axial_pos_shape)
    elif getattr(config, "segment_means_seq_len", None) and config.num_landmarks != config.segment_means_seq_len:
        fixed = config.segment_means_seq_len  # Nystromformer reshapes by a fixed length
    elif "attention_mask" not in params:  # FNet: padding changes outputs, so always pad the same
        fixed = int(math.ceil(max_seq_length / multiple) * multiple)
    if fixed is not None and fixed < max_seq_length:
        raise QAConfigError(
            f"this model only takes sequences of exactly {fixed} tokens: pass --max_seq_length {fixed} or less"
        )
    return fixed, multiple
