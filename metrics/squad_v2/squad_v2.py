"""SQuAD v2.0 metric for `evaluate.load("metrics/squad_v2")`, offline, same inputs as the hub metric.

The numbers come from compute_score.score_v2, so they equal the command line's.
"""

import datasets
import evaluate

from .compute_score import score_v2
from .squad_common import gold_from_references, predictions_by_id

_DESCRIPTION = "Exact match and F1 of SQuAD v2.0, identical to the official evaluate-v2.0.py."

_CITATION = (
    "@inproceedings{rajpurkar-etal-2018-know, title={Know What You Don't Know: Unanswerable Questions for SQuAD},"
    " author={Rajpurkar, Pranav and Jia, Robin and Liang, Percy}, booktitle={ACL}, year={2018}}"
)

_KWARGS_DESCRIPTION = (
    "predictions: list of {'id', 'prediction_text', 'no_answer_probability'}.\n"
    "references: list of {'id', 'answers': {'text': [...], 'answer_start': [...]}}; no text = unanswerable.\n"
    "no_answer_threshold: a question is answered 'no answer' when its probability exceeds this (default 1.0).\n"
    "language: a language code (en, zh, de, ...; docs/languages.md) to normalize answers by MLQA's rules for it;\n"
    "default None, SQuAD's official English rules.\n"
    "Returns exact, f1, total, HasAns_*/NoAns_* (when present), best_exact(_thresh), best_f1(_thresh)."
)


class SquadV2(evaluate.Metric):
    """Hub-compatible wrapper; probabilities are kept as float64 so thresholds equal the CLI's."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "id": datasets.Value("string"),
                        "prediction_text": datasets.Value("string"),
                        "no_answer_probability": datasets.Value("float64"),
                    },
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions: list[dict], references: list[dict], no_answer_threshold: float = 1.0,
                 language: str | None = None) -> dict:
        na_probs = {prediction["id"]: prediction["no_answer_probability"] for prediction in predictions}
        return score_v2(gold_from_references(references), predictions_by_id(predictions), na_probs, no_answer_threshold,
                        language=language)
