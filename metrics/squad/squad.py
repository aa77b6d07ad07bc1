"""SQuAD v1.1 metric for `evaluate.load("metrics/squad")`, offline, same inputs as the hub metric.

The numbers come from compute_score.score_v1, so they equal the command line's.
"""

import datasets
import evaluate

from .compute_score import score_v1
from .squad_common import gold_from_references, predictions_by_id

_DESCRIPTION = "Exact match and F1 of SQuAD v1.1, identical to the official evaluate-v1.1.py."

_CITATION = (
    "@inproceedings{rajpurkar-etal-2016-squad, title={SQuAD: 100,000+ Questions for Machine Comprehension of Text},"
    " author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy}, booktitle={EMNLP},"
    " year={2016}}"
)

_KWARGS_DESCRIPTION = (
    "predictions: list of {'id', 'prediction_text'}.\n"
    "references: list of {'id', 'answers': {'text': [...], 'answer_start': [...]}}.\n"
    "language: a language code (en, zh, de, ...; docs/languages.md) to normalize answers by MLQA's rules for it;\n"
    "default None, SQuAD's official English rules.\n"
    "Returns exact_match and f1 (percentages)."
)


class Squad(evaluate.Metric):
    """Hub-compatible wrapper around score_v1."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions: list[dict], references: list[dict], language: str | None = None) -> dict:
        return score_v1(gold_from_references(references), predictions_by_id(predictions), language=language)
