#!/usr/bin/env python
"""Post-processing of all dev-v2.0 windows: ours (array operations) vs the plain loop, same outputs.

    python benchmarks/bench_postprocess.py [path/to/dev-v2.0.json]

Windows come from MiniLM's tokenizer at max_seq_length 384 / doc_stride 128; logits are seeded random
numbers (the work does not depend on their values). The plain loop takes full logits; ours takes each
window's best spans, which evaluation finds on the device inside the loop, batch by batch. Ours is timed
alone, with its n-best lists turned into dicts (the plain loop builds dicts), and with the per-window
candidates also found here on the CPU.
"""

from __future__ import annotations

import sys

import datasets
import numpy as np
import torch

from common import minilm, squad_path, timer

import reference
import squad_v2
from helpers import assemble_spans, assert_same_answers
from qakit import spans
from qakit.answers import QAPredictions
from qakit.family import QAFamily
from qakit.windows import WindowIndex, prepare_eval_features


def same(ref: QAPredictions, ours: QAPredictions, nbest: dict) -> bool:
    try:
        assert_same_answers(ref, ours, nbest)
    except AssertionError:
        return False
    return True


def main() -> None:
    path = squad_path("dev-v2.0.json", sys.argv[1] if len(sys.argv) > 1 else None)
    model, tok = minilm()
    family = QAFamily.detect(model, tok, 384)
    examples, _ = squad_v2.read_squad_file(str(path), "validation")
    batch = examples[:]
    feats = datasets.Dataset.from_dict(
        prepare_eval_features(batch, list(range(len(examples))), family, 384, 128))
    windows = WindowIndex.from_features(feats)
    rng = np.random.default_rng(0)
    start = rng.standard_normal((len(feats), 384)).astype(np.float32)
    end = rng.standard_normal((len(feats), 384)).astype(np.float32)
    context_start, context_end = np.array(feats["context_start"]), np.array(feats["context_end"])
    null_index = np.array(feats["null_index"])
    args = (batch["id"], batch["context"], windows)
    t: dict[str, float] = {}
    with timer(t, "plain loop"):
        ref = reference.postprocess_reference(*args, list(start), list(end), context_end.tolist(), null_index.tolist(),
                                             20, 30, True, 0.0)
    with timer(t, "candidates (CPU)"):
        cand = spans.top_candidates(torch.from_numpy(start), torch.from_numpy(end), torch.from_numpy(context_start),
                                       torch.from_numpy(context_end), torch.from_numpy(null_index), 20, 30)
        cand = spans.candidates_from_arrays(tuple(c.numpy() for c in cand))
    with timer(t, "ours"):
        ours = assemble_spans(*args, cand, 20, True, 0.0)
    with timer(t, "ours: n-best as dicts"):
        ours_nbest = ours.nbest_dict()
    print(f"{len(feats):,} windows, {len(examples):,} questions, torch threads {torch.get_num_threads()}")
    for k, v in t.items():
        print(f"  {k:<18} {v:8.3f} s")
    print(f"identical outputs: {same(ref, ours, ours_nbest)}")
    plain = t["plain loop"]
    print(f"speed-up, post-processing (n-best in columns, as evaluation keeps it): {plain / t['ours']:.1f}x")
    print(f"speed-up, post-processing + n-best as dicts:                         "
          f"{plain / (t['ours'] + t['ours: n-best as dicts']):.1f}x")
    print(f"speed-up, with the candidates also taken here on the CPU:            "
          f"{plain / (t['ours'] + t['ours: n-best as dicts'] + t['candidates (CPU)']):.1f}x")

if __name__ == "__main__":
    main()
