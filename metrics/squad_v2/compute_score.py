"""SQuAD v2.0 scorer: a drop-in for the official evaluate-v2.0.py, standard library only.

Usage: python metrics/squad_v2/compute_score.py DATA PRED [-n NA_PROB] [-t THRESH] [-o OUT] [-p IMAGE_DIR]
                                                [--language LANG]

The numbers need only the standard library; the pictures of --out-image-dir are drawn by pictures.py
(beside this file) with matplotlib, when it is installed.
"""

import argparse
import json
import os
import sys
from collections.abc import Mapping
from functools import partial
from typing import NamedTuple

if __package__:
    from . import squad_common
else:  # run as a script: this file's directory is on sys.path
    import squad_common


class MissingPredictionsError(squad_common.ScoreInputError):
    """Raised because v2.0 scores are undefined unless every question has a value."""


def _require_every_question(gold: Mapping[str, object], values: Mapping[str, object], what: str) -> None:
    """Fail loudly (the official script dies with a bare KeyError) naming the missing ids."""
    missing = [qid for qid in gold if qid not in values]
    if missing:
        raise MissingPredictionsError(f"no {what} for {len(missing)} of {len(gold)} questions: "
                                      f"{squad_common.shown_ids(missing)}")


def _raw_scores(
    gold: Mapping[str, list[str]], preds: Mapping[str, str], language: str | None = None
) -> tuple[dict[str, int], dict[str, float]]:
    """EM and F1 per question before the no-answer threshold, normalized by the language's rules (None: SQuAD's).

    Gold answers that normalize to nothing are dropped; a question left without any is
    scored against the empty answer.
    """
    exact_match = partial(squad_common.exact_match, language=language)
    token_f1 = partial(squad_common.token_f1, empty_is_no_answer=True, language=language)
    exact: dict[str, int] = {}
    f1: dict[str, float] = {}
    for qid, answers in gold.items():
        targets = [answer for answer in answers if squad_common.normalize_answer(answer, language)] or [""]
        exact[qid] = squad_common.best_over_golds(exact_match, preds[qid], targets)
        f1[qid] = squad_common.best_over_golds(token_f1, preds[qid], targets)
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
    *,
    language: str | None = None,
) -> dict:
    """Official SQuAD v2.0 scores; gold maps id -> answer texts (empty list = unanswerable).

    Without na_probs every probability is 0.0 and no best_* keys are reported. Predictions
    for unknown ids are ignored; a missing prediction raises MissingPredictionsError. A language
    (squad_common.LANGUAGES) normalizes answers by its rules instead of SQuAD's English ones.
    """
    squad_common.check_language(language)
    squad_common.check_predictions(preds)
    if na_probs is not None:
        squad_common.check_na_probs(na_probs)
    _require_every_question(gold, preds, "prediction")
    probs = {qid: 0.0 for qid in preds} if na_probs is None else na_probs
    _require_every_question(gold, probs, "no-answer probability")
    has_answer = {qid: bool(answers) for qid, answers in gold.items()}
    exact_raw, f1_raw = _raw_scores(gold, preds, language)
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


class PrecisionRecall(NamedTuple):
    """One curve of the official --out-image-dir analysis; average_precision is a fraction (x 100 in the JSON)."""

    precisions: list[float]
    recalls: list[float]
    average_precision: float


def raw_scores(
    gold: Mapping[str, list[str]], preds: Mapping[str, str], *, language: str | None = None
) -> tuple[dict[str, int], dict[str, float]]:
    """EM and F1 per question before any no-answer threshold, for the pictures (see _raw_scores)."""
    return _raw_scores(gold, preds, language)


def precision_recall(
    scores: Mapping[str, float], na_probs: Mapping[str, float], has_answer: Mapping[str, bool]
) -> PrecisionRecall:
    """Precision and recall of "has an answer" as the questions are answered by rising no-answer probability.

    An answerable question adds its score (EM, F1 or 1 for the oracle) to the true positives. A point is
    kept only where a threshold can fall (after the last of equal probabilities), and the average precision
    sums precision times the recall gained, with the official script's float operations. Ids absent from
    the gold data are skipped; at least one question must be answerable.
    """
    n_answerable = sum(1 for answerable in has_answer.values() if answerable)
    ranked = [qid for qid in sorted(na_probs, key=lambda key: na_probs[key]) if qid in scores]
    precisions, recalls = [1.0], [0.0]
    true_pos = average_precision = 0.0
    for rank, qid in enumerate(ranked, start=1):
        if has_answer[qid]:
            true_pos += scores[qid]
        if rank == len(ranked) or na_probs[ranked[rank]] != na_probs[qid]:
            precision, recall = true_pos / float(rank), true_pos / float(n_answerable)
            average_precision += precision * (recall - recalls[-1])
            precisions.append(precision)
            recalls.append(recall)
    return PrecisionRecall(precisions, recalls, average_precision)


def precision_recall_analysis(
    gold: Mapping[str, list[str]], preds: Mapping[str, str], na_probs: Mapping[str, float], *,
    language: str | None = None,
) -> dict[str, PrecisionRecall]:
    """The official pr_exact, pr_f1 and pr_oracle curves; none when no question is answerable (as there).

    Inputs as score_v2 checks them: every gold id has a prediction and a probability, a known language.
    """
    has_answer = {qid: bool(answers) for qid, answers in gold.items()}
    if not any(has_answer.values()):
        return {}
    exact, f1 = _raw_scores(gold, preds, language)
    oracle = {qid: float(answerable) for qid, answerable in has_answer.items()}
    return {
        name: precision_recall(scores, na_probs, has_answer)
        for name, scores in (("pr_exact", exact), ("pr_f1", f1), ("pr_oracle", oracle))
    }


def _draw_images(
    image_dir: str, curves: Mapping[str, PrecisionRecall], gold: Mapping[str, list[str]], na_probs: Mapping[str, float]
) -> None:
    """Draw the official pictures; without matplotlib, say so: the metrics are printed all the same."""
    if __package__:  # imported here: the `evaluate` module copies of this scorer need no pictures
        from . import pictures
    else:
        import pictures
    has_answer = {qid: bool(answers) for qid, answers in gold.items()}
    try:
        pictures.draw_pr_images(image_dir, curves)
        pictures.draw_na_prob_histograms(image_dir, {qid: na_probs[qid] for qid in gold}, has_answer)
    except pictures.MatplotlibMissing as error:
        print(f"note: no pictures drawn: {error}", file=sys.stderr)
    except OSError as error:
        sys.exit(f"error: cannot write the pictures to {image_dir}: {error.strerror or error}")


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
    parser.add_argument(
        "--out-image-dir", "-p", metavar="out_images",
        help="With --na-prob-file: draw precision-recall curves and no-answer histograms here (needs matplotlib) "
        "and report pr_exact_ap, pr_f1_ap, pr_oracle_ap.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="Accepted; no effect, as in the official script.")
    squad_common.add_language_argument(parser)
    return parser.parse_args(argv)


def _check_out_folder(out_file: str | None) -> None:
    """Refuse an --out-file in a folder that is not there before anything is scored or drawn."""
    folder = os.path.dirname(os.path.abspath(out_file or "."))
    if not os.path.isdir(folder):
        raise squad_common.ScoreInputError(f"cannot write --out-file {out_file}: there is no folder {folder}; "
                                           "create it, or give another --out-file")


def _write_out_file(result: dict, out_file: str) -> None:
    """The metrics file is whole or absent: written beside its place under a temporary name, then renamed."""
    folder, name = os.path.split(os.path.abspath(out_file))
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(result, handle)
        os.replace(temporary, out_file)
    except OSError as error:
        if os.path.exists(temporary):
            os.remove(temporary)
        sys.exit(f"error: cannot write --out-file {out_file} ({error.strerror or error}); give a writable file path")


def main(argv: list[str] | None = None) -> None:
    """Read the files, score, and print (or write) the metrics as the official script does."""
    args = _parse_args(argv)
    if args.out_image_dir and not args.na_prob_file:
        print("note: --out-image-dir needs --na-prob-file; no pictures drawn", file=sys.stderr)
    try:
        squad_common.check_language(args.language)
        _check_out_folder(args.out_file)
        _, gold = squad_common.read_gold(args.data_file)
        preds = squad_common.read_json(args.pred_file)
        squad_common.check_predictions(preds, args.pred_file)
        na_probs = squad_common.read_json(args.na_prob_file) if args.na_prob_file else None
        if na_probs is not None:
            squad_common.check_na_probs(na_probs, args.na_prob_file)
        result = score_v2(gold, preds, na_probs, args.na_prob_thresh, language=args.language)
    except squad_common.ScoreInputError as error:
        sys.exit(f"error: {error}")
    if args.out_image_dir and na_probs is not None:
        curves = precision_recall_analysis(gold, preds, na_probs, language=args.language)
        result.update({f"{name}_ap": 100.0 * curve.average_precision for name, curve in curves.items()})
        _draw_images(args.out_image_dir, curves, gold, na_probs)
    if args.out_file:
        _write_out_file(result, args.out_file)
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
