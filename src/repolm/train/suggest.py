"""What to change when a run will not fit the device: one-line changes, most preferred first,
each re-estimated with memory.py's estimate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from repolm.train.memory import GIB, MIB, Device, Method, ModelShape, estimate_memory, lora_params


def format_bytes(n: float) -> str:
    """Memory for people: GiB above one, MiB below."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


@dataclass(frozen=True)
class _Plan:
    """One setting of the knobs ``suggest`` may turn."""

    micro_batch: int
    grad_accum: int
    seq_len: int
    method: Method
    param_bytes: float
    compute_bytes: float
    checkpointing: bool
    shape: ModelShape


def suggest(
    shape: ModelShape,
    available_bytes: int,
    *,
    micro_batch: int,
    seq_len: int,
    grad_accum: int = 1,
    param_bytes: float = 4,
    compute_bytes: float = 4,
    method: Method = "full",
    checkpointing: bool = False,
    device: Device = "cpu",
    packed: bool = True,
    optimizer_bytes_per_param: float = 8,
    lora_rank: int = 16,
) -> list[str]:
    """One-line changes that make the run fit, most preferred first, each re-estimated.

    Order: a smaller micro-batch with more accumulation (same effective batch, same result),
    gradient checkpointing (about a third more compute), both, LoRA, QLoRA (CUDA only), then
    shorter sequences (changes what the model sees). Empty when the run already fits; one
    "use a smaller model" line when nothing does.
    """
    start = _Plan(
        micro_batch, grad_accum, seq_len, method, param_bytes, compute_bytes, checkpointing, shape
    )

    def need(plan: _Plan) -> int:
        return estimate_memory(
            plan.shape,
            plan.micro_batch,
            plan.seq_len,
            plan.param_bytes,
            plan.compute_bytes,
            plan.method,
            optimizer_bytes_per_param,
            device=device,
            checkpointing=plan.checkpointing,
            packed=packed,
        ).total()

    if need(start) <= available_bytes:
        return []
    lines = [
        f"{text} (est. {format_bytes(need(plan))})"
        for text, plan in _candidates(
            start, device, lora_rank, lambda p: need(p) <= available_bytes
        )
    ]
    if lines:
        return lines
    smallest = replace(start, micro_batch=1, checkpointing=True)
    return [
        f"even micro_batch 1 with gradient_checkpointing needs {format_bytes(need(smallest))} "
        f"of {format_bytes(available_bytes)}: use a smaller model or a bigger device"
    ]


def _candidates(
    start: _Plan, device: Device, rank: int, fit: Callable[[_Plan], bool]
) -> list[tuple[str, _Plan]]:
    """The changes ``suggest`` offers, in order of preference, each one that fits."""
    out = []
    smaller = _smaller_micro_batch(start, fit)
    if smaller is not None:
        out.append((_micro_text(start, smaller), smaller))
    if not start.checkpointing:
        ckpt = replace(start, checkpointing=True)
        out.append(("turn on gradient_checkpointing", ckpt))
        both = _smaller_micro_batch(ckpt, fit) if smaller is None else None
        if both is not None:
            out.append((f"turn on gradient_checkpointing and {_micro_text(ckpt, both)}", both))
    if start.method == "full":
        adapters = lora_params(start.shape, rank)
        shape = replace(
            start.shape, total_params=start.shape.total_params + adapters, trainable_params=adapters
        )
        out.append(
            (f"use method lora with rank {rank}", replace(start, method="lora", shape=shape))
        )
    else:
        shape = start.shape  # already counts its adapters
    if start.method != "qlora" and device == "cuda":  # bitsandbytes' 4-bit kernels need CUDA
        rank_text = f" with rank {rank}" if start.method == "full" else ""
        qlora = replace(start, method="qlora", param_bytes=0.5, compute_bytes=2, shape=shape)
        out.append((f"use method qlora{rank_text}", qlora))
    seq = start.seq_len // 2
    while seq >= 128 and not fit(replace(start, seq_len=seq)):
        seq //= 2
    if seq >= 128:
        text = f"seq_len {start.seq_len} → {seq}, which changes what the model sees"
        out.append((text, replace(start, seq_len=seq)))
    return [(text, plan) for text, plan in out if fit(plan)]


def _smaller_micro_batch(plan: _Plan, fit: Callable[[_Plan], bool]) -> _Plan | None:
    """The largest divisor of the micro-batch that fits, accumulation scaled to match."""
    for mb in range(plan.micro_batch - 1, 0, -1):
        if plan.micro_batch % mb:
            continue  # only divisors keep the effective batch exactly
        candidate = replace(
            plan, micro_batch=mb, grad_accum=plan.grad_accum * plan.micro_batch // mb
        )
        if fit(candidate):
            return candidate
    return None


def _micro_text(before: _Plan, after: _Plan) -> str:
    return (
        f"micro_batch {before.micro_batch} → {after.micro_batch} with grad_accum "
        f"{before.grad_accum} → {after.grad_accum} keeps the effective batch"
    )
