"""Several processes and several nodes on this machine's CPU (gloo): they train together, evaluate as one
process would, pick the best checkpoint on every rank, and a dead rank stops the run cleanly."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

import tiny_models
from helpers import (OFFLINE_ENV, ONE_THREAD, REPO, assert_evaluates_as_one_process, free_port, rank_pid,
                     read_json as read, run_qa, signal_after_steps, tiny_run_flags, torchrun)
from squad_data import squad_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return tiny_models.build_tiny("Bert", tmp_path_factory.mktemp("models") / "bert")


def test_cpu_processes_train_together_without_use_cpu(bert, tmp_path):
    """torchrun on a machine without GPUs, no --use_cpu: one gloo group, not two runs writing one folder."""
    data = squad_file(tmp_path / "d.json")
    out = tmp_path / "two"
    proc = run_qa([*tiny_run_flags(bert, data), "--do_train", "--do_eval", "--max_steps", "3", "--save_strategy", "no",
                   "--output_dir", str(out)], launcher=torchrun(), env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "distributed True" in log and "distributed False" not in log, log[-3000:]
    assert read(out / "train_results.json")["train_samples"] > 0
    assert_evaluates_as_one_process(out, data, tmp_path)


def test_two_nodes_through_the_run_script(bert, tmp_path):
    """`NNODES=2 NODE_RANK=0|1 MASTER_ADDR=... bash run_train_offline.sh` on this machine, one process per node."""
    data = squad_file(tmp_path / "d.json")
    out = tmp_path / "nodes"
    procs, port = [], str(free_port())
    for rank in (0, 1):
        env = {**os.environ, **OFFLINE_ENV, **ONE_THREAD, "NNODES": "2", "NODE_RANK": str(rank),
               "NPROC_PER_NODE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "MODEL_PATH": str(bert),
               "SQUAD_PATH": str(data), "OUTPUT_DIR": str(out),
               "HF_DATASETS_CACHE": str(tmp_path / f"cache{rank}")}  # each node its own disk, as on a cluster
        procs.append(subprocess.Popen(["bash", str(REPO / "run_train_offline.sh"), *tiny_run_flags(bert, data)[6:],
                                       "--max_steps", "3", "--per_device_eval_batch_size", "3"],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert "Process rank 0 of 2" in logs[0] and "distributed True" in logs[0]
    assert read(out / "eval_results.json")["eval_total"] == 7
    assert_evaluates_as_one_process(out, data, tmp_path)


def test_best_checkpoint_and_early_stopping_under_torchrun(bert, tmp_path):
    """Every rank computes the same F1, so the best checkpoint and early stopping agree across ranks; with a
    learning rate of 0 the F1 never improves and patience 1 stops the run after its second evaluation."""
    data = squad_file(tmp_path / "d.json")
    out = tmp_path / "best"
    proc = run_qa([*tiny_run_flags(bert, data), "--do_train", "--max_steps", "20", "--learning_rate", "0",
                   "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
                   "--load_best_model_at_end", "--metric_for_best_model", "f1", "--early_stopping_patience", "1",
                   "--output_dir", str(out)], launcher=torchrun(), env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = read(out / "trainer_state.json")
    assert state["global_step"] == 4  # evaluations at 2 and 4; no improvement at 4 with patience 1
    best = read(out / "best_checkpoint.json")
    assert best["checkpoint"].endswith("checkpoint-2") and best["metric"] == "eval_f1"
    assert best["value"] == best["evaluation"]["eval_f1"] == state["best_metric"]
    assert "--early_stopping_patience" in best["arguments"]


def test_a_dead_rank_stops_the_run_and_the_rerun_resumes(bert, tmp_path):
    """kill -9 one worker mid-training: the run ends in bounded time naming the rank, leaves no results
    files, and the same command afterwards resumes from the last complete checkpoint."""
    data = squad_file(tmp_path / "d.json")
    out = tmp_path / "dead"
    args = [*tiny_run_flags(bert, data), "--do_train", "--max_steps", "40", "--save_strategy", "steps", "--save_steps",
            "4", "--output_dir", str(out)]
    proc = subprocess.Popen(torchrun() + args, env={**os.environ, **OFFLINE_ENV, **ONE_THREAD},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while not (out / "checkpoint-8").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "training never reached step 8"
        time.sleep(0.05)
    victim = rank_pid(proc.pid, 1)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    log = proc.communicate(timeout=120)[0]
    assert time.monotonic() - killed_at < 60
    assert proc.returncode != 0
    assert "rank" in log.lower() and ("exitcode" in log or "-9" in log), log[-3000:]
    assert not any((out / name).exists() for name in ("train_results.json", "all_results.json"))
    rerun = run_qa(args, launcher=torchrun(), env=ONE_THREAD)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Resuming from" in rerun.stdout + rerun.stderr
    assert read(out / "trainer_state.json")["global_step"] == 40


def test_generative_model_trains_and_evaluates_as_one_process(tmp_path):
    """A tiny T5 writing its answers: two processes train together and their gathered answers (token ids of
    a fixed width, scores, null scores) are the one-process evaluation's; --do_predict answers a file
    without answers the same way."""
    t5 = tiny_models.build_tiny("T5", tmp_path / "t5", "T5ForConditionalGeneration")
    data = squad_file(tmp_path / "d.json")
    questions = squad_file(tmp_path / "q.json", answers=False)
    gen = ["--max_answer_length", "4", "--generation_num_beams", "2", "--n_best_size", "2", "--max_seq_length", "48",
           "--doc_stride", "8", "--test_file", str(questions), "--do_predict"]
    out = tmp_path / "two"
    proc = run_qa([*tiny_run_flags(t5, data), *gen, "--do_train", "--do_eval", "--max_steps", "2", "--save_strategy",
                   "no", "--output_dir", str(out)], launcher=torchrun(), env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed True" in proc.stdout + proc.stderr
    # progress bars from the main process only (transformers 5 draws one per process loading weights)
    assert proc.stderr.count("Loading weights: 100%") <= 1 and proc.stderr.count("Windows for train: 100%") == 1
    one = run_qa([*tiny_run_flags(t5, data), *gen, "--model_name_or_path", str(out), "--do_eval", "--use_cpu", "true",
                  "--output_dir", str(tmp_path / "one"), "--null_score_diff_threshold", "0"], env=ONE_THREAD)
    assert one.returncode == 0, one.stderr[-3000:]
    for name in ("eval_predictions", "eval_span_predictions", "predict_predictions"):
        assert read(tmp_path / "one" / f"{name}.json") == read(out / f"{name}.json"), name
    assert read(tmp_path / "one" / "eval_null_odds.json") == pytest.approx(read(out / "eval_null_odds.json"), abs=1e-5)
    assert "predict_f1" not in read(out / "predict_results.json")  # nothing to score: the file has no answers
    assert list(read(out / "predict_predictions.json")) == list(read(out / "eval_predictions.json"))


ENDING_RANK = """
import atexit, os, sys
import torch, torch.distributed as dist
sys.path.insert(0, sys.argv[1])
from qakit import launch

dist.init_process_group("gloo")
rank, marker = dist.get_rank(), sys.argv[2]
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))  # holds the group past its destruction
atexit.register(lambda: open(f"{marker}.{rank}", "w").write(f"group left: {not dist.is_initialized()}"))
held = torch.ones(3)  # a worker that runs the callback below touches Python objects, as releasing tensors does
work = dist.all_reduce(torch.ones(4_000_000), async_op=True)
work.get_future().then(lambda done, held=held: held.sum())
print(f"rank {rank} done", end="")  # no newline: flushed only on the way out
launch.leave_process_group(int(sys.argv[3]))
"""


@pytest.mark.parametrize("processes,status", [(2, 0), (1, 3)])
def test_a_rank_ends_before_the_interpreter_teardown(processes, status, tmp_path):
    """A rank whose gloo worker still holds Python objects: left to the interpreter's teardown it aborts (SIGABRT,
    "terminate called without an active exception": 3 runs of 3 when the script ends as qa.py used to, with
    destroy_process_group and a normal exit); through qakit.launch.leave_process_group every rank destroys the group, runs its
    exit handlers, flushes its output and exits with the run's status."""
    script = tmp_path / "ending_rank.py"
    script.write_text(ENDING_RANK, encoding="utf-8")
    marker = tmp_path / "exit-handler"
    proc = run_qa([str(REPO), str(marker), str(status)], launcher=torchrun(processes, script), env=ONE_THREAD,
                  timeout=300)
    assert "terminate called" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == (0 if status == 0 else 1), proc.stderr[-3000:]  # torchrun: 1 for any failed rank
    for rank in range(processes):
        assert f"rank {rank} done" in proc.stdout
        assert Path(f"{marker}.{rank}").read_text() == "group left: True"
    if status:
        assert f"exitcode  : {status}" in proc.stderr


def test_sigterm_to_one_rank_stops_every_rank_at_one_checkpoint(bert, tmp_path):
    """SIGTERM to rank 1 alone at a random step: both ranks end the step, agree to stop, write one checkpoint there
    and exit with status 75 (torchrun reports it); the same torchrun command resumes from it and ends on the
    uninterrupted run's weights, bit for bit."""
    from safetensors.torch import load_file

    from qakit.preemption import PREEMPTED_STATUS

    data = squad_file(tmp_path / "d.json")
    args = [*tiny_run_flags(bert, data), "--do_train", "--num_train_epochs", "2", "--logging_steps", "1",
            "--save_strategy", "no"]
    full = run_qa([*args, "--output_dir", str(tmp_path / "full")], launcher=torchrun(), env=ONE_THREAD)
    assert full.returncode == 0, full.stderr[-3000:]
    steps = read(tmp_path / "full" / "trainer_state.json")["global_step"]
    stopped = tmp_path / "stopped"
    # in the first half: a tiny model trains ~50 steps a second, and a loaded machine relays the log (which says
    # when to signal) late, so a signal meant for a step near the end could land after the last one
    at = random.Random().randint(1, steps // 2)
    status, log = signal_after_steps([*torchrun(), *args, "--output_dir", str(stopped)], at,
                                     target=lambda proc: rank_pid(proc.pid, 1), env=ONE_THREAD)
    assert status != 0 and f"exitcode  : {PREEMPTED_STATUS}" in log, log[-3000:]
    saved = [p.name for p in stopped.glob("checkpoint-*")]
    assert len(saved) == 1 and at <= int(saved[0].split("-")[1]) < steps, (saved, at, log[-3000:])
    assert "Stopping on another rank's signal" in log  # rank 0 stopped because rank 1 was signalled
    rerun = run_qa([*args, "--output_dir", str(stopped)], launcher=torchrun(), env=ONE_THREAD)
    assert rerun.returncode == 0 and f"Resuming from {stopped / saved[0]}" in rerun.stdout + rerun.stderr
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(stopped / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
