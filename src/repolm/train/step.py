"""One optimizer step, validation, and the micro-batch whose step fits: the code that runs the
model, the same on every process (accelerate syncs the gradients)."""

from __future__ import annotations

import gc
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from repolm.hardware.device import DeviceInfo
from repolm.logs import log
from repolm.train.data import PackedData
from repolm.train.distributed import from_main, global_sum
from repolm.train.memory import ModelShape, estimated_micro_batch
from repolm.train.spec import RunSpec

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator


def tensors(batch: dict[str, np.ndarray], device: Any) -> dict[str, torch.Tensor]:
    """A batch of `PackedData` as long tensors on `device`."""
    import torch

    return {k: torch.from_numpy(v).long().to(device) for k, v in batch.items()}


def optimizer_step(
    accelerator: Accelerator,
    model: Any,
    optimizer: Any,
    data: PackedData,
    micro: list[np.ndarray],
    grad_clip: float,
) -> tuple[float, float | None, int]:
    """One optimizer step over this process's micro-batches: (mean loss per label token of the
    global batch, gradient norm before clipping, label tokens in the global batch)."""
    import torch

    world = accelerator.num_processes
    labels = sum(int((data.labels[i][:, 1:] != -100).sum()) for i in micro)
    n_items = global_sum(accelerator, labels)
    loss_sum = torch.zeros((), device=accelerator.device)
    grad_norm = None
    for index in micro:
        batch = tensors(data.batch(index), accelerator.device)
        with accelerator.accumulate(model):
            out = model(**batch, num_items_in_batch=n_items)
            # out.loss is this micro-batch's share of the global mean; accelerate divides by
            # the accumulation steps and DDP averages over processes: undo both
            accelerator.backward(out.loss * len(micro) * world)
            loss_sum += out.loss.detach()
            del out  # its logits (B × L × vocab) must not live through the next forward
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(
                    model.parameters(), grad_clip or float("inf")
                )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    loss = float(accelerator.reduce(loss_sum, reduction="sum"))
    return loss, None if grad_norm is None else float(grad_norm), int(n_items)


def validation_subset(n: int, k: int, seed: int) -> np.ndarray:
    """The fixed `k` of `n` validation sequences every evaluation of a run measures."""
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 7]).choice(n, size=k, replace=False))


def evaluate(
    accelerator: Accelerator, model: Any, data: PackedData, index: np.ndarray, micro: int
) -> tuple[float, int]:
    """Mean cross-entropy (nats per label token) over `index`, split across processes; and the
    label tokens it counted."""
    import torch

    world, rank = accelerator.num_processes, accelerator.process_index
    per = math.ceil(len(index) / world)
    mine = index[rank * per : (rank + 1) * per]
    loss = torch.zeros((), device=accelerator.device, dtype=torch.float64)
    count = torch.zeros((), device=accelerator.device, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        # the same number of forward passes on every process (FSDP needs it)
        for start in range(0, per, micro):
            part = mine[start : start + micro]
            real = len(part)
            if real == 0:
                part = index[:1]
            batch = tensors(data.batch(part), accelerator.device)
            out = model(**batch, num_items_in_batch=1)  # the sum, not the mean
            n = (batch["labels"][:, 1:] != -100).sum()
            if real:
                loss += out.loss.double()
                count += n.double()
    model.train()
    loss = accelerator.reduce(loss, reduction="sum")
    count = accelerator.reduce(count, reduction="sum")
    return float(loss / count.clamp(min=1)), int(count)


def auto_micro_batch(
    spec: RunSpec,
    model: Any,
    shape: ModelShape,
    data: PackedData,
    device: DeviceInfo,
    precision: str,
    accelerator: Accelerator,
) -> int:
    """`micro_batch: auto`: the largest power of two whose estimated peak fits in 90% of this
    device's memory (at most 64, at most the sequences one process gets), then on CUDA halved
    until a real forward and backward pass fits."""
    sequences = max(1, len(data) // accelerator.num_processes)
    micro = estimated_micro_batch(spec.model, shape, data.seq_len, sequences, device, precision)
    if device.kind == "cuda":
        micro = _largest_that_runs(model, data, micro, accelerator)
    return from_main(accelerator, micro)


def _largest_that_runs(model: Any, data: PackedData, start: int, accelerator: Accelerator) -> int:
    """The largest of start, start/2, start/4 ... whose forward and backward pass fits.
    (accelerate's find_executable_batch_size shrinks by 10% a try in 1.16: not powers of two.)"""
    import torch
    from accelerate.utils.memory import should_reduce_batch_size

    model.to(accelerator.device)
    micro = start
    while True:
        try:
            batch = tensors(data.batch(np.arange(micro) % len(data)), accelerator.device)
            with accelerator.autocast():
                loss = model(**batch).loss
            loss.backward()
            return micro
        except Exception as e:
            if micro == 1 or not should_reduce_batch_size(e):
                raise
        finally:
            batch = loss = None  # free the failed try's tensors before the next one
            model.zero_grad(set_to_none=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.info(f"micro_batch {micro} does not fit: trying {micro // 2}")
        micro //= 2
