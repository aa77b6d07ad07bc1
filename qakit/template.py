"""Where a tokenizer puts its special tokens around a (question, context) pair, learnt by encoding one.

Nothing here knows a model by name: the template (prefix, middle, suffix, token types, and the null
position the span head points at for "no answer") comes from encoding a known pair and finding the two
texts' own tokens in it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from qakit.errors import UnsupportedModelError

# Probe texts used to discover the pair template; distinct, plain words that every vocabulary covers.
PROBE_QUESTION = "what is it"
PROBE_CONTEXT = "it is here"


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
    q_ids = call(PROBE_QUESTION, add_special_tokens=False)["input_ids"]
    c_ids = call(PROBE_CONTEXT, add_special_tokens=False)["input_ids"]
    pair = call(PROBE_QUESTION, PROBE_CONTEXT, return_token_type_ids=True)
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


def plain_call(tokenizer: Any) -> Callable[..., dict]:
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


def has_offsets(call: Callable[..., dict]) -> bool:
    """Whether the tokenizer reports character offsets itself (fast tokenizers do, with few exceptions)."""
    try:
        return "offset_mapping" in call(PROBE_CONTEXT, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):
        return False


def probe_single(tokenizer: Any, call: Callable[..., dict]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Special tokens the tokenizer puts before and after one text (T5: none and `</s>`; BART: `<s>`, `</s>`)."""
    plain = call(PROBE_CONTEXT, add_special_tokens=False)["input_ids"]
    framed = list(call(PROBE_CONTEXT)["input_ids"])
    at = _find_block(framed, plain, 0)
    if at < 0:
        raise UnsupportedModelError(f"{type(tokenizer).__name__}: encoding a text with special tokens does not "
                                    "contain the text's own tokens, so inputs cannot be framed")
    return tuple(framed[:at]), tuple(framed[at + len(plain):])
