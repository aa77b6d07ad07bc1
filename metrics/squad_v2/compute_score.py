"""SQuAD v2.0 scorer: a drop-in for the official evaluate-v2.0.py, standard library only.

Usage: python metrics/squad_v2/compute_score.py DATA PRED [-n NA_PROB] [-t THRESH] [-o OUT]
"""

import argparse
import json
import sys
from collections.abc import Mapping
from functools import partial

if __package__:
    from . import squad_common
else:  # run as a script: this file's directory is on sys.path
    import squad_common

_f1 = partial(squad_common.token_f1, empty_is_no_answer=True)
_SHOWN_IDS = 5


class MissingPredictionsError(squad_common.ScoreInputError):
    """Raised because v2.0 scores are undefined unless every question has a value."""


def _require_every_question(gold: Mapping[str, object], values: Mapping[str, object], what: str) -> None:
    """Fail loudly (the official script dies with a bare KeyError) naming the missing ids."""
    missing = [qid for qid in gold if qid not in values]
    if missing:
        shown = ", ".join(missing[:_SHOWN_IDS]) + (", ..." if len(missing) > _SHOWN_IDS else "")
        raise MissingPredictionsError(f"no {what} for {len(missing)} of {len(gold)} questions: {shown}")


def _raw_scores(gold: Mapping[str, list[str]], preds: Mapping[str, str]) -> tuple[dict[str, int], dict[str, float]]:
    """EM and F1 per question before the no-answer threshold.

    Gold answers that normalize to nothing are dropped; a question left without any is
    scored against the empty answer.
    """
    exact: dict[str, int] = {}
    f1: dict[str, float] = {}
    for qid, answers in gold.items():
        targets = [answer for answer in answers if squad_common.normalize_answer(answer)] or [""]
        exact[qid] = squad_common.best_over_golds(squad_common.exact_match, preds[qid], targets)
        f1[qid] = squad_common.best_over_golds(_f1, preds[qid], targets)
    return exact, f1


def _apply_threshold(
    scores: Mapping[str, float], na_probs: Mapping[str, float], has_answer: Mapping[str, bool], thresh: float
) -> dict[str, float]:
    """A question whose no-answer probability exceeds thresh is answered "no answer"."""
    return {qid: float(not has_answer[qid]) if na_probs[qid] > thresh else score for qid, score in scores.items()}


def _summary(exact: Mapping[str, float], f1: Mapping[str, float], qids: list[str], prefix: str = "") -> dict:
    """Percentages over qids, summed in dataset order then divided, as the official does."""
    total = len(qids)
    return {
        f"{prefix}exact": 100.0 * sum(exact[qid] for qid in qids) / total,
        f"{prefix}f1": 100.0 * sum(f1[qid] for qid in qids) / total,
        f"{prefix}total": total,
    }


def _best_threshold(
    scores: Mapping[str, float],
    preds: Mapping[str, str],
    na_probs: Mapping[str, float],
    has_answer: Mapping[str, bool],
) -> tuple[float, float]:
    """Score of the best no-answer threshold and that threshold, with the official tie rules.

    Starting from "everything is no-answer", questions are switched to answered in order of
    rising probability (stable sort in na_probs order); only a strict improvement moves the
    threshold. Ids absent from the gold data are skipped.
    """
    current = best = sum(1 for answerable in has_answer.values() if not answerable)
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda key: na_probs[key]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            current += scores[qid]
        elif preds[qid]:
            current -= 1
        if current > best:
            best, best_thresh = current, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def score_v2(
    gold: dict[str, list[str]],
    preds: dict[str, str],
    na_probs: dict[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict:
    """Official SQuAD v2.0 scores; gold maps id -> answer texts (empty list = unanswerable).

    Without na_probs every probability is 0.0 and no best_* keys are reported. Predictions
    for unknown ids are ignored; a missing prediction raises MissingPredictionsError.
    """
    squad_common.check_predictions(preds)
    if na_probs is not None:
        squad_common.check_na_probs(na_probs)
    _require_every_question(gold, preds, "prediction")
    probs = {qid: 0.0 for qid in preds} if na_probs is None else na_probs
    _require_every_question(gold, probs, "no-answer probability")
    has_answer = {qid: bool(answers) for qid, answers in gold.items()}
    exact_raw, f1_raw = _raw_scores(gold, preds)
    exact = _apply_threshold(exact_raw, probs, has_answer, na_prob_thresh)
    f1 = _apply_threshold(f1_raw, probs, has_answer, na_prob_thresh)
    result = _summary(exact, f1, list(gold))
    for prefix, answerable in (("HasAns_", True), ("NoAns_", False)):
        qids = [qid for qid, has in has_answer.items() if has is answerable]
        if qids:
            result.update(_summary(exact, f1, qids, prefix))
    if na_probs is not None:
        best_exact, best_exact_thresh = _best_threshold(exact_raw, preds, na_probs, has_answer)
        best_f1, best_f1_thresh = _best_threshold(f1_raw, preds, na_probs, has_answer)
        result.update(
            best_exact=best_exact, best_exact_thresh=best_exact_thresh, best_f1=best_f1, best_f1_thresh=best_f1_thresh
        )
    return result


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Same arguments as the official evaluate-v2.0.py."""
    parser = argparse.ArgumentParser(description="SQuAD v2.0 scorer (drop-in for the official evaluate-v2.0.py).")
    parser.add_argument("data_file", metavar="data.json", help="Input data JSON file.")
    parser.add_argument("pred_file", metavar="pred.json", help="Model predictions.")
    parser.add_argument("--out-file", "-o", metavar="eval.json", help="Write metrics to file (default is stdout).")
    parser.add_argument("--na-prob-file", "-n", metavar="na_prob.json", help="Probability of no answer per id.")
    parser.add_argument(
        "--na-prob-thresh", "-t", type=float, default=1.0, help='Predict "" if no-answer probability exceeds this.'
    )
    parser.add_argument("--out-image-dir", "-p", metavar="out_images", help="Accepted; plots are not supported.")
    parser.add_argument("--verbose", "-v", action="store_true", help="Accepted; no effect, as in the official script.")
    return parser.parse_args(argv)


def _data(dataset: object, path: str) -> list:
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise squad_common.ScoreInputError(f"{path} has no 'data' list: it is not a SQuAD data file")
    return dataset["data"]


def main(argv: list[str] | None = None) -> None:
    """Read the files, score, and print (or write) the metrics as the official script does."""
    args = _parse_args(argv)
    if args.out_image_dir:
        print("note: precision-recall plots are not supported; --out-image-dir is ignored", file=sys.stderr)
    try:
        gold = squad_common.gold_from_dataset(_data(squad_common.read_json(args.data_file), args.data_file),
                                              args.data_file)
        preds = squad_common.read_json(args.pred_file)
        squad_common.check_predictions(preds, args.pred_file)
        na_probs = squad_common.read_json(args.na_prob_file) if args.na_prob_file else None
        if na_probs is not None:
            squad_common.check_na_probs(na_probs, args.na_prob_file)
        result = score_v2(gold, preds, na_probs, args.na_prob_thresh)
    except squad_common.ScoreInputError as error:
        sys.exit(f"error: {error}")
    if args.out_file:
        with open(args.out_file, "w", encoding="utf-8") as handle:
            json.dump(result, handle)
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
