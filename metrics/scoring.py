"""The pipeline's scoring step: a run's answers against the gold answers, by the official rules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from metrics.squad.compute_score import score_v1
from metrics.squad_v2.compute_score import score_v2


def score_answers(ids: Iterable[str], answers: Iterable[Mapping], predictions: dict[str, str],
                  best_spans: dict[str, str], null_odds: dict[str, float], version_2_with_negative: bool,
                  null_score_diff_threshold: float) -> dict[str, float]:
    """v1.1 scores the thresholded predictions; v2 scores the best spans with the model's real null odds,
    so best_f1_thresh is a threshold the user can pass back as --null_score_diff_threshold."""
    gold = {qid: list(a["text"]) for qid, a in zip(ids, answers)}
    if version_2_with_negative:
        return dict(score_v2(gold, best_spans, na_probs=null_odds, na_prob_thresh=null_score_diff_threshold))
    return dict(score_v1(gold, predictions))
