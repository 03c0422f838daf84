"""The training loop: the same code on a CPU, one GPU, or many under `accelerate launch` (DDP,
FSDP, DeepSpeed) — accelerate owns devices, precision, gradient sync and sharded state.

What the loop adds: an exact, resumable data order; loss normalised by the label tokens of
the whole global batch (so accumulation and processes change nothing); checkpoints by step and
by clock and on SIGINT/SIGTERM; a wall-clock budget; early stopping; a report.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from repolm.config.schema import BuildConfig, ModelConfig
from repolm.dataset.plan import warmup_steps
from repolm.errors import RepolmError
from repolm.fsutil import write_json_atomic
from repolm.hardware.device import (
    choose_precision,
    detect,
    model_flops_utilization,
    torch_dtype,
    train_flops_per_token,
)
from repolm.logs import log, progress
from repolm.train import checkpoint
from repolm.train.data import PackedData, Schedule, unigram_loss

DEFAULT_LR = {"scratch": 6e-4, "full": 2e-5, "lora": 2e-4, "qlora": 2e-4}


class TrainingInterrupted(RepolmError):
    """SIGINT/SIGTERM: a checkpoint was written; the next run continues from it."""

    exit_code = 130


@dataclass
class RunSpec:
    """Everything one model's training needs, resolved by the stage."""

    name: str
    model: ModelConfig
    build: BuildConfig
    train_dir: Path
    val_dir: Path | None  # None: no validation data (a repository with no future held out)
    tokenizer_dir: Path
    work_dir: Path  # OUT/train/<name>: checkpoints, best weights, tensorboard, report.json
    model_dir: Path  # OUT/models/<name>: the Hugging Face model
    plan: dict[str, Any]  # the build stage's plan for this data
    fingerprint: str  # config + data; a checkpoint from another fingerprint is not resumed
    resume: str = "auto"  # auto | require | never
    added_tokens: list[int] = field(default_factory=list)
    sample_prompts: list[Any] = field(default_factory=list)  # samples.SamplePrompt


@dataclass
class Budget:
    """The numbers a run is planned with."""

    steps_per_epoch: int
    epochs: int
    total_steps: int
    warmup_steps: int
    lr: float
    global_batch: int
    planned_steps: int = 0  # total_steps before a max_minutes fit

    def __post_init__(self) -> None:
        self.planned_steps = self.planned_steps or self.total_steps


def plan_budget(spec: RunSpec, sequences: int, world: int) -> Budget:
    tc = spec.model.train
    sched = Schedule(sequences, tc.micro_batch, tc.grad_accum, world, tc.seed)
    epochs = tc.epochs or int(spec.plan.get("epochs") or 1)
    total = sched.steps_per_epoch * epochs
    if tc.max_steps:
        total = min(total, tc.max_steps)
    warmup = warmup_for(spec, total)
    key = "scratch" if spec.model.base is None else spec.model.method
    base_lr = tc.lr if tc.lr is not None else DEFAULT_LR[key]
    lr = base_lr * math.sqrt(sched.global_batch / tc.lr_reference_batch)
    return Budget(sched.steps_per_epoch, epochs, total, warmup, lr, sched.global_batch)


FIT_AT = (10, 50)  # steps after which a max_minutes budget fits the schedule to the clock


def set_schedule(scheduler: Any, budget: Budget, floor: float) -> None:
    fn = partial(lr_factor, warmup=budget.warmup_steps, total=budget.total_steps, floor=floor)
    groups = scheduler.optimizer.param_groups
    scheduler.lr_lambdas = [fn] * len(groups)  # every group: decayed and not
    # the rate of the step about to run, under the new schedule
    for group, base in zip(groups, scheduler.base_lrs, strict=True):
        group["lr"] = base * fn(scheduler.last_epoch)


def _from_main(accelerator: Any, value: int) -> int:
    """The main process's value on every process (their clocks differ)."""
    if accelerator.num_processes == 1:
        return value
    import torch
    from accelerate.utils import broadcast

    return int(broadcast(torch.tensor([value], device=accelerator.device))[0])


def warmup_for(spec: RunSpec, total: int) -> int:
    tc = spec.model.train
    if tc.warmup_steps is not None:
        return min(tc.warmup_steps, total)
    return warmup_steps(spec.build, total)


def fit_to_clock(
    spec: RunSpec, budget: Budget, step: int, elapsed: float, step_seconds: float,
    eval_seconds: float,
) -> bool:  # fmt: skip
    """With `max_minutes`, fit the schedule to the steps the clock allows (measured speed,
    evaluations included, 5% kept for the final evaluation and export; never more than
    planned), so the learning rate is annealed when time is up instead of cut off at its
    peak. True when it changed by more than 5% (a later fit corrects an early one)."""
    tc = spec.model.train
    if not tc.max_minutes:
        return False
    left = tc.max_minutes * 60 * 0.95 - elapsed
    per_step = step_seconds + eval_seconds / tc.eval_every
    total = min(step + max(int(left / per_step), 1), budget.planned_steps)
    if abs(total - budget.total_steps) <= 0.05 * budget.total_steps:
        return False
    budget.total_steps = total
    budget.warmup_steps = min(warmup_for(spec, budget.planned_steps), warmup_for(spec, total))
    return True


def lr_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up whose first step already learns (transformers' starts at 0), then a
    cosine decay to `floor` at the last step."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min((step - warmup) / max(total - warmup - 1, 1), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_model(spec: RunSpec, tokenizer: Any, precision: str, device_kind: str) -> Any:
    """The model to train, on the CPU: from scratch, or a base model (with adapters)."""
    from repolm.train import models

    mc, tc = spec.model, spec.model.train
    attention = "sdpa" if tc.attention == "auto" else tc.attention
    if mc.base is None:
        model = models.build_scratch(models.architecture(mc), tokenizer, attention)
    else:
        quant = None
        if mc.method == "qlora":
            quant = models.quantization_config(mc.quant_bits, torch_dtype(
                precision if precision != "fp32" else "bf16"))  # fmt: skip
        # adapters train in fp32 over a frozen base kept in the compute precision
        dtype = torch_dtype("fp32" if mc.method == "full" else precision)
        device_map = {"": _local_device()} if quant is not None else None
        model = models.load_base(mc, tokenizer, dtype, attention, quant, device_map)
    if tc.gradient_checkpointing:
        reentrant = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=reentrant)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=reentrant)
    if mc.method in ("lora", "qlora"):
        model = models.add_adapters(model, mc, spec.added_tokens, tc.gradient_checkpointing)
        if tc.gradient_checkpointing:
            model.enable_input_require_grads()
    return model


def _local_device() -> Any:
    import torch
    from accelerate import PartialState

    return torch.device("cuda", PartialState().local_process_index)


def optimizer_for(model: Any, lr: float, tc: Any, fused: bool) -> Any:
    """AdamW; weight decay on matrices only (not norms, biases or 1-d adapter vectors)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    other = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": tc.weight_decay},
              {"params": other, "weight_decay": 0.0}]  # fmt: skip
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=lr, betas=(tc.beta1, tc.beta2), fused=fused
    )


@contextmanager
def stop_signals() -> Iterator[dict[str, Any]]:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the end of the step and stops."""
    flag: dict[str, Any] = {"signal": None}
    if threading.current_thread() is not threading.main_thread():  # signals need the main one
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["signal"] is not None:  # a second ^C: stop now
            raise KeyboardInterrupt
        flag["signal"] = signal.Signals(signum).name
        log.warning(f"{flag['signal']}: finishing this step, saving a checkpoint, then stopping")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def train_model(spec: RunSpec) -> dict[str, Any]:
    """Train one model; returns its report (also written to work_dir/report.json)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import AutoTokenizer

    from repolm.hardware.monitor import HardwareMonitor
    from repolm.train.memory import ModelShape
    from repolm.train.models import count_parameters

    tc = spec.model.train
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
    main = accelerator.is_main_process
    sharded = [n for n in ("FSDP", "DEEPSPEED") if os.environ.get(f"ACCELERATE_USE_{n}") == "true"]
    if sharded and device.kind == "cpu" and main:
        log.warning(f"{sharded[0]} needs CUDA GPUs: on this CPU the processes run plain data "
                    "parallel (DDP over gloo) instead")  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_dir)
    train = PackedData.read(spec.train_dir)
    val = PackedData.read(spec.val_dir) if spec.val_dir else None
    if val is None and main:
        log.info(
            f"train {spec.name}: no validation data, so no validation loss and no early "
            "stopping; the final weights are saved"
        )
    if train.seq_len > _context(spec):
        raise RepolmError(
            f"sequences of {train.seq_len} tokens exceed the model's context of {_context(spec)}",
            "lower build.seq_len or raise the model's context",
        )
    world, rank = accelerator.num_processes, accelerator.process_index
    model = build_model(spec, tokenizer, precision, device.kind)
    total_params, trainable_params = count_parameters(model)
    shape = ModelShape.from_model(model)  # attention's FLOPs need its depth and width
    width = shape.heads * shape.attention_head_dim
    flops = train_flops_per_token(
        trainable_params, total_params, shape.layers, width, train.seq_len
    )
    ckpt_root = spec.work_dir / "checkpoints"
    found = None if spec.resume == "never" else checkpoint.latest(ckpt_root, spec.fingerprint)
    if tc.micro_batch == "auto":
        micro = (found[1]["micro_batch"] if found else
                 auto_micro_batch(spec, model, train, device, precision, accelerator))  # fmt: skip
        spec.model = spec.model.model_copy(update={"train": tc.model_copy(
            update={"micro_batch": micro})})  # fmt: skip
        tc = spec.model.train
        if main:
            log.info(f"train {spec.name}: micro_batch auto → {micro}")
    budget = plan_budget(spec, len(train), world)
    schedule = Schedule(len(train), tc.micro_batch, tc.grad_accum, world, tc.seed)
    optimizer = optimizer_for(model, budget.lr, tc, fused=device.kind == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    set_schedule(scheduler, budget, tc.min_lr_ratio)
    model, optimizer = accelerator.prepare(model, optimizer)
    checkpoint.trainable_only(accelerator)

    rec = Recorder(spec, budget, total_params, trainable_params, precision, device, world, flops)
    rec.val_sequences = len(val) if val else 0
    start_step = 0
    if spec.resume == "require" and found is None:
        raise RepolmError(
            f"no checkpoint of this configuration in {ckpt_root}",
            "run without --resume to start training",
        )
    if found is not None:
        path, _ = found
        state = checkpoint.load(accelerator, path)
        scheduler.load_state_dict(state["scheduler"])
        budget.total_steps, budget.warmup_steps = state["total_steps"], state["warmup_steps"]
        set_schedule(scheduler, budget, tc.min_lr_ratio)
        rec.restore(state["report"])
        start_step = state["step"]
        if main:
            log.info(f"train {spec.name}: resumed from {path.name} (step {start_step:,})")
    elif main and checkpoint.list_checkpoints(ckpt_root):
        import shutil

        log.warning(f"train {spec.name}: starting over; the checkpoints in {ckpt_root} are of "
                    "another configuration or data (or --force) and are removed")  # fmt: skip
        shutil.rmtree(ckpt_root)  # never mixed with this run's
        shutil.rmtree(spec.work_dir / "tensorboard", ignore_errors=True)  # nor its curves
    rec.unigram = unigram_loss(train, val, len(tokenizer)) if main and val else None

    val_index = _val_subset(len(val) if val else 0, tc.eval_sequences, tc.seed)
    step = start_step
    last_ckpt = time.monotonic()
    t_start = time.monotonic() - rec.seconds
    stop_reason = None
    writer = _tensorboard(spec.work_dir / "tensorboard") if main else None

    def on_sample(sample: dict[str, Any]) -> None:
        if writer is not None:
            for key, value in sample.items():
                if key != "t" and isinstance(value, (int, float)):
                    writer.add_scalar(f"hardware/{key}", value, step)

    def save_checkpoint() -> None:
        nonlocal last_ckpt
        rec.seconds = time.monotonic() - t_start
        state = {"fingerprint": spec.fingerprint, "scheduler": scheduler.state_dict(),
                 "total_steps": budget.total_steps, "warmup_steps": budget.warmup_steps,
                 "micro_batch": tc.micro_batch,
                 "report": rec.state()}  # fmt: skip
        checkpoint.save(accelerator, ckpt_root, step, state, tc.keep_checkpoints)
        last_ckpt = time.monotonic()

    durations: list[float] = []
    monitor_started = time.monotonic()
    model.train()
    with (
        stop_signals() as signals,
        HardwareMonitor(interval_s=tc.hardware_every_s, on_sample=on_sample) as monitor,
        progress(f"train {spec.name}", total=budget.total_steps, unit="steps") as bar,
    ):
        bar.advance(start_step)
        while step < budget.total_steps:
            t0 = time.monotonic()
            lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
            loss, grad_norm, n_items = optimizer_step(
                accelerator,
                model,
                optimizer,
                train,
                schedule.micro_batches(step, rank),
                tc.grad_clip,
            )
            scheduler.step()
            step += 1
            seconds = time.monotonic() - t0
            durations.append(seconds)
            if step - start_step in FIT_AT and tc.max_minutes:
                each = float(np.median(durations[3:][-40:]))  # the first steps warm up
                evals = each * len(val_index) / (3 * budget.global_batch)  # forward only
                if fit_to_clock(spec, budget, step, time.monotonic() - t_start, each, evals):
                    budget.total_steps = _from_main(accelerator, budget.total_steps)
                    budget.warmup_steps = _from_main(accelerator, budget.warmup_steps)
                    set_schedule(scheduler, budget, tc.min_lr_ratio)
                    bar.set_total(budget.total_steps)
                    if main:
                        log.info(f"train {spec.name}: max_minutes {tc.max_minutes:g} allows "
                                 f"{budget.total_steps:,} steps at {each:.2f} s each; the "
                                 "schedule now ends there")  # fmt: skip
            rec.step(step, loss, lr, grad_norm,
                     budget.global_batch * train.seq_len, n_items, seconds)  # fmt: skip
            bar.advance()
            if main:
                rec.log(step, writer)
            if step % tc.eval_every == 0 or step == budget.total_steps:
                stopped = _evaluate_and_track(spec, accelerator, model, tokenizer, val,
                                              val_index, rec, step, writer)  # fmt: skip
                stop_reason = stopped or stop_reason
            stop_reason = stop_reason or _stop_requested(accelerator, signals, tc, t_start)
            due = step % tc.checkpoint_every == 0 or (
                time.monotonic() - last_ckpt > tc.checkpoint_minutes * 60
            )
            if due or stop_reason or step == budget.total_steps:
                save_checkpoint()
            if stop_reason:
                break
        rec.hardware = monitor.peaks()
        offset = monitor_started - t_start  # samples' t: seconds of training, across resumes
        kept = monitor.samples
        rec.hardware_samples += [{**x, "t": round(x["t"] + offset, 2)}
                                 for x in kept[:: max(1, len(kept) // 500)]]  # fmt: skip
    # a final evaluation unless the last step had one or a signal asks to stop now
    if (
        stop_reason in (None, "max_minutes")
        and val is not None
        and (not rec.evals or rec.evals[-1]["step"] != step)
    ):
        _evaluate_and_track(spec, accelerator, model, tokenizer, val, val_index, rec, step, writer)
    rec.seconds = time.monotonic() - t_start
    rec.stopped = stop_reason or "completed"
    if writer is not None:
        writer.close()
    if stop_reason and stop_reason.startswith("SIG"):
        report = rec.report()
        if main:
            write_json_atomic(spec.work_dir / "report.json", report)
        raise TrainingInterrupted(
            f"training of '{spec.name}' stopped by {stop_reason} at step {step:,}; "
            "checkpoint saved",
            "run the same command again to continue from it",
        )
    from repolm.train.save import export_model

    export_model(spec, accelerator, model, tokenizer, rec.best_step)
    report = rec.report()
    if main:
        write_json_atomic(spec.work_dir / "report.json", report)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return report


def optimizer_step(
    accelerator: Any, model: Any, optimizer: Any, data: PackedData, micro: list[np.ndarray],
    grad_clip: float,
) -> tuple[float, float | None, int]:  # fmt: skip
    """One optimizer step over this process's micro-batches: (mean loss per label token of the
    global batch, gradient norm before clipping, label tokens in the global batch)."""
    import torch

    world = accelerator.num_processes
    n_items = _global_sum(accelerator, sum(int((data.labels[i][:, 1:] != -100).sum())
                                           for i in micro))  # fmt: skip
    loss_sum = torch.zeros((), device=accelerator.device)
    grad_norm = None
    for index in micro:
        batch = _tensors(data.batch(index), accelerator.device)
        with accelerator.accumulate(model):
            out = model(**batch, num_items_in_batch=n_items)
            # out.loss is this micro-batch's share of the global mean; accelerate divides by
            # the accumulation steps and DDP averages over processes: undo both
            accelerator.backward(out.loss * len(micro) * world)
            loss_sum += out.loss.detach()
            del out  # its logits (B × L × vocab) must not live through the next forward
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(),
                                                        grad_clip or float("inf"))  # fmt: skip
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    loss = float(accelerator.reduce(loss_sum, reduction="sum"))
    return loss, _item(grad_norm), int(n_items)


AUTO_MAX_MICRO = 64


def auto_micro_batch(
    spec: RunSpec, model: Any, data: PackedData, device: Any, precision: str, accelerator: Any
) -> int:
    """`micro_batch: auto`: the largest power of two whose estimated peak fits in 90% of this
    device's memory (at most 64, at most the sequences one process gets), then on CUDA halved
    until a real forward and backward pass fits."""
    from repolm.train.memory import ModelShape

    shape = ModelShape.from_model(model)
    sequences = max(1, len(data) // accelerator.num_processes)
    micro = estimated_micro_batch(spec, shape, data.seq_len, sequences, device, precision)
    if device.kind == "cuda":
        micro = _largest_that_runs(model, data, micro, accelerator)
    return _from_main(accelerator, micro)


def estimated_micro_batch(
    spec: RunSpec, shape: Any, seq_len: int, sequences: int, device: Any, precision: str
) -> int:
    """The largest power of two (at most 64 and `sequences`) whose estimated peak fits in 90%
    of the device's free memory; 1 when none does."""
    from repolm.hardware import device as dev
    from repolm.train.memory import estimate_memory
    from repolm.train.plan import tensor_bytes

    param_bytes, compute_bytes = tensor_bytes(spec.model, precision)
    room = 0.9 * dev.available_memory(device)
    micro = 1
    while micro * 2 <= min(AUTO_MAX_MICRO, sequences) and estimate_memory(
        shape, micro * 2, seq_len, param_bytes, compute_bytes, spec.model.method,
        device=device.kind, checkpointing=spec.model.train.gradient_checkpointing,
    ).total() <= room:  # fmt: skip
        micro *= 2
    return micro


def _largest_that_runs(model: Any, data: PackedData, start: int, accelerator: Any) -> int:
    """The largest of start, start/2, start/4 ... whose forward and backward pass fits.
    (accelerate's find_executable_batch_size shrinks by 10% a try in 1.16: not powers of two.)"""
    import gc

    import torch
    from accelerate.utils.memory import should_reduce_batch_size

    model.to(accelerator.device)
    micro = start
    while True:
        try:
            batch = _tensors(data.batch(np.arange(micro) % len(data)), accelerator.device)
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


def _context(spec: RunSpec) -> int:
    if spec.model.base is not None:
        return 1 << 30  # a base model's own limit is checked by transformers
    from repolm.train.models import architecture

    return architecture(spec.model).context


def _tensorboard(path: Path) -> Any:
    from tensorboardX import SummaryWriter

    return SummaryWriter(logdir=str(path), flush_secs=30)


def _tensors(batch: dict[str, np.ndarray], device: Any) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(v).long().to(device) for k, v in batch.items()}


def _item(x: Any) -> float | None:
    return None if x is None else float(x)


def _global_sum(accelerator: Any, n: int) -> Any:
    import torch

    t = torch.tensor(n, device=accelerator.device, dtype=torch.long)
    return accelerator.reduce(t, reduction="sum") if accelerator.num_processes > 1 else t


def _stop_requested(accelerator: Any, signals: dict[str, Any], tc: Any, t0: float) -> str | None:
    """Every process agrees: a signal on any of them or the clock stops all of them."""
    import torch

    code = 0
    if signals["signal"] is not None:
        code = 2 if signals["signal"] == "SIGTERM" else 1
    elif tc.max_minutes and time.monotonic() - t0 > tc.max_minutes * 60:
        code = 3
    if accelerator.num_processes > 1:
        t = torch.tensor(code, device=accelerator.device)
        code = int(accelerator.reduce(t, reduction="max"))
    return {0: None, 1: "SIGINT", 2: "SIGTERM", 3: "max_minutes"}[code]


def _val_subset(n: int, k: int, seed: int) -> np.ndarray:
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 7]).choice(n, size=k, replace=False))


def evaluate(accelerator: Any, model: Any, data: PackedData, index: np.ndarray, micro: int):
    """Mean cross-entropy (nats per label token) over `index`, split across processes."""
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
            batch = _tensors(data.batch(part), accelerator.device)
            out = model(**batch, num_items_in_batch=1)  # the sum, not the mean
            n = (batch["labels"][:, 1:] != -100).sum()
            if real:
                loss += out.loss.double()
                count += n.double()
    model.train()
    loss = accelerator.reduce(loss, reduction="sum")
    count = accelerator.reduce(count, reduction="sum")
    return float(loss / count.clamp(min=1)), int(count)


def _evaluate_and_track(
    spec, accelerator, model, tokenizer, val, val_index, rec, step, writer
) -> str | None:
    tc = spec.model.train
    if val is None:  # nothing to measure: the samples only
        if accelerator.is_main_process:
            _samples(spec, accelerator, model, tokenizer, rec, step, writer)
        return None
    loss, tokens = evaluate(accelerator, model, val, val_index, tc.micro_batch)
    improved = rec.best_loss is None or loss < rec.best_loss - tc.min_delta
    rec.evaluation(step, loss, tokens, improved)
    if accelerator.is_main_process:
        log.info(
            f"train {spec.name}: step {step:,} validation loss {loss:.4f} "
            f"(perplexity {math.exp(min(loss, 50)):.2f}){' best' if improved else ''}"
        )
        _samples(spec, accelerator, model, tokenizer, rec, step, writer)
        if writer is not None:
            writer.add_scalar("val/loss", loss, step)
            writer.add_scalar("val/perplexity", math.exp(min(loss, 50)), step)
    if improved:
        from repolm.train.save import save_best

        save_best(accelerator, model, spec.work_dir / "best", step)
    elif tc.patience and rec.bad_evals >= tc.patience:
        return "patience"
    return None


def _samples(spec, accelerator, model, tokenizer, rec, step, writer) -> None:
    """The fixed prompts' samples, on the main process (a sharded model can't generate
    alone: FSDP and DeepSpeed runs skip them)."""
    from repolm.train.samples import take_samples

    tc = spec.model.train
    sharded = any(os.environ.get(f"ACCELERATE_USE_{n}") == "true" for n in ("FSDP", "DEEPSPEED"))
    if not spec.sample_prompts or sharded:
        return
    samples = take_samples(accelerator.unwrap_model(model), tokenizer, spec.sample_prompts,
                           tc.sample_tokens)  # fmt: skip
    checked = [s["parses"] for s in samples if s["parses"] is not None]
    rate = round(sum(checked) / len(checked), 3) if checked else None
    rec.samples.append({"step": step, "parse_rate": rate, "samples": samples})
    if rate is not None:
        blank = len(samples) - len(checked)
        blanks = f" ({blank} blank)" if blank else ""
        log.info(f"train {spec.name}: step {step:,} samples that parse: "
                 f"{sum(checked)}/{len(checked)}{blanks}")  # fmt: skip
        if writer is not None:
            writer.add_scalar("samples/parse_rate", rate, step)


class Recorder:
    """The run's numbers: per-step series, evaluations, early stopping; the report."""

    def __init__(self, spec, budget, total, trainable, precision, device, world, flops) -> None:
        self.spec, self.budget = spec, budget
        self.meta = {
            "name": spec.name,
            "source": spec.model.base or f"scratch:{spec.model.architecture}",
            "method": spec.model.method,
            "mix": spec.model.mix,
            "parameters": {"total": total, "trainable": trainable},
            "flops_per_token": flops,
            "precision": precision,
            "device": {"kind": device.kind, "name": device.name, "processes": world},
            "plan": budget.__dict__,
        }
        self.steps: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []  # at each evaluation: see samples.py
        self.best_loss: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.tokens = 0
        self.label_tokens = 0
        self.seconds = 0.0
        self.unigram: float | None = None
        self.val_sequences = 0
        self.hardware: dict[str, Any] = {}
        self.hardware_samples: list[dict[str, float]] = []  # thinned, t = seconds of training
        self.stopped = ""
        self.flops_per_token = flops  # device.train_flops_per_token
        self.peak = device.peak_flops

    def step(self, step, loss, lr, grad_norm, tokens, label_tokens, seconds) -> None:
        self.tokens += tokens
        self.label_tokens += int(label_tokens)
        tps = tokens / max(seconds, 1e-9)
        row = {"step": step, "loss": round(loss, 5), "lr": lr, "grad_norm": grad_norm,
               "tokens_per_s": round(tps, 1), "seconds": round(seconds, 4)}  # fmt: skip
        if self.peak:
            peak = self.peak * self.meta["device"]["processes"]
            row["mfu"] = round(model_flops_utilization(self.flops_per_token, tps, peak), 4)
        self.steps.append(row)

    def log(self, step: int, writer: Any) -> None:
        row = self.steps[-1]
        if writer is not None:
            for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu"):
                if row.get(key) is not None:
                    writer.add_scalar(f"train/{key}", row[key], step)
        if step % self.spec.model.train.log_every == 0 or step == 1:
            mfu = f", MFU {row['mfu']:.1%}" if "mfu" in row else ""
            log.info(
                f"train {self.spec.name}: step {step:,}/{self.budget.total_steps:,} loss "
                f"{row['loss']:.4f} lr {row['lr']:.2e} grad norm {row['grad_norm'] or 0:.2f} "
                f"{row['tokens_per_s']:,.0f} tokens/s{mfu}"
            )

    def evaluation(self, step: int, loss: float, tokens: int, improved: bool) -> None:
        ppl = round(math.exp(min(loss, 50)), 4)
        self.evals.append({"step": step, "loss": round(loss, 5), "perplexity": ppl,
                           "tokens": tokens})  # fmt: skip
        if improved:
            self.best_loss, self.best_step, self.bad_evals = loss, step, 0
        else:
            self.bad_evals += 1

    def state(self) -> dict[str, Any]:
        return {"steps": self.steps, "evals": self.evals, "samples": self.samples,
                "hardware_samples": self.hardware_samples,
                "best_loss": self.best_loss,
                "best_step": self.best_step, "bad_evals": self.bad_evals, "tokens": self.tokens,
                "label_tokens": self.label_tokens, "seconds": self.seconds}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def report(self) -> dict[str, Any]:
        losses = [s["loss"] for s in self.steps]
        spe = self.budget.steps_per_epoch
        per_epoch = [round(float(np.mean(losses[i : i + spe])), 5)
                     for i in range(0, len(losses), spe)]  # fmt: skip
        grad = [s["grad_norm"] for s in self.steps if s["grad_norm"] is not None]
        lrs = [s["lr"] for s in self.steps]
        tps = [s["tokens_per_s"] for s in self.steps[1:]] or [0.0]
        final = self.evals[-1] if self.evals else None
        best = next((e for e in self.evals if e["step"] == self.best_step), None)
        return {
            **self.meta,
            "steps": len(self.steps),
            "epochs_done": round(len(self.steps) / spe, 3),
            "tokens_seen": self.tokens,
            "label_tokens_seen": self.label_tokens,
            "seconds": round(self.seconds, 2),
            "tokens_per_s": round(float(np.median(tps)), 1),
            "tokens_per_s_per_step": [s["tokens_per_s"] for s in self.steps],
            "mfu": (
                round(float(np.median([s["mfu"] for s in self.steps[1:]])), 4)
                if self.peak and len(self.steps) > 1
                else None
            ),  # fmt: skip
            "loss": {
                "first": losses[0] if losses else None,
                "last": losses[-1] if losses else None,
                "per_epoch": per_epoch,
                "per_step": losses,
            },  # fmt: skip
            "validation": {
                "sequences": self.val_sequences,
                "final": final,
                "best": best,
                "evaluations": self.evals,
                "unigram_loss": None if self.unigram is None else round(self.unigram, 5),
            },  # fmt: skip
            "samples": self.samples,
            "grad_norm": {
                "min": min(grad),
                "max": max(grad),
                "per_step": [s["grad_norm"] for s in self.steps],
            }
            if grad
            else None,
            "lr": {"min": min(lrs), "max": max(lrs), "per_step": lrs} if lrs else None,
            "seconds_per_step": [s["seconds"] for s in self.steps],
            "early_stopping": {
                "stopped": self.stopped,
                "best_step": self.best_step,
                "patience": self.spec.model.train.patience,
                "evaluations_without_gain": self.bad_evals,
            },  # fmt: skip
            "hardware": self.hardware,
            "hardware_samples": self.hardware_samples,
            "model_dir": str(self.spec.model_dir),
        }
