"""Never lose a run: a killed run resumes to the uninterrupted result; incomplete checkpoints are skipped;
overwriting starts afresh; results files are whole."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save

import tiny_models
from helpers import OFFLINE_ENV, REPO, run_qa, signal_after_steps
from qakit.preemption import PREEMPTED_STATUS
from qakit.checkpoints import TRANSFORMERS_5, is_complete, last_complete_checkpoint, whole_run_train_loss
from squad_data import squad_file
from trainer_qa import EpochSeededLengthGroupedSampler


def losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
    return {e["step"]: e["loss"] for e in history if "loss" in e}


def train_args(model: Path, data: Path, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(model), "--train_file", str(data), "--version_2_with_negative", "--do_train",
            "--max_seq_length", "96", "--doc_stride", "32", "--per_device_train_batch_size", "2", "--report_to",
            "none", "--use_cpu", "true", "--save_strategy", "steps", "--save_steps", "1", "--num_train_epochs", "3",
            "--logging_steps", "1", *extra]


def kill_when(args: list[str], folder: Path, timeout: float = 600) -> None:
    """Start qa.py and SIGKILL it the moment `folder` appears, i.e. while that checkpoint is being written."""
    proc = subprocess.Popen([sys.executable, str(REPO / "qa.py"), *args], env={**os.environ, **OFFLINE_ENV},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not folder.exists():
        assert proc.poll() is None, "the run ended before the step it was to be killed at"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module", params=["group_by_length", "random"])
def full_run(request, tmp_path_factory) -> tuple[list[str], Path, int]:
    """An uninterrupted run (3 epochs, a checkpoint every step) with the default (grouped) or random order:
    (its arguments without --output_dir, its folder, steps per epoch)."""
    tmp = tmp_path_factory.mktemp(request.param)
    model = tiny_models.build_tiny("Bert", tmp / "bert")
    args = train_args(model, squad_file(tmp / "train.json"),
                      *(["--group_by_length", "false"] if request.param == "random" else []))
    done = run_qa([*args, "--output_dir", str(tmp / "full")])
    assert done.returncode == 0, done.stderr[-3000:]
    per_epoch = json.loads((tmp / "full" / "trainer_state.json").read_text())["global_step"] // 3
    assert per_epoch >= 4
    return args, tmp / "full", per_epoch


def assert_same_run(full: Path, other: Path) -> None:
    """Same losses at every step, the same final weights bit for bit, the same whole-run train_loss (to the
    last bit on transformers 5)."""
    assert losses(other) == losses(full)
    a, b = load_file(full / "model.safetensors"), load_file(other / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    train_loss = [json.loads((d / "train_results.json").read_text())["train_loss"] for d in (full, other)]
    # transformers 4.x logs losses rounded to 4 decimals, and the steps before the resume come from that log
    assert train_loss[1] == pytest.approx(train_loss[0], rel=1e-12, abs=0 if TRANSFORMERS_5 else 1e-4)


@pytest.mark.slow
def test_resume_from_mid_second_epoch_is_the_uninterrupted_run(full_run, tmp_path):
    """Resumed from a complete checkpoint in the middle of epoch 2 (HF's grouped order diverged here)."""
    args, full, per_epoch = full_run
    step = per_epoch + per_epoch // 2 + 1
    resumed = tmp_path / "resumed"
    shutil.copytree(full / f"checkpoint-{step}", resumed / f"checkpoint-{step}")
    proc = run_qa([*args, "--output_dir", str(resumed)])
    assert proc.returncode == 0 and f"Resuming from {resumed / f'checkpoint-{step}'}" in proc.stdout + proc.stderr
    assert_same_run(full, resumed)


@pytest.mark.slow
@pytest.mark.parametrize("full_run", ["group_by_length"], indirect=True)  # the order is the test above's concern
def test_killed_run_resumes_to_the_uninterrupted_result(full_run, tmp_path):
    """SIGKILL at a random step of the second epoch, during that step's checkpoint write; the rerun skips the
    half-written checkpoint, resumes from the last complete one and ends as the uninterrupted run."""
    args, full, per_epoch = full_run
    step = random.Random().randint(per_epoch + 2, 2 * per_epoch - 1)  # mid second epoch, never its first step
    killed = tmp_path / "killed"
    kill_when([*args, "--output_dir", str(killed)], killed / f"checkpoint-{step}")
    rerun = run_qa([*args, "--output_dir", str(killed)])
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = rerun.stdout + rerun.stderr
    resumed = int(log.split("Resuming from")[1].split("checkpoint-")[1].split()[0])
    assert step - 1 <= resumed <= step, (step, resumed)
    assert_same_run(full, killed)


def test_length_grouped_order_depends_only_on_seed_and_epoch():
    torch.manual_seed(0)
    sampler = EpochSeededLengthGroupedSampler(4, [i % 13 for i in range(40)], seed=7)
    sampler.set_epoch(1)
    first = list(sampler)
    torch.rand(100)  # the global RNG moving on changes nothing
    sampler.set_epoch(1)
    assert list(sampler) == first and sorted(first) == list(range(40))
    sampler.set_epoch(2)
    assert list(sampler) != first


def test_whole_run_train_loss_counts_the_steps_before_the_resume():
    history = [{"step": s, "loss": float(s)} for s in range(1, 5)]  # steps 1..4 logged one by one
    # resumed at 4, then steps 5..6 (losses 5 and 6): the whole run's mean is (1+2+3+4+5+6)/6 = 3.5. Trainer
    # reports the session as (5+6)/2 on transformers 5 and as (5+6)/global_step on 4.x.
    session = 5.5 if TRANSFORMERS_5 else 11 / 6
    assert whole_run_train_loss(history, resumed_at=4, global_step=6, session_loss=session) == pytest.approx(3.5)


def _torch_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"x": 1}, buf)
    return buf.getvalue()


def _flip_middle(content: bytes) -> bytes:
    """The same bytes with one in the middle changed: a file damaged inside, its length and directory intact."""
    middle = len(content) // 2
    return content[:middle] + bytes([content[middle] ^ 0xFF]) + content[middle + 1:]


def test_incomplete_or_damaged_checkpoints_are_skipped(tmp_path):
    def checkpoint(step: int, files: dict[str, bytes]) -> Path:
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        for name, content in files.items():
            (path / name).write_bytes(content)
        return path

    def state(step: int) -> bytes:
        return json.dumps({"global_step": step, "log_history": []}).encode()

    pt, weights = _torch_bytes(), save({"w": torch.zeros(4)})
    big = io.BytesIO()
    torch.save({"state": {0: {"exp_avg": torch.arange(4096.0)}}}, big)  # stored, so a flipped byte is in the data
    full = {"config.json": b'{"model_type": "bert"}', "model.safetensors": weights, "training_args.bin": pt,
            "optimizer.pt": big.getvalue(), "scheduler.pt": pt, "rng_state.pth": pt}
    good = checkpoint(2, {**full, "trainer_state.json": state(2)})
    checkpoint(4, {k: v for k, v in full.items() if k != "rng_state.pth"})  # killed before trainer_state.json
    checkpoint(6, {**full, "optimizer.pt": pt[:-10], "trainer_state.json": state(6)})  # truncated
    checkpoint(8, {**full, "model.safetensors": weights[:-4], "trainer_state.json": state(8)})
    checkpoint(10, {**full, "trainer_state.json": b'{"global_st'})  # cut state
    # damaged inside, whole in length: each passed the old check and then failed every resume
    checkpoint(12, {**full, "optimizer.pt": _flip_middle(full["optimizer.pt"]), "trainer_state.json": state(12)})
    checkpoint(14, {**full, "scheduler.pt": b"PK\x03\x04 not a torch file", "trainer_state.json": state(14)})
    checkpoint(16, {**full, "config.json": b'{"hidden_size": 8}', "trainer_state.json": state(16)})
    checkpoint(18, {**full, "trainer_state.json": b'{"global_step": 18}'})  # valid JSON, not a state
    assert is_complete(good) and last_complete_checkpoint(tmp_path) == str(good)
    assert [s for s in range(4, 20, 2) if is_complete(tmp_path / f"checkpoint-{s}")] == []
    os.rename(good, tmp_path / "checkpoint-3")  # the state must name the folder's step
    assert last_complete_checkpoint(tmp_path) is None


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # one process writes both shards
def test_sharded_checkpoints_count_only_when_whole(tmp_path):
    """FSDP's sharded checkpoints (torch.distributed.checkpoint folders, no config.json) and DeepSpeed's own
    (global_stepN/ then `latest`) are complete only when every shard the layout lists is there and whole."""
    import torch.distributed.checkpoint as dcp

    pt = _torch_bytes()
    state = json.dumps({"global_step": 2, "log_history": []}).encode()

    def fsdp(name: str) -> Path:
        path = tmp_path / name / "checkpoint-2"
        path.mkdir(parents=True)
        for sub in ("pytorch_model_fsdp_0", "optimizer_0"):
            dcp.save({"w": torch.arange(64.0)}, checkpoint_id=str(path / sub))
        for name_ in ("scheduler.pt", "rng_state_0.pth", "rng_state_1.pth"):
            (path / name_).write_bytes(pt)
        (path / "trainer_state.json").write_bytes(state)
        return path

    good = fsdp("fsdp")
    assert is_complete(good)
    shard = next((fsdp("cut") / "optimizer_0").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:-16])  # a shard cut short
    unfinished = fsdp("unfinished")
    (unfinished / "pytorch_model_fsdp_0" / ".metadata").unlink()  # killed before the metadata
    assert not is_complete(shard.parent.parent) and not is_complete(unfinished)

    def deepspeed(name: str, optimizer_states: int, latest: bool = True) -> Path:
        path = tmp_path / name / "checkpoint-2"
        (path / "global_step2").mkdir(parents=True)
        (path / "global_step2" / "mp_rank_00_model_states.pt").write_bytes(pt)
        for rank in range(optimizer_states):
            (path / "global_step2" / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(pt)
        files = {"config.json": b'{"model_type": "llama"}', "model.safetensors": save({"w": torch.zeros(4)}), "training_args.bin": pt,
                 "rng_state_0.pth": pt, "rng_state_1.pth": pt, "trainer_state.json": state}
        for name_, content in files.items():
            (path / name_).write_bytes(content)
        if latest:
            (path / "latest").write_text("global_step2")
        return path

    assert is_complete(deepspeed("ds", 2))
    assert not is_complete(deepspeed("ds-one-of-two", 1))  # the second process's optimizer state is missing
    assert not is_complete(deepspeed("ds-no-latest", 2, latest=False))  # DeepSpeed writes `latest` last
    assert is_complete(deepspeed("ds-weights-only", 0, latest=False), with_optimizer=False)


@pytest.mark.slow
@pytest.mark.parametrize("full_run", ["group_by_length"], indirect=True)
def test_a_damaged_last_checkpoint_is_skipped_for_the_one_before(full_run, tmp_path):
    """The last checkpoint's optimizer state damaged inside (length and zip directory intact): it is skipped with a
    warning and the run resumes from the one before it, ending as the uninterrupted run. Before, it was resumed and
    every rerun failed on it; the only way out, --overwrite_output_dir, also deleted the good checkpoint."""
    args, full, per_epoch = full_run
    last = per_epoch + 2
    out = tmp_path / "damaged"
    for step in (last - 1, last):
        shutil.copytree(full / f"checkpoint-{step}", out / f"checkpoint-{step}")
    optimizer = out / f"checkpoint-{last}" / "optimizer.pt"
    optimizer.write_bytes(_flip_middle(optimizer.read_bytes()))
    proc = run_qa([*args, "--output_dir", str(out)])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Skipping {out / f'checkpoint-{last}'}: an incomplete or damaged checkpoint" in log
    assert f"Resuming from {out / f'checkpoint-{last - 1}'}" in log
    assert_same_run(full, out)


@pytest.mark.slow
@pytest.mark.parametrize("full_run", ["group_by_length"], indirect=True)
def test_sigterm_saves_the_step_and_the_rerun_ends_as_the_uninterrupted_run(full_run, tmp_path):
    """SIGTERM at a random step: the step in flight ends, one checkpoint is written there (no other: this run saves
    no checkpoints of its own), the exit status is 75; the same command resumes from it and ends on the
    uninterrupted run's weights, bit for bit."""
    args, full, per_epoch = full_run
    args = [*args, "--save_strategy", "no", "--output_dir", str(tmp_path / "stopped")]
    at = random.Random().randint(2, 3 * per_epoch // 2)  # the first half: a loaded machine relays the log late
    status, log = signal_after_steps([sys.executable, str(REPO / "qa.py"), *args], at)
    assert status == PREEMPTED_STATUS, log[-3000:]
    saved = [p.name for p in (tmp_path / "stopped").glob("checkpoint-*")]
    assert len(saved) == 1, saved
    step = int(saved[0].split("-")[1])
    assert at <= step < 3 * per_epoch and f"Stopping on SIGTERM: saving checkpoint-{step}" in log
    assert f"qa.py: stopped: stopped on SIGTERM after step {step}" in log
    assert is_complete(tmp_path / "stopped" / saved[0]) and not (tmp_path / "stopped" / "model.safetensors").exists()
    rerun = run_qa(args)
    assert rerun.returncode == 0 and f"Resuming from {tmp_path / 'stopped' / saved[0]}" in rerun.stdout + rerun.stderr
    assert_same_run(full, tmp_path / "stopped")


@pytest.mark.slow
def test_overwrite_output_dir_starts_afresh(tmp_path):
    """HF's flag still works on transformers 5: the earlier run's checkpoints go, the new run trains from scratch
    (and evaluates, here SQuAD v1.1 data: v1.1 keys, no null odds); a later plain rerun can no longer resume the
    old run and put its weights back over the new model: it stops with the usual message instead."""
    model = tiny_models.build_tiny("Bert", tmp_path / "bert")
    data = squad_file(tmp_path / "train.json", version="1.1")
    out = tmp_path / "o"
    base = ["--model_name_or_path", str(model), "--train_file", str(data), "--do_train", "--max_seq_length", "96",
            "--doc_stride", "32", "--per_device_train_batch_size", "2", "--report_to", "none", "--use_cpu", "true",
            "--output_dir", str(out)]
    old = run_qa([*base, "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1"])
    assert old.returncode == 0 and (out / "checkpoint-2").is_dir(), old.stderr[-2000:]
    new = run_qa([*base, "--max_steps", "3", "--save_strategy", "no", "--learning_rate", "1e-3",
                  "--overwrite_output_dir", "--do_eval", "--validation_file", str(data)])
    assert new.returncode == 0, new.stderr[-2000:]
    log = new.stdout + new.stderr
    assert "removing 2 checkpoint(s) of the earlier run" in log and "Resuming from" not in log
    assert not list(out.glob("checkpoint-*"))
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    v1 = json.loads((out / "eval_results.json").read_text())
    assert 0 <= v1["eval_exact_match"] <= v1["eval_f1"] <= 100 and not (out / "eval_null_odds.json").exists()
    weights = (out / "model.safetensors").read_bytes()
    again = run_qa([*base, "--max_steps", "3", "--save_strategy", "no"])
    assert again.returncode == 2 and "no checkpoint to resume from" in again.stderr
    assert (out / "model.safetensors").read_bytes() == weights
