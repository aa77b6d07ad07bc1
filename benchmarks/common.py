"""Shared set-up for the benchmarks: the tests' helpers (paths, MiniLM, the offline qa.py runner), timers,
and the dev-set article splits."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from helpers import SHARED_SQUAD, minilm, minilm_path, run_qa as run_qa_process  # noqa: E402

__all__ = ["REPO", "SHARED_SQUAD", "minilm", "minilm_path", "run_qa", "splits", "squad_path", "timer"]


def squad_path(name: str, argv_path: str | None) -> Path:
    path = Path(argv_path) if argv_path else SHARED_SQUAD / name
    if not path.is_file():
        sys.exit(f"{path} not found: pass the path to {name}")
    return path


@contextmanager
def timer(results: dict, key: str):
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def run_qa(args: list[str], out_dir: Path) -> tuple[dict, float, float]:
    """Run qa.py in a fresh process; return (all_results.json, wall seconds, peak resident memory in MiB)."""
    probe = ("import resource, runpy, sys; sys.argv = ['qa.py'] + sys.argv[1:]; "
             f"runpy.run_path({str(REPO / 'qa.py')!r}, run_name='__main__'); "
             "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    start = time.perf_counter()
    proc = run_qa_process([*args, "--output_dir", str(out_dir), "--report_to", "none", "--overwrite_output_dir"],
                          launcher=[sys.executable, "-c", probe], timeout=None)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"qa.py failed:\n{proc.stderr[-3000:]}")
    peak = next(int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("PEAK_RSS_KB"))
    return json.loads((out_dir / "all_results.json").read_text()), wall, peak / 1024


def splits(squad_dir: Path, out: Path) -> Path:
    """The article splits of benchmarks/make_splits.py, written once into `out`."""
    from make_splits import make_splits

    if not (out / "v11_eval.json").is_file():
        make_splits(squad_dir, out)
    return out
