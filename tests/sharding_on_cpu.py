"""Test launcher: qa.py with accelerate's FSDP and DeepSpeed set-ups kept for processes on CPUs.

accelerate 1.16 runs neither engine on CPUs: its MULTI_CPU state drops an FSDP plugin (the Trainer then wraps
the model in DDP), and in its CPU mode leaves DeepSpeed out, while outside it a DeepSpeed run on CPUs counts
one process of many. qa.py refuses those runs. torch's FSDP2 shards over gloo and DeepSpeed has a CPU
accelerator, so the tests lift those checks, here and nowhere in the product, to drive qa.py's sharded paths
(training, evaluation, sharded checkpoints, resume, the final full-weights save) on a machine without GPUs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_accelerator_state_init = AcceleratorState.__init__
_prepare_backend = PartialState._prepare_backend


def _keep_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs) -> None:
    _accelerator_state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin


def _deepspeed_over_gloo(self, cpu: bool = False, sagemaker_dp=False, backend=None):
    """A DeepSpeed run's processes form one gloo group (accelerate finds no backend for the CPU)."""
    chosen = _prepare_backend(self, cpu, sagemaker_dp, backend)
    if chosen[1] == DistributedType.NO and os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        return "gloo", DistributedType.MULTI_CPU
    return chosen


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import qa
    from qakit import launch

    AcceleratorState.__init__ = _keep_fsdp_on_cpu
    PartialState._prepare_backend = _deepspeed_over_gloo
    if "--deepspeed" in sys.argv:
        launch.train_together_on_cpu = lambda: None  # accelerate's CPU mode is the one that leaves DeepSpeed out
    qa.cli(sys.argv[1:])
