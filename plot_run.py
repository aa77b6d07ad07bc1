"""Redraw the pictures of a run folder (qa.py's, or HF run_qa.py's): python plot_run.py OUTPUT_DIR [--data_file
dev.json] [--prefix eval] [--threshold T] [--language LANG].

Prints each picture written, then what was skipped and why. Exit status: 0 when at least one picture was
drawn, 1 when none could be, 2 for a usage error or a broken input file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import squad_v2
from metrics.squad_v2.squad_common import ScoreInputError, add_language_argument, check_language
from qakit import plots


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Redraw every picture a qa.py (or HF run_qa.py) output folder allows.")
    parser.add_argument("output_dir", help="the run's --output_dir")
    parser.add_argument("--data_file", help="the SQuAD v2 file the run evaluated (its gold answers are needed for the "
                        "null-threshold and precision-recall pictures)")
    parser.add_argument("--prefix", default="eval", help="the split's file prefix: eval (default) or predict")
    parser.add_argument("--threshold", type=float, help="the null threshold the run predicted with (default: the one "
                        "that reproduces <prefix>_predictions.json, else 0.0)")
    add_language_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Draw, then report: paths on stdout (one a line, for scripts), skips and notes on stderr."""
    args = _parse_args(argv)
    if not Path(args.output_dir).is_dir():
        print(f"plot_run.py: error: {args.output_dir} is not a folder", file=sys.stderr)
        return 2
    if args.data_file is not None and not Path(args.data_file).is_file():
        print(f"plot_run.py: error: --data_file {args.data_file} is not a file", file=sys.stderr)
        return 2
    try:
        check_language(args.language)
        gold = None if args.data_file is None else squad_v2.gold_answers(args.data_file)
        drawn = plots.draw_all(args.output_dir, args.prefix, args.threshold, gold=gold, source=args.data_file,
                               language=args.language)
    except (plots.PlotInputError, squad_v2.SquadFormatError, ScoreInputError) as error:
        print(f"plot_run.py: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    for path in drawn.written:
        print(path)
    for note in drawn.notes:
        print(f"note: {note}", file=sys.stderr)
    for reason in drawn.skipped:
        print(f"skipped {reason}", file=sys.stderr)
    if not drawn.written:
        print(f"plot_run.py: nothing drawn in {args.output_dir}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
