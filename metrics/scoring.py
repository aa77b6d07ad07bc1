"""The pipeline's scoring step: a run's answers against the gold answers, by the official rules (or by a
language's, docs/languages.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from metrics.squad.compute_score import score_v1
from metrics.squad_v2.compute_score import score_v2


def score_answers(ids: Iterable[str], answers: Iterable[Mapping], predictions: dict[str, str],
                  best_spans: dict[str, str], null_odds: dict[str, float], version_2_with_negative: bool,
                  null_score_diff_threshold: float, *, language: str | None = None) -> dict[str, float]:
    """v1.1 scores the thresholded predictions; v2 scores the best spans with the model's real null odds,
    so best_f1_thresh is a threshold the user can pass back as --null_score_diff_threshold; `best_threshold`
    is one that always gives best_f1 (see `threshold_for_best_f1`). A language (one of
    metrics.squad_v2.squad_common.LANGUAGES) scores by MLQA's rules for it; None by SQuAD's official ones."""
    gold = {qid: list(a["text"]) for qid, a in zip(ids, answers)}
    if version_2_with_negative:
        scores = dict(score_v2(gold, best_spans, na_probs=null_odds, na_prob_thresh=null_score_diff_threshold,
                               language=language))
        if "best_f1" in scores:
            scores["best_threshold"] = threshold_for_best_f1(scores, null_odds)
        return scores
    return dict(score_v1(gold, predictions, language=language))


def score_names(version_2_with_negative: bool) -> list[str]:
    """The names of the scores `score_answers` reports (v2: HasAns_* and NoAns_* when the data has such questions),
    read from scoring one answerable and one unanswerable question, so that a flag naming one
    (--metric_for_best_model) is checked before a run against the scorer itself, not against a copied list."""
    ids, golds, answers = ["a", "n"], [{"text": ["x"]}, {"text": []}], {"a": "x", "n": ""}
    n = 2 if version_2_with_negative else 1  # v1.1 data has no unanswerable question
    return list(score_answers(ids[:n], golds[:n], answers, answers, {"a": 0.0, "n": 0.0}, version_2_with_negative,
                              0.0))


def threshold_for_best_f1(scores: Mapping[str, float], null_odds: Mapping[str, float]) -> float:
    """A threshold that gives best_f1 when passed back: the official best_f1_thresh, except when answering
    nothing at all is best. The official sweep starts from "no answer anywhere" at threshold 0.0 and moves only
    on a strict gain, so it then reports 0.0, which answers whatever has null odds up to 0; a threshold below
    every null odds answers nothing."""
    all_null = 100.0 * scores.get("NoAns_total", 0) / scores["total"] if scores.get("total") else 0.0
    if scores["best_f1"] == all_null and null_odds:
        return min(null_odds.values()) - 1.0
    return scores["best_f1_thresh"]
