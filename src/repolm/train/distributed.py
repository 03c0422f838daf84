"""What accelerate owns for a run, set up in one place: the Accelerator (devices, precision,
gradient accumulation, processes) with every process seeded, whether the launch asked for a
sharded run, and the numbers every process must agree on."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from repolm.config.schema import TrainConfig
from repolm.hardware.device import DeviceInfo, choose_precision, detect

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

SHARDED = ("FSDP", "DEEPSPEED")


def start_accelerator(tc: TrainConfig) -> tuple[Accelerator, DeviceInfo, str]:
    """The Accelerator for a run of `tc` on this machine's device, with the seeds set; the
    device and the precision chosen for it. The loop and `repolm plan`'s timed steps run
    under the same set-up."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    device = detect()
    precision = choose_precision(tc.precision, device)
    accelerator = Accelerator(
        mixed_precision={"fp32": "no"}.get(precision, precision),
        gradient_accumulation_steps=tc.grad_accum,
        cpu=device.kind == "cpu",
        step_scheduler_with_optimizer=False,
    )
    if tc.deterministic:  # cuBLAS needs a fixed workspace to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_seed(tc.seed, deterministic=tc.deterministic)
    return accelerator, device, precision


def sharded_backend() -> str | None:
    """FSDP or DEEPSPEED when `accelerate launch` asked for a sharded run; None otherwise."""
    return next((n for n in SHARDED if os.environ.get(f"ACCELERATE_USE_{n}") == "true"), None)


def local_device() -> torch.device:
    """This process's CUDA device under a multi-process launch (or alone)."""
    import torch
    from accelerate import PartialState

    return torch.device("cuda", PartialState().local_process_index)


def from_main(accelerator: Accelerator, value: int) -> int:
    """The main process's value on every process (their clocks differ)."""
    if accelerator.num_processes == 1:
        return value
    import torch
    from accelerate.utils import broadcast

    return int(broadcast(torch.tensor([value], device=accelerator.device))[0])


def global_sum(accelerator: Accelerator, n: int) -> torch.Tensor:
    """`n` summed over the processes, as a tensor on this process's device."""
    import torch

    t = torch.tensor(n, device=accelerator.device, dtype=torch.long)
    return accelerator.reduce(t, reduction="sum") if accelerator.num_processes > 1 else t
