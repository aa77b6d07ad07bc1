"""SQuAD v1.1 scorer: a drop-in for the official evaluate-v1.1.py, standard library only.

Usage: python metrics/squad/compute_score.py DATASET_FILE PREDICTION_FILE [--language LANG]
"""

import argparse
import json
import sys
from functools import partial

if __package__:
    from . import squad_common
else:  # run as a script: this file's directory is on sys.path
    import squad_common

EXPECTED_VERSION = "1.1"


def score_v1(gold: dict[str, list[str]], preds: dict[str, str], *, language: str | None = None) -> dict:
    """Official SQuAD v1.1 exact_match and f1 (percentages) over every gold question.

    A missing prediction scores 0 and is reported on stderr, as the official script does;
    predictions for unknown ids are ignored. Sums are accumulated one question at a time
    in gold order, like the official loop, so the floats come out identical. A language
    (squad_common.LANGUAGES) normalizes answers by its rules, as MLQA's evaluation script does.
    """
    squad_common.check_language(language)
    squad_common.check_predictions(preds)
    unanswerable = [qid for qid, answers in gold.items() if not answers]
    if unanswerable:
        raise squad_common.ScoreInputError(
            f"{len(unanswerable)} question(s) have no gold answer (SQuAD v2.0 data?), e.g. {unanswerable[0]}: "
            "score v2.0 data with metrics/squad_v2/compute_score.py")
    exact_match = partial(squad_common.exact_match, language=language)
    token_f1 = partial(squad_common.token_f1, empty_is_no_answer=False, language=language)
    exact_total = 0
    f1_total = 0.0
    for qid, answers in gold.items():
        if qid not in preds:
            print(f"Unanswered question {qid} will receive score 0.", file=sys.stderr)
            continue
        exact_total += squad_common.best_over_golds(exact_match, preds[qid], answers)
        f1_total += squad_common.best_over_golds(token_f1, preds[qid], answers)
    return {"exact_match": 100.0 * exact_total / len(gold), "f1": 100.0 * f1_total / len(gold)}


def main(argv: list[str] | None = None) -> None:
    """Same positional arguments, stderr version check and stdout JSON as evaluate-v1.1.py (and --language)."""
    parser = argparse.ArgumentParser(description=f"Evaluation for SQuAD {EXPECTED_VERSION} (drop-in scorer).")
    parser.add_argument("dataset_file", help="Dataset file")
    parser.add_argument("prediction_file", help="Prediction File")
    squad_common.add_language_argument(parser)
    args = parser.parse_args(argv)
    try:
        squad_common.check_language(args.language)
        version, gold = squad_common.read_gold(args.dataset_file)
        if version != EXPECTED_VERSION:
            print(f"Evaluation expects v-{EXPECTED_VERSION}, but got dataset with v-{version}", file=sys.stderr)
        preds = squad_common.read_json(args.prediction_file)
        squad_common.check_predictions(preds, args.prediction_file)
        result = score_v1(gold, preds, language=args.language)
    except squad_common.ScoreInputError as error:
        sys.exit(f"error: {error}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
