"""Windows to padded batches, with the inputs each model family needs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from qakit.beam import beam_inputs
from qakit.family import QAFamily
from qakit.windows import EVAL_META


class QACollator:
    """Pads windows on the right to the batch's longest (or a fixed length) and adds family inputs.

    Right padding for every family: a span head scores each position, so real tokens keep positions
    0..n-1 and the null index stays where the features put it, whatever side the tokenizer pads on.
    Bookkeeping the trainer needs (context range, null position, window index) travels in `qa_meta`.
    """

    def __init__(self, family: QAFamily, max_seq_length: int, pad_to_max_length: bool = False, beam: bool = False):
        self.family = family
        self.max_seq_length = max_seq_length
        self.pad_to_max_length = pad_to_max_length
        self.beam = beam  # the beam-search head also takes p_mask and cls_index (and is_impossible to train)

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
        if self.beam:
            batch.update(beam_inputs(meta["context_start"], meta["context_end"], meta["null_index"], n,
                                     batch.get("start_positions")))
        batch["qa_meta"] = meta
        return batch


class Seq2SeqCollator:
    """Pads encoder inputs on the right and targets with -100 (HF's --ignore_pad_token_for_loss), or with
    the pad token when that flag is off, as HF's DataCollatorForSeq2Seq does."""

    def __init__(self, family: QAFamily, max_seq_length: int, pad_to_max_length: bool = False,
                 ignore_pad_token_for_loss: bool = True):
        self.family = family
        self.max_seq_length = max_seq_length
        self.pad_to_max_length = pad_to_max_length
        self.label_pad = -100 if ignore_pad_token_for_loss else family.pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        fam = self.family
        n = fam.padded_length(max(len(r["input_ids"]) for r in rows), self.pad_to_max_length, self.max_seq_length)
        ids = [r["input_ids"] for r in rows]
        batch: dict[str, Any] = {
            "input_ids": torch.tensor([x + [fam.pad_token_id] * (n - len(x)) for x in ids], dtype=torch.long),
            "attention_mask": torch.tensor([[1] * len(x) + [0] * (n - len(x)) for x in ids], dtype=torch.long)}
        if "labels" in rows[0]:
            width = max(len(r["labels"]) for r in rows)
            batch["labels"] = torch.tensor([r["labels"] + [self.label_pad] * (width - len(r["labels"]))
                                            for r in rows], dtype=torch.long)
        if "feature_index" in rows[0]:
            batch["qa_meta"] = {"feature_index": torch.tensor([r["feature_index"] for r in rows])}
        return batch


def restore_order(gathered: tuple[np.ndarray, ...], n_windows: int) -> tuple[np.ndarray, ...]:
    """Put gathered windows back in feature order, checking each arrived exactly once."""
    feature_index = np.asarray(gathered[0]).astype(np.int64)
    if len(feature_index) != n_windows or not np.array_equal(np.sort(feature_index), np.arange(n_windows)):
        raise RuntimeError(f"evaluation gathered {len(feature_index)} windows for {n_windows}: some were lost "
                           "or duplicated across processes (--dataloader_drop_last drops the last batch)")
    inverse = np.empty(n_windows, dtype=np.int64)
    inverse[feature_index] = np.arange(n_windows)
    return tuple(np.asarray(a)[inverse] for a in gathered[1:])
