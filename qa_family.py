"""Everything that differs between model families, in one place.

The rest of the pipeline only asks a `QAFamily` four things: how to turn texts into token ids with
character offsets, how a (question, context) pair is framed by special tokens, which inputs the model
takes besides `input_ids`, and how long a padded batch must be. The answers come from the tokenizer
and the model's config and `forward()` signature, never from a list of model names.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from datasets.fingerprint import Hasher

logger = logging.getLogger(__name__)

# Probe texts used to discover the pair template; distinct, plain words that every vocabulary covers.
_PROBE_QUESTION = "what is it"
_PROBE_CONTEXT = "it is here"


class QAConfigError(ValueError):
    """A setting or input the tool cannot use; the message says what to change."""


class UnsupportedModelError(QAConfigError):
    """A model the tool cannot drive as it is configured."""


# --------------------------------------------------------------------------------------------
# Character offsets for tokenizers that cannot report them
# --------------------------------------------------------------------------------------------


def _fold(text: str) -> str:
    """Case- and accent-insensitive form, so tokens of lower-casing tokenizers still match the text."""
    return "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))


_MARKERS = ("##", "\u2581", "\u0120", "</w>", "@@")


def _surface(token: str, tokenizer: Any) -> str:
    """The text a token stands for, without word-piece markers (##, ▁, Ġ, </w>)."""
    try:
        text = tokenizer.convert_tokens_to_string([token])
    except Exception:  # some Python tokenizers cannot convert a lone piece
        text = token
    text = text.strip()
    for marker in _MARKERS:
        if text.startswith(marker):
            text = text[len(marker):]
        if text.endswith(marker):
            text = text[: -len(marker)]
    return _fold(text.strip())


def align_offsets(text: str, surfaces: list[str], lookahead: int = 16) -> list[tuple[int, int]]:
    """Character span of each token in `text`, found by walking the text with the tokens' surfaces.

    Tokens whose surface cannot be found (unknown tokens, bytes of a split character) get the gap
    between their matched neighbours, so every token still points at the text it came from.
    """
    folded: list[str] = []
    origin: list[int] = []  # folded index -> original character index
    for i, ch in enumerate(text):
        for f in _fold(ch):
            folded.append(f)
            origin.append(i)
    flat = "".join(folded)
    spans: list[tuple[int, int] | None] = []
    pos, lost = 0, False
    for surface in surfaces:
        while pos < len(flat) and flat[pos].isspace():
            pos += 1
        # after an unmatched token the text may have moved on by any amount: search without a bound
        hit = flat.find(surface, pos, None if lost else pos + len(surface) + lookahead) if surface else -1
        lost = hit < 0
        if lost:
            spans.append(None)
            continue
        end = hit + len(surface)
        spans.append((origin[hit], origin[end - 1] + 1))
        pos = end
    return _fill_gaps(text, spans)


def _fill_gaps(text: str, spans: list[tuple[int, int] | None]) -> list[tuple[int, int]]:
    """Give unmatched tokens the stripped text between the matched tokens around them."""
    out: list[tuple[int, int]] = []
    prev_end = 0
    for i, span in enumerate(spans):
        if span is not None:
            out.append(span)
            prev_end = span[1]
            continue
        nxt = next((s[0] for s in spans[i + 1:] if s is not None), len(text))
        out.append(_trim(text, prev_end, max(prev_end, nxt)))
    return out


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Drop whitespace at a span's edges (SentencePiece offsets include the space before a word)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


# --------------------------------------------------------------------------------------------
# The pair template: where special tokens go around (question, context)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairTemplate:
    """Special tokens before, between and after the two segments, with their token type ids."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    middle_types: tuple[int, ...]
    suffix_types: tuple[int, ...]
    question_type: int
    context_type: int
    null_at: tuple[str, int]  # where "no answer" points: ("prefix"|"middle"|"suffix", index), CLS else BOS

    @property
    def num_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def _find_block(seq: list[int], block: list[int], start: int) -> int:
    for i in range(start, len(seq) - len(block) + 1):
        if seq[i:i + len(block)] == block:
            return i
    return -1


def probe_template(tokenizer: Any, call: Callable[..., dict]) -> PairTemplate:
    """Learn the pair template by encoding a known pair and locating the two segments in it."""
    q_ids = call(_PROBE_QUESTION, add_special_tokens=False)["input_ids"]
    c_ids = call(_PROBE_CONTEXT, add_special_tokens=False)["input_ids"]
    pair = call(_PROBE_QUESTION, _PROBE_CONTEXT, return_token_type_ids=True)
    ids = list(pair["input_ids"])
    types = list(pair.get("token_type_ids") or [0] * len(ids))
    qs = _find_block(ids, q_ids, 0)
    cs = _find_block(ids, c_ids, qs + len(q_ids)) if qs >= 0 else -1
    if qs < 0 or cs < 0:
        raise UnsupportedModelError(
            f"{type(tokenizer).__name__}: encoding a question/context pair does not contain the two texts' "
            "own tokens in order, so windows cannot be framed; use a tokenizer that encodes sentence pairs"
        )
    qe, ce = qs + len(q_ids), cs + len(c_ids)
    parts = {"prefix": ids[:qs], "middle": ids[qe:cs], "suffix": ids[ce:]}
    null_at = ("prefix", 0)  # no CLS or BOS: the first token (a question token, never part of an answer)
    for token in (tokenizer.cls_token_id, tokenizer.bos_token_id):
        found = [(name, part.index(token)) for name, part in parts.items() if token is not None and token in part]
        if found:
            null_at = found[0]
            break
    return PairTemplate(
        prefix=tuple(ids[:qs]), middle=tuple(ids[qe:cs]), suffix=tuple(ids[ce:]),
        prefix_types=tuple(types[:qs]), middle_types=tuple(types[qe:cs]), suffix_types=tuple(types[ce:]),
        question_type=types[qs] if q_ids else 0, context_type=types[cs] if c_ids else 0, null_at=null_at,
    )


# --------------------------------------------------------------------------------------------
# The family
# --------------------------------------------------------------------------------------------


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
        """Inspect the tokenizer, config and forward() once; fix what the model needs to run."""
        config = model.config
        params = frozenset(inspect.signature(model.forward).parameters)
        if "start_positions" not in params:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no start/end span head (it classifies over a fixed answer set), "
                "so it cannot do extractive question answering; use a model with a span head")
        call = _plain_call(tokenizer)
        _ensure_pad_token(tokenizer, model)
        _ensure_default_language(model)
        fixed, multiple = _length_rule(config, params, max_seq_length)
        limit = model_length_limit(model, tokenizer)
        if limit is not None and max_seq_length > limit:
            raise QAConfigError(f"--max_seq_length {max_seq_length} is longer than this model takes ({limit} "
                                f"positions): pass --max_seq_length {limit} or less")
        if limit is not None and fixed is None:
            multiple = multiple if math.ceil(max_seq_length / multiple) * multiple <= limit else 1
        fast = bool(getattr(tokenizer, "is_fast", False)) and not force_alignment and _has_offsets(call)
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
        """Only when the model takes them and has an embedding for every type id the template uses."""
        t = self.template
        types = {*t.prefix_types, *t.middle_types, *t.suffix_types, t.question_type, t.context_type}
        vocab = getattr(self.model_config, "type_vocab_size", None)
        return ("token_type_ids" in self.forward_params and types != {0}
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
        return names | set(self.extra_inputs(torch.zeros((1, 8), dtype=torch.long), torch.ones(1, dtype=torch.long)))

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
            enc = self._call(texts, add_special_tokens=False, return_offsets_mapping=True)
            return [
                (ids, *_split_offsets(text, offs))
                for text, ids, offs in zip(texts, enc["input_ids"], enc["offset_mapping"])
            ]
        return [self._encode_by_alignment(text) for text in texts]

    def encode_ids(self, texts: list[str]) -> list[list[int]]:
        return list(self._call(texts, add_special_tokens=False)["input_ids"]) if texts else []

    def _encode_by_alignment(self, text: str) -> tuple[list[int], list[int], list[int]]:
        tokens = self.tokenizer.tokenize(text)
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        spans = align_offsets(text, [_surface(t, self.tokenizer) for t in tokens])
        return (ids, *_split_offsets(text, spans))

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

    def token_inputs(self, input_ids: list[int]) -> dict[str, list[int]]:
        """Per-token inputs some tokenizers derive from the tokens (RoCBert's shape and pronunciation)."""
        out: dict[str, list[int]] = {}
        tokens = None
        for name, method in (("input_shape_ids", "convert_tokens_to_shape_ids"),
                             ("input_pronunciation_ids", "convert_tokens_to_pronunciation_ids")):
            if name in self.forward_params and hasattr(self.tokenizer, method):
                tokens = tokens or self.tokenizer.convert_ids_to_tokens(input_ids)
                out[name] = list(getattr(self.tokenizer, method)(tokens))
        return out

    # ---- batches ----------------------------------------------------------------------------

    def padded_length(self, longest: int, pad_to_max_length: bool, max_seq_length: int) -> int:
        if self.fixed_length:
            return self.fixed_length
        target = max_seq_length if pad_to_max_length else longest
        return int(math.ceil(target / self.pad_multiple) * self.pad_multiple)

    def extra_inputs(self, input_ids: torch.Tensor, context_start: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inputs a model needs beyond ids/mask/types, built for a padded batch."""
        b, n = input_ids.shape
        p = self.forward_params
        extra: dict[str, torch.Tensor] = {}
        if "global_attention_mask" in p:  # Longformer, LED: the question attends globally
            extra["global_attention_mask"] = (torch.arange(n)[None, :] < context_start[:, None]).long()
        if "bbox" in p:  # layout models: text with no layout sits in a zero box
            extra["bbox"] = torch.zeros((b, n, 4), dtype=torch.long)
        return extra


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


def _split_offsets(text: str, spans: list) -> tuple[list[int], list[int]]:
    starts, ends = [], []
    for s, e in spans:
        s, e = _trim(text, s, e)
        starts.append(s)
        ends.append(e)
    return starts, ends


def _plain_call(tokenizer: Any) -> Callable[..., dict]:
    """Call a tokenizer on plain text even when its __call__ wants words with boxes or xpaths.

    Layout and markup tokenizers (LayoutLMv3, LiLT, MarkupLM) take a context as a list of words, each with
    a box or an xpath; a whole text passed as one word, in a blank box, keeps its offsets relative to the text.
    """
    params = inspect.signature(tokenizer.__call__).parameters
    key = "boxes" if "boxes" in params else "xpaths" if "xpaths" in params else None
    if key is None:
        return tokenizer
    blank = [0, 0, 0, 0] if key == "boxes" else "/html/body"

    def call(text, text_pair=None, **kwargs):
        if text_pair is not None:
            return tokenizer(text, [text_pair], **{key: [blank]}, **kwargs)
        if isinstance(text, list):
            return tokenizer([[t] for t in text], **{key: [[blank] for _ in text]}, **kwargs)
        return tokenizer([text], **{key: [blank]}, **kwargs)

    return call


def _has_offsets(call: Callable[..., dict]) -> bool:
    try:
        return "offset_mapping" in call(_PROBE_CONTEXT, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):
        return False


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
