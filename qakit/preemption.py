"""Stopping for the scheduler: SIGTERM (or SIGUSR1, which SLURM's --signal can send ahead of the end) during
training finishes the optimizer step in flight, writes one checkpoint there, and ends the run with status
`PREEMPTED_STATUS`, which tells a requeue script to run the same command again: it resumes from that checkpoint.

Every rank of a multi-process run stops at the same step: at each step's end the ranks agree (one all-reduce of
a flag) whether any of them was signalled, so the signal may reach one rank or all of them. Later signals are
ignored: under srun a worker gets the scheduler's SIGTERM and torchrun's forwarded copy. What ends a run that
overstays its grace period is the scheduler's SIGKILL; a checkpoint it cuts short is incomplete, and a resume
skips it (`qakit.checkpoints`).
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import torch
from transformers import TrainerCallback

from qakit.errors import QAError

logger = logging.getLogger("qa")

PREEMPTED_STATUS = 75  # EX_TEMPFAIL: a temporary failure; the same command, run again, resumes
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class RunPreempted(QAError):
    """Training stopped on a signal after writing a checkpoint; the message says which and how to resume."""

    exit_status = PREEMPTED_STATUS


class StopOnSignal(TrainerCallback):
    """Turns SIGTERM/SIGUSR1 during training into a checkpoint at the end of the current step and a stop."""

    def __init__(self) -> None:
        self.received: int | None = None  # the signal this process got
        self.stopped_at: int | None = None  # the step every rank stopped and saved at
        self._previous: dict[int, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def on_train_end(self, args, state, control, **kwargs):
        self._restore()  # a signal during evaluation or writing ends the process, as it would without us

    def on_step_end(self, args, state, control, **kwargs):
        if self._anyone_signalled(args):
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
            logger.warning("Stopping on %s: saving checkpoint-%d, then exiting with status %d (rerun the same "
                           "command to resume)", self._name(), state.global_step, PREEMPTED_STATUS)
        return control

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum

    def _anyone_signalled(self, args: Any) -> bool:
        flag = 1.0 if self.received is not None else 0.0
        if args.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            agreed = torch.tensor([flag], device=args.device)
            torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MAX)
            flag = float(agreed.item())
        return flag > 0

    def _name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "another rank's signal"

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def check(self, output_dir: str) -> None:
        """After training: raise RunPreempted when the run stopped on a signal (the checkpoint is written)."""
        if self.stopped_at is not None:
            raise RunPreempted(f"stopped on {self._name()} after step {self.stopped_at}; checkpoint-"
                               f"{self.stopped_at} in {output_dir} holds the run: run the same command again to "
                               f"resume (exit status {PREEMPTED_STATUS})")
