"""Character offsets for tokenizers that cannot report them (Python tokenizers, byte-level pieces).

Each token's text is found again in the context by walking the text with the tokens' surfaces, so every
family gets the (start, end) character offsets that fast tokenizers return; offsets are trimmed of
surrounding whitespace either way, so an answer never starts or ends on a space.
"""

from __future__ import annotations

import unicodedata
from typing import Any


def _fold(text: str) -> str:
    """Case- and accent-insensitive form, so tokens of lower-casing tokenizers still match the text."""
    return "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))


_MARKERS = ("##", "\u2581", "\u0120", "</w>", "@@")


def surface(token: str, tokenizer: Any) -> str:
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
        out.append(trim(text, prev_end, max(prev_end, nxt)))
    return out


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Drop whitespace at a span's edges (SentencePiece offsets include the space before a word)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def split_offsets(text: str, spans: list) -> tuple[list[int], list[int]]:
    """Whitespace-trimmed start and end characters of each token span, as two lists."""
    starts, ends = [], []
    for s, e in spans:
        s, e = trim(text, s, e)
        starts.append(s)
        ends.append(e)
    return starts, ends


def encode_by_alignment(tokenizer: Any, text: str) -> tuple[list[int], list[int], list[int]]:
    """Token ids with character offsets for a tokenizer that has no offset mapping."""
    tokens = tokenizer.tokenize(text)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    spans = align_offsets(text, [surface(t, tokenizer) for t in tokens])
    return (ids, *split_offsets(text, spans))
