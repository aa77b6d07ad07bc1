"""The span head's side of answering: each window's best start/end pairs, found on the device.

Each window's best spans are found batch by batch inside the evaluation loop (`top_candidates`), so only
O(n_best) numbers per window leave the device; `span_rows` hands them to the one assembly of answers
(`qakit.answers`). The beam-search head (`qakit.beam`) gives its candidates in the same format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from qakit.answers import CandidateRows


@dataclass
class Candidates:
    """Each window's `n` best valid spans, best first, and its null score.

    Ranked exactly as the plain loop ranks them: by start + end logit (in float64), ties going to the
    better-ranked start, then end, where starts and ends are ranked by a stable descending sort.
    """

    start_index: np.ndarray  # [N, n] int32 token positions; -1 where the window has fewer valid spans
    end_index: np.ndarray  # [N, n]
    start_logit: np.ndarray  # [N, n] float32 logits as the model gave them
    end_logit: np.ndarray  # [N, n]
    null_score: np.ndarray  # [N] float64: start + end logit at the window's null position
    nonfinite: np.ndarray  # [N] bool: a NaN or infinite logit in the context or at the null position
    log_norm: np.ndarray | None = None  # [N] float64: `log_normalizer` (None: the scores are log-probabilities)


def top_k_stable(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest values per row, ties going to the lower index: a stable descending sort's first k.

    `topk` alone is fast but picks arbitrarily among equal values at the cut, so the cut is redone by
    index, and only the k survivors are sorted stably.
    """
    n, length = x.shape
    k = min(k, length)
    kth = torch.topk(x, k, dim=1).values[:, -1:]
    above, tied = x > kth, x == kth
    need = k - above.sum(1, keepdim=True)
    take = above | (tied & (tied.cumsum(1) <= need))
    index = take.nonzero()[:, 1].view(n, k)  # row-major, so ascending positions within each row
    values = x.gather(1, index)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return values.gather(1, order), index.gather(1, order)


def pad_columns(x: torch.Tensor, k: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, k - x.shape[1]), value=value) if x.shape[1] < k else x


def _masked(start_logits: torch.Tensor, end_logits: torch.Tensor, context_start: torch.Tensor,
            context_end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Start and end logits in float32 with every position outside the context (and every NaN: never best)
    at -inf, and that outside mask."""
    pos = torch.arange(start_logits.shape[1], device=start_logits.device)[None, :]
    outside = (pos < context_start[:, None]) | (pos >= context_end[:, None])
    sv, ev = (x.float().nan_to_num(nan=float("-inf")).masked_fill(outside, float("-inf"))
              for x in (start_logits, end_logits))
    return sv, ev, outside


def _finish(picked: list[torch.Tensor], valid: torch.Tensor, n_best: int, start_logits: torch.Tensor,
            end_logits: torch.Tensor, null_index: torch.Tensor, outside: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The candidates' (start, end, start logit, end logit) columns padded to `n_best` with -1 / -inf, then
    the null score and whether the window's logits are not all finite."""
    pads = (-1, -1, float("-inf"), float("-inf"))
    out = [pad_columns(t.masked_fill(~valid, pad), n_best, pad) for t, pad in zip(picked, pads)]
    rows = torch.arange(start_logits.shape[0], device=start_logits.device)
    null = start_logits[rows, null_index].double() + end_logits[rows, null_index].double()
    bad = ~(torch.isfinite(start_logits) & torch.isfinite(end_logits)) & ~outside
    return (*out, null, bad.any(1) | ~torch.isfinite(null))


def top_candidates(start_logits: torch.Tensor, end_logits: torch.Tensor, context_start: torch.Tensor,
                   context_end: torch.Tensor, null_index: torch.Tensor, n_best: int,
                   max_answer_length: int) -> tuple[torch.Tensor, ...]:
    """Each window's `n_best` best valid spans and its null score, from one batch of logits: run_qa's search,
    the `n_best` best starts paired with the `n_best` best ends.

    Only O(n_best) numbers per window leave the device, so what evaluation keeps and gathers across
    processes grows with the number of windows, not with windows x sequence length.
    """
    masked_start, masked_end, outside = _masked(start_logits, end_logits, context_start, context_end)
    sv, si = top_k_stable(masked_start, n_best)
    ev, ei = top_k_stable(masked_end, n_best)
    span = ei[:, None, :] - si[:, :, None] + 1
    score = sv.double()[:, :, None] + ev.double()[:, None, :]  # the oracle adds in float64
    ok = (span >= 1) & (span <= max_answer_length) & torch.isfinite(score)
    flat = score.masked_fill(~ok, float("-inf")).flatten(1)  # row-major: ties keep (start rank, end rank) order
    best, pair = top_k_stable(flat, n_best)
    k = si.shape[1]
    a, b = pair // k, pair % k
    picked = [si.gather(1, a).int(), ei.gather(1, b).int(), sv.gather(1, a), ev.gather(1, b)]
    return _finish(picked, torch.isfinite(best), n_best, start_logits, end_logits, null_index, outside)


def top_pairs(start_logits: torch.Tensor, end_logits: torch.Tensor, context_start: torch.Tensor,
              context_end: torch.Tensor, null_index: torch.Tensor, n_best: int,
              max_answer_length: int) -> tuple[torch.Tensor, ...]:
    """`top_candidates` over every valid (start, end) pair of the window, as transformers' question-answering
    pipeline searches; ties go to the earlier start, then the earlier end, as its argmax over the start x end
    matrix."""
    sv, ev, outside = _masked(start_logits, end_logits, context_start, context_end)
    length = sv.shape[1]
    width = min(max_answer_length, length)
    ends = torch.arange(length, device=sv.device)[:, None] + torch.arange(width, device=sv.device)[None, :]
    ev_by_pair = ev[:, ends.clamp(max=length - 1)].masked_fill(~(ends < length)[None], float("-inf"))  # [B, L, A]
    best, pair = top_k_stable((sv.double()[:, :, None] + ev_by_pair.double()).flatten(1), n_best)
    starts, ends_at = pair // width, pair // width + pair % width
    picked = [starts.int(), ends_at.int(), sv.gather(1, starts), ev.gather(1, ends_at.clamp(max=length - 1))]
    return _finish(picked, torch.isfinite(best), n_best, start_logits, end_logits, null_index, outside)


def log_normalizer(start_logits: torch.Tensor, end_logits: torch.Tensor, context_start: torch.Tensor,
                   context_end: torch.Tensor, null_index: torch.Tensor) -> torch.Tensor:
    """Each window's log of the softmax denominators over the positions an answer can take (its context
    tokens and its null position), start's plus end's, in float64: start + end logit minus it is the log of
    the probability transformers' question-answering pipeline gives a span."""
    length = start_logits.shape[1]
    pos = torch.arange(length, device=start_logits.device)[None, :]
    allowed = ((pos >= context_start[:, None]) & (pos < context_end[:, None])) | (pos == null_index[:, None])
    start, end = (torch.logsumexp(x.double().masked_fill(~allowed, float("-inf")), dim=1)
                  for x in (start_logits, end_logits))
    return start + end


def candidates_from_arrays(arrays: tuple[np.ndarray, ...]) -> Candidates:
    """The head's gathered arrays: `top_candidates`' six, the span head's `log_normalizer` before the last."""
    si, ei, sv, ev, null, *log_norm, nonfinite = arrays
    return Candidates(si.astype(np.int32, copy=False), ei.astype(np.int32, copy=False),
                      sv.astype(np.float32, copy=False), ev.astype(np.float32, copy=False),
                      null.astype(np.float64, copy=False), nonfinite.astype(bool, copy=False),
                      log_norm[0].astype(np.float64, copy=False) if log_norm else None)


def span_rows(cand: Candidates, null_is_odds: bool = False) -> CandidateRows:
    """Every window's valid spans as rows (window order, each window's best first), scored start + end logit
    in float64; `null_is_odds`: the beam head's null score is its answerability logit."""
    window, rank = np.nonzero(cand.start_index >= 0)
    sl, el = cand.start_logit[window, rank], cand.end_logit[window, rank]
    return CandidateRows(window=window, score=sl.astype(np.float64) + el.astype(np.float64),
                         null_score=cand.null_score, start_logit=sl, end_logit=el,
                         start_token=cand.start_index[window, rank], end_token=cand.end_index[window, rank],
                         null_is_odds=null_is_odds)
