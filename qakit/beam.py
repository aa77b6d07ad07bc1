"""The beam-search span head of XLNet, XLM and FlauBERT (`...ForQuestionAnswering`, not `...Simple`).

At inference these models return, per window, the probabilities (despite the `_log_probs` names: they
are softmax outputs) of their `S = start_n_top` best starts, and for each of those starts the `E =
end_n_top` best ends, plus one answerability logit (`cls_logits`, higher = no answer). The ends come
from a top-k over dim 1 of a (batch, length, S) tensor, so they are laid out (E, S) when flattened: the
end of rank j for start rank i sits at column `j * S + i` (HF's run_qa_beam_search reads `i * E + j`,
which pairs starts with other starts' ends). Spans are scored log p_start + log p_end, as the original
XLNet SQuAD code did with log-softmax.

`beam_candidates` turns one batch of these outputs into the same per-window candidate tuple as
`qakit.spans.top_candidates`, so gathering and the assembly of answers (`qakit.answers`, with the null score as
the odds) take it unchanged; the tests hold it to a plain loop (`tests/reference.py`).
"""

from __future__ import annotations

import torch

from qakit.spans import pad_columns, top_k_stable


def beam_inputs(context_start: torch.Tensor, context_end: torch.Tensor, null_index: torch.Tensor, length: int,
                start_positions: torch.Tensor | None = None, *,
                dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The head's extra inputs for one batch: `p_mask`, `cls_index` and, for training, `is_impossible`.

    The null position stays unmasked (0.0): training points start and end at it for windows without an
    answer, and a masked target would cost a loss of ~1e30. `dtype` must be the model's own for a model
    cast to half precision (no autocast): a float32 `p_mask` turns its start probabilities into float32,
    and its inference branch then fails mixing them with the half-precision hidden states.
    """
    pos = torch.arange(length, device=context_start.device)[None, :]
    inside = (pos >= context_start[:, None]) & (pos < context_end[:, None])
    keep = inside | (pos == null_index[:, None])
    out = {"p_mask": (~keep).to(dtype), "cls_index": null_index.long()}
    if start_positions is not None:
        out["is_impossible"] = (start_positions == null_index).to(dtype)
    return out


def _log32(p: torch.Tensor) -> torch.Tensor:
    """log p taken in float64, kept as float32 like the span head's logits: the candidates carry float32
    values, and `postprocess` ranks by their float64 sum, so the ranking here must use the same values."""
    return p.double().log().float()


def _by_start(x: torch.Tensor, n_start: int) -> torch.Tensor:
    """[B, E * S] columns laid out (end rank, start rank) to [B, S, E]: row i holds start rank i's ends."""
    return x.view(x.shape[0], -1, n_start).transpose(1, 2)


def beam_candidates(start_top_log_probs: torch.Tensor, start_top_index: torch.Tensor,
                    end_top_log_probs: torch.Tensor, end_top_index: torch.Tensor, cls_logits: torch.Tensor,
                    context_start: torch.Tensor, context_end: torch.Tensor, n_best: int,
                    max_answer_length: int) -> tuple[torch.Tensor, ...]:
    """Each window's `n_best` best valid (start, end) pairs of the beam, in `top_candidates`' format.

    (start index int32, end index int32, log p_start float32, log p_end float32 [B, n_best], padded with
    -1 / -inf; null = cls_logits float64 [B]; nonfinite bool [B]). Ranked by log p_start + log p_end in
    float64, ties going to the earlier pair in (start rank, end rank) order.
    """
    n_start = start_top_index.shape[1]
    start_lp = _log32(start_top_log_probs)[:, :, None].expand(-1, -1, end_top_index.shape[1] // n_start)
    end_lp = _by_start(_log32(end_top_log_probs), n_start)
    starts = start_top_index[:, :, None].expand_as(end_lp)
    ends = _by_start(end_top_index, n_start)
    score = start_lp.double() + end_lp.double()
    ok = ((starts >= context_start[:, None, None]) & (ends < context_end[:, None, None]) & (ends >= starts)
          & (ends - starts < max_answer_length) & torch.isfinite(score))
    flat = score.masked_fill(~ok, float("-inf")).reshape(len(score), -1)  # row-major: i-major, then j
    best, pair = top_k_stable(flat, n_best)
    valid = torch.isfinite(best)
    pick = lambda x, pad: x.reshape(len(x), -1).gather(1, pair).masked_fill(~valid, pad)  # noqa: E731
    out = [pick(starts, -1).int(), pick(ends, -1).int(), pick(start_lp, float("-inf")),
           pick(end_lp, float("-inf"))]
    out = [pad_columns(t, n_best, -1 if t.dtype == torch.int32 else float("-inf")) for t in out]
    null = cls_logits.double()
    bad = (~torch.isfinite(start_top_log_probs).all(1) | ~torch.isfinite(end_top_log_probs).all(1)
           | ~torch.isfinite(null))
    return (*out, null, bad)
