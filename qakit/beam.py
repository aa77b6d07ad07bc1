"""The beam-search span head of XLNet, XLM and FlauBERT (`...ForQuestionAnswering`, not `...Simple`).

At inference these models return, per window, the probabilities (despite the `_log_probs` names: they
are softmax outputs) of their `S = start_n_top` best starts, and for each of those starts the `E =
end_n_top` best ends, plus one answerability logit (`cls_logits`, higher = no answer). The ends come
from a top-k over dim 1 of a (batch, length, S) tensor, so they are laid out (E, S) when flattened: the
end of rank j for start rank i sits at column `j * S + i` (HF's run_qa_beam_search reads `i * E + j`,
which pairs starts with other starts' ends). Spans are scored log p_start + log p_end, as the original
XLNet SQuAD code did with log-softmax.

`beam_candidates` turns one batch of these outputs into the same per-window candidate tuple as
`utils_qa.top_candidates`, so gathering and `utils_qa.postprocess(..., null_is_odds=True)` take it
unchanged; `postprocess_beam_reference` is the plain loop the tests hold it to.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from qakit.alignment import trim
from qakit.windows import WindowIndex
from utils_qa import NO_SPAN_ODDS, QAPredictions, _pad_columns, _top_k_stable, _without_gc, add_probabilities


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
    best, pair = _top_k_stable(flat, n_best)
    valid = torch.isfinite(best)
    pick = lambda x, pad: x.reshape(len(x), -1).gather(1, pair).masked_fill(~valid, pad)  # noqa: E731
    out = [pick(starts, -1).int(), pick(ends, -1).int(), pick(start_lp, float("-inf")),
           pick(end_lp, float("-inf"))]
    out = [_pad_columns(t, n_best, -1 if t.dtype == torch.int32 else float("-inf")) for t in out]
    null = cls_logits.double()
    bad = (~torch.isfinite(start_top_log_probs).all(1) | ~torch.isfinite(end_top_log_probs).all(1)
           | ~torch.isfinite(null))
    return (*out, null, bad)


def _log64_of_32(p: float) -> float:
    """log p as `beam_candidates` takes it (float64, then float32), for one plain number."""
    p = float(p)
    value = math.log(p) if p > 0 else (-math.inf if p == 0 else math.nan)
    return float(np.float32(value))


@_without_gc
def postprocess_beam_reference(ids: list[str], contexts: list[str], windows: WindowIndex,
                               start_top_log_probs: Sequence, start_top_index: Sequence,
                               end_top_log_probs: Sequence, end_top_index: Sequence, cls_logits: Sequence,
                               context_end: Sequence[int], n_best_size: int, max_answer_length: int,
                               version_2_with_negative: bool, null_score_diff_threshold: float = 0.0) -> QAPredictions:
    """The obvious loop over every window, start rank and end rank; the oracle the vectorized path must equal.

    Null odds are the smallest answerability logit over the question's windows; n-best lists hold spans only.
    """
    by_example: dict[int, list[int]] = {}
    for w, e in enumerate(windows.example_index.tolist()):
        by_example.setdefault(e, []).append(w)
    preds, best, odds, nbest = {}, {}, {}, {}
    for e, qid in enumerate(ids):
        spans, null = [], math.inf
        for w in by_example.get(e, []):
            cs, ce = int(windows.context_start[w]), int(context_end[w])
            char_starts, char_ends = windows.offsets(w)
            null = min(null, float(cls_logits[w]))
            n_start = len(start_top_index[w])
            for i in range(n_start):
                a, ls = int(start_top_index[w][i]), _log64_of_32(start_top_log_probs[w][i])
                for j in range(len(end_top_index[w]) // n_start):
                    k = j * n_start + i  # the (E, S) layout: see the module docstring
                    b, le = int(end_top_index[w][k]), _log64_of_32(end_top_log_probs[w][k])
                    if not (cs <= a <= b < ce and b - a + 1 <= max_answer_length and math.isfinite(ls + le)):
                        continue
                    spans.append({"offsets": [int(char_starts[a - cs]), int(char_ends[b - cs])],
                                  "start_logit": ls, "end_logit": le, "score": ls + le})
        spans = sorted(spans, key=lambda p: -p["score"])[:n_best_size]
        for p in spans:
            p["offsets"] = list(trim(contexts[e], *p["offsets"]))
            p["text"] = contexts[e][p["offsets"][0]:p["offsets"][1]]
        best[qid] = spans[0]["text"] if spans else ""
        preds[qid] = best[qid]
        if version_2_with_negative:
            odds[qid] = NO_SPAN_ODDS if null == math.inf else null
            preds[qid] = "" if odds[qid] > null_score_diff_threshold else best[qid]
        add_probabilities(spans)
        nbest[qid] = spans
    return QAPredictions(preds, best, odds, nbest)
