"""Windows to padded batches, with the inputs each model family needs."""

from __future__ import annotations

from typing import Any

import torch

from qakit.family import QAFamily
from qakit.windows import EVAL_META


class QACollator:
    """Pads windows on the right to the batch's longest (or a fixed length) and adds family inputs.

    Right padding for every family: a span head scores each position, so real tokens keep positions
    0..n-1 and the null index stays where the features put it, whatever side the tokenizer pads on.
    Bookkeeping the trainer needs (context range, null position, window index) travels in `qa_meta`.
    """

    def __init__(self, family: QAFamily, max_seq_length: int, pad_to_max_length: bool = False):
        self.family = family
        self.max_seq_length = max_seq_length
        self.pad_to_max_length = pad_to_max_length

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        fam = self.family
        n = fam.padded_length(max(len(r["input_ids"]) for r in rows), self.pad_to_max_length, self.max_seq_length)
        batch: dict[str, Any] = {}
        token_keys = [k for k, v in rows[0].items() if isinstance(v, list) and k not in EVAL_META]
        for key in token_keys:
            pad = fam.pad_token_id if key == "input_ids" else 0
            batch[key] = torch.tensor([r[key] + [pad] * (n - len(r[key])) for r in rows], dtype=torch.long)
        lengths = torch.tensor([len(r["input_ids"]) for r in rows])
        if fam.uses_attention_mask:
            batch["attention_mask"] = (torch.arange(n)[None, :] < lengths[:, None]).long()
        meta = {k: torch.tensor([r[k] for r in rows]) for k in ("context_start", "context_end", "null_index",
                                                               "feature_index") if k in rows[0]}
        batch.update(fam.extra_inputs(batch["input_ids"]))
        for key in ("start_positions", "end_positions"):
            if key in rows[0]:
                batch[key] = torch.tensor([r[key] for r in rows], dtype=torch.long)
        batch["qa_meta"] = meta
        return batch
