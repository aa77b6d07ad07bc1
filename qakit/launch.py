"""Launching and ending a run: processes started together on CPUs train as one group, logging and standard
output are set up for the run (or for printed answers), user errors end as one line, and a multi-process run
leaves its process group before the interpreter's teardown."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TextIO

import datasets
import torch
import transformers
from transformers import TrainingArguments

from qakit.errors import QAError, one_line

logger = logging.getLogger("qa")


_LAUNCH_SIZE = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")  # as accelerate reads them


def train_together_on_cpu() -> None:
    """Processes started together (torchrun) on a machine without an accelerator train as one gloo group.

    Without this, accelerate runs each process alone unless told to use the CPU, and every copy writes the
    same output folder. Set before TrainingArguments sets its device up, which it does while being made.
    """
    processes = max(int(os.environ.get(name) or 1) for name in _LAUNCH_SIZE)
    if processes > 1 and not _distributed_accelerator():
        os.environ["ACCELERATE_USE_CPU"] = "true"


def _distributed_accelerator() -> bool:
    """An accelerator that launched processes can share (CUDA, XPU, NPU, ...); the CPU and MPS are none."""
    try:
        from accelerate.utils import get_distributed_backend, get_torch_accelerator_backend  # accelerate >= 1.16
    except ImportError:
        from accelerate.utils import is_npu_available, is_xpu_available
        return torch.cuda.is_available() or is_npu_available() or is_xpu_available()
    return get_distributed_backend(get_torch_accelerator_backend()[0]) is not None


def setup_logging(training_args: TrainingArguments, quiet: bool = False) -> None:
    """Our progress at INFO on the main process (as HF's examples do); libraries at --log_level.

    `quiet` (asking questions): standard output carries only the answers; warnings go to standard error.
    Progress bars are drawn by the main process only.
    """
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stderr if quiet else sys.stdout)])
    library_level = training_args.get_process_log_level()
    if quiet and training_args.log_level == "passive":
        library_level = logging.WARNING
    ours = logging.INFO if training_args.should_log and training_args.log_level == "passive" else library_level
    if quiet:
        ours = max(ours, library_level)
    if quiet or not training_args.should_log:  # other ranks would draw the same bars again
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    for name in ("qa", "squad_v2", "qakit", "utils_qa", "trainer_qa"):
        logging.getLogger(name).setLevel(ours)
    datasets.utils.logging.set_verbosity(library_level)
    transformers.utils.logging.set_verbosity(library_level)
    logger.info("Process rank %s of %s, device %s, n_gpu %s, distributed %s, bf16 %s, fp16 %s",
                training_args.process_index, training_args.world_size, training_args.device, training_args.n_gpu,
                training_args.parallel_mode.value == "distributed", training_args.bf16, training_args.fp16)


@contextmanager
def answers_only_on_stdout(asking: bool, training_args: TrainingArguments) -> Iterator[TextIO | None]:
    """When asking: a stream to the real standard output, while everything else printed there goes to standard
    error (libraries print too: DeepSpeed announces its accelerator on stdout, and the answers must parse); and
    the Trainer's folder is a temporary one, removed at the end: asking writes nothing to disk."""
    if not asking:
        yield None
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with tempfile.TemporaryDirectory(prefix="qa-ask-") as scratch, \
                os.fdopen(os.dup(saved), "w", encoding="utf-8") as answers:
            training_args.output_dir = scratch
            yield answers
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """`main(argv)`, where known user errors end with one clear line and a non-zero exit, not a traceback."""
    status = 0
    try:
        main(argv)
    except (QAError, OSError, ImportError) as err:  # not bugs (data errors are QAErrors too): no traceback
        message = one_line(str(err))
        fresh_line = "\n" if sys.stderr.isatty() else ""  # after a progress bar's last, unfinished line
        status = getattr(err, "exit_status", 2)  # 2: a user error; a run stopped by the scheduler says its own
        print(f"{fresh_line}qa.py: {'error' if status == 2 else 'stopped'}: {message}", file=sys.stderr)
    except KeyboardInterrupt:  # Ctrl-C: every file is written whole or not at all, so there is nothing to clean
        print("\nqa.py: interrupted (Ctrl-C); the files already written are whole, the rest were not written",
              file=sys.stderr)
        status = 130
    if torch.distributed.is_initialized():
        leave_process_group(status)
    if status:
        sys.exit(status)


def leave_process_group(status: int) -> None:
    """End a process of a multi-process run before the interpreter's teardown, which can abort it. torch keeps a
    gloo group's worker threads alive past destroy_process_group (DDP's reducer still holds the group); a worker
    that then touches a Python object, as releasing a collective's tensors can, while the interpreter finalizes
    kills the process (SIGABRT, "terminate called without an active exception": seen in CI after all the work was
    done), and torchrun then stops the ranks still writing the run's files. So the group is destroyed, the exit
    handlers run and the output is flushed here, with Python whole, and the process ends with `status`."""
    torch.distributed.destroy_process_group()
    atexit._run_exitfuncs()  # what a normal exit runs first: logging's, trackers' and libraries' own clean-ups
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


