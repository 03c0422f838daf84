"""The training recipe: the same code on a CPU, one GPU, or many under `accelerate launch` (DDP,
FSDP, DeepSpeed) — accelerate owns devices, precision, gradient sync and sharded state.

What the recipe adds: an exact, resumable data order; loss normalised by the label tokens of
the whole global batch (so accumulation and processes change nothing); checkpoints by step and
by clock and on SIGINT/SIGTERM; a wall-clock budget; early stopping; a report. Its parts live
beside it: the spec (spec.py), the schedule (schedule.py), one step and validation (step.py),
the numbers (recorder.py), the weights left behind (save.py).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from repolm.errors import RepolmError
from repolm.fsutil import write_json_atomic
from repolm.hardware.device import train_flops_per_token
from repolm.hardware.monitor import HardwareMonitor
from repolm.logs import log, progress
from repolm.train import checkpoint
from repolm.train.data import PackedData, Schedule, unigram_loss
from repolm.train.distributed import from_main, sharded_backend, start_accelerator
from repolm.train.memory import ModelShape
from repolm.train.models import build_model, context_length, count_parameters
from repolm.train.optim import optimizer_for
from repolm.train.recorder import Recorder, perplexity
from repolm.train.samples import take_samples
from repolm.train.save import export_model, save_best
from repolm.train.schedule import (
    Budget,
    data_order,
    fit_due,
    fit_to_clock,
    plan_budget,
    set_schedule,
)
from repolm.train.spec import RunSpec
from repolm.train.step import auto_micro_batch, evaluate, optimizer_step, validation_subset
from repolm.train.stopping import TrainingInterrupted, stop_requested, stop_signals

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from torch.optim.lr_scheduler import LambdaLR
    from transformers import PreTrainedTokenizerBase


@dataclass
class Training:
    """One model's training under way: what the parts of the recipe share."""

    spec: RunSpec
    accelerator: Accelerator
    model: torch.nn.Module  # as accelerate prepared it (wrapped for DDP, FSDP, DeepSpeed)
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    tokenizer: PreTrainedTokenizerBase
    train: PackedData
    val: PackedData | None
    val_index: np.ndarray  # the validation sequences every evaluation measures
    order: Schedule
    budget: Budget
    rec: Recorder
    writer: Any  # the tensorboardX SummaryWriter, on the main process only
    step: int  # optimizer steps done
    start_step: int  # those done before this process started (a resume)
    t_start: float  # monotonic clock when training began, earlier runs' seconds included
    last_checkpoint: float

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def train_model(spec: RunSpec) -> dict[str, Any]:
    """Train one model; returns its report (also written to work_dir/report.json)."""
    run = _start(spec)
    stop_reason = _train_steps(run)
    return _finish(run, stop_reason)


def _start(spec: RunSpec) -> Training:
    """The model, the optimizer and the schedule on this device, resumed from the latest
    checkpoint of this fingerprint when there is one."""
    import torch
    from transformers import AutoTokenizer

    tc = spec.model.train
    accelerator, device, precision = start_accelerator(tc)
    main = accelerator.is_main_process
    sharded = sharded_backend()
    if sharded and device.kind == "cpu" and main:
        log.warning(
            f"{sharded} needs CUDA GPUs: on this CPU the processes run plain data "
            "parallel (DDP over gloo) instead"
        )
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_dir)
    train, val = _read_data(spec, main)
    world = accelerator.num_processes
    model, shape, flops = _model(spec, tokenizer, precision, train.seq_len)
    found = None
    if spec.resume != "never":
        found = checkpoint.latest(spec.checkpoints_dir, spec.fingerprint)
    if tc.micro_batch == "auto":
        # a resumed run keeps the size it started with: the data order depends on it
        if found:
            micro = found[1]["micro_batch"]
        else:
            micro = auto_micro_batch(spec, model, shape, train, device, precision, accelerator)
        spec.set_micro_batch(micro)
        tc = spec.model.train
        if main:
            log.info(f"train {spec.name}: micro_batch auto → {micro}")
    budget = plan_budget(spec, len(train), world)
    optimizer = optimizer_for(model, budget.lr, tc, fused=device.kind == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    set_schedule(scheduler, budget, tc.min_lr_ratio)
    model, optimizer = accelerator.prepare(model, optimizer)
    checkpoint.trainable_only(accelerator)

    total, trainable = shape.total_params, shape.trainable_params
    rec = Recorder(spec, budget, total, trainable, precision, device, world, flops)
    rec.val_sequences = len(val) if val else 0
    start_step = _resume(spec, accelerator, scheduler, budget, rec, found)
    rec.unigram = unigram_loss(train, val, len(tokenizer)) if main and val else None
    return Training(
        spec=spec,
        accelerator=accelerator,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        tokenizer=tokenizer,
        train=train,
        val=val,
        val_index=validation_subset(len(val) if val else 0, tc.eval_sequences, tc.seed),
        order=data_order(spec, len(train), world),
        budget=budget,
        rec=rec,
        writer=_tensorboard(spec) if main else None,
        step=start_step,
        start_step=start_step,
        t_start=time.monotonic() - rec.seconds,
        last_checkpoint=time.monotonic(),
    )


def _model(
    spec: RunSpec, tokenizer: Any, precision: str, seq_len: int
) -> tuple[Any, ModelShape, int]:
    """The model on the CPU, its shape (parameters counted as `count_parameters` does) and
    the FLOPs of a training step per token."""
    model = build_model(spec.model, spec.added_tokens, tokenizer, precision)
    total, trainable = count_parameters(model)
    shape = ModelShape.from_config(model.config, total, trainable)
    width = shape.heads * shape.attention_head_dim  # attention's FLOPs need its depth and width
    flops = train_flops_per_token(trainable, total, shape.layers, width, seq_len)
    return model, shape, flops


def _read_data(spec: RunSpec, main: bool) -> tuple[PackedData, PackedData | None]:
    """The training and validation sequences, checked against the model's context."""
    train = PackedData.read(spec.train_dir)
    val = PackedData.read(spec.val_dir) if spec.val_dir else None
    if val is None and main:
        log.info(
            f"train {spec.name}: no validation data, so no validation loss and no early "
            "stopping; the final weights are saved"
        )
    context = context_length(spec.model)
    if train.seq_len > context:
        raise RepolmError(
            f"sequences of {train.seq_len} tokens exceed the model's context of {context}",
            "lower build.seq_len or raise the model's context",
        )
    return train, val


def _resume(
    spec: RunSpec,
    accelerator: Accelerator,
    scheduler: LambdaLR,
    budget: Budget,
    rec: Recorder,
    found: tuple[Path, dict[str, Any]] | None,
) -> int:
    """The step to start from: the checkpoint's when one was found (its schedule and numbers
    restored), else 0, the checkpoints of another configuration removed."""
    main = accelerator.is_main_process
    root = spec.checkpoints_dir
    if spec.resume == "require" and found is None:
        raise RepolmError(
            f"no checkpoint of this configuration in {root}",
            "run without --resume to start training",
        )
    if found is None:
        if main and checkpoint.list_checkpoints(root):
            log.warning(
                f"train {spec.name}: starting over; the checkpoints in {root} are of "
                "another configuration or data (or --force) and are removed"
            )
            shutil.rmtree(root)  # never mixed with this run's
            shutil.rmtree(spec.tensorboard_dir, ignore_errors=True)  # nor its curves
        return 0
    path, _ = found
    state = checkpoint.load(accelerator, path)
    scheduler.load_state_dict(state["scheduler"])
    budget.total_steps, budget.warmup_steps = state["total_steps"], state["warmup_steps"]
    set_schedule(scheduler, budget, spec.model.train.min_lr_ratio)
    rec.restore(state["report"])
    if main:
        log.info(f"train {spec.name}: resumed from {path.name} (step {state['step']:,})")
    return state["step"]


def _train_steps(run: Training) -> str | None:
    """Optimizer steps until the budget's last, an early stop, a signal or the clock; with
    evaluations and checkpoints on the way. The reason it stopped early, if it did."""
    spec, tc, rec = run.spec, run.spec.model.train, run.rec

    def on_sample(sample: dict[str, Any]) -> None:
        if run.writer is not None:
            for key, value in sample.items():
                if key != "t" and isinstance(value, (int, float)):
                    run.writer.add_scalar(f"hardware/{key}", value, run.step)

    durations: list[float] = []
    stop_reason = None
    monitor_started = time.monotonic()
    run.model.train()
    with (
        stop_signals() as signals,
        HardwareMonitor(interval_s=tc.hardware_every_s, on_sample=on_sample) as monitor,
        progress(f"train {spec.name}", total=run.budget.total_steps, unit="steps") as bar,
    ):
        bar.advance(run.start_step)
        while run.step < run.budget.total_steps:
            t0 = time.monotonic()
            lr = run.optimizer.param_groups[0]["lr"]  # the rate this step uses
            micro = run.order.micro_batches(run.step, run.accelerator.process_index)
            loss, grad_norm, n_items = optimizer_step(
                run.accelerator, run.model, run.optimizer, run.train, micro, tc.grad_clip
            )
            run.scheduler.step()
            run.step += 1
            seconds = time.monotonic() - t0
            durations.append(seconds)
            if fit_due(run.step - run.start_step, seconds, tc.max_minutes):
                _fit(run, durations, bar)
            tokens = run.budget.global_batch * run.train.seq_len
            rec.step(run.step, loss, lr, grad_norm, tokens, n_items, seconds)
            bar.advance()
            if run.main:
                rec.log(run.step, run.writer)
            if run.step % tc.eval_every == 0 or run.step == run.budget.total_steps:
                stop_reason = _evaluate_and_track(run) or stop_reason
            stop_reason = stop_reason or stop_requested(
                run.accelerator, signals, tc.max_minutes, run.t_start
            )
            due = run.step % tc.checkpoint_every == 0 or (
                time.monotonic() - run.last_checkpoint > tc.checkpoint_minutes * 60
            )
            if due or stop_reason or run.step == run.budget.total_steps:
                _save_checkpoint(run)
            if stop_reason:
                break
        rec.hardware = monitor.peaks()
        offset = monitor_started - run.t_start  # samples' t: seconds of training, across resumes
        kept = monitor.samples
        rec.hardware_samples += [
            {**x, "t": round(x["t"] + offset, 2)} for x in kept[:: max(1, len(kept) // 500)]
        ]
    return stop_reason


def _fit(run: Training, durations: list[float], bar: Any) -> None:
    """Fit the schedule (and the progress bar) to the clock from the steps' measured speed."""
    budget, tc = run.budget, run.spec.model.train
    # the first steps warm up: left out once there are enough others
    each = float(np.median(durations[3:][-40:] if len(durations) > 6 else durations[1:]))
    evals = each * len(run.val_index) / (3 * budget.global_batch)  # forward only
    elapsed = time.monotonic() - run.t_start
    if not fit_to_clock(run.spec, budget, run.step, elapsed, each, evals):
        return
    budget.total_steps = from_main(run.accelerator, budget.total_steps)
    budget.warmup_steps = from_main(run.accelerator, budget.warmup_steps)
    set_schedule(run.scheduler, budget, tc.min_lr_ratio)
    bar.set_total(budget.total_steps)
    if run.main:
        log.info(
            f"train {run.spec.name}: max_minutes {tc.max_minutes:g} allows "
            f"{budget.total_steps:,} steps at {each:.2f} s each; the schedule now ends there"
        )


def _save_checkpoint(run: Training) -> None:
    run.rec.seconds = time.monotonic() - run.t_start
    state = {
        "fingerprint": run.spec.fingerprint,
        "scheduler": run.scheduler.state_dict(),
        "total_steps": run.budget.total_steps,
        "warmup_steps": run.budget.warmup_steps,
        "micro_batch": run.spec.model.train.micro_batch,
        "report": run.rec.state(),
    }
    keep = run.spec.model.train.keep_checkpoints
    checkpoint.save(run.accelerator, run.spec.checkpoints_dir, run.step, state, keep)
    run.last_checkpoint = time.monotonic()


def _finish(run: Training, stop_reason: str | None) -> dict[str, Any]:
    """A final evaluation unless the last step had one or a signal asks to stop now; then the
    model saved and the report written (or, after a signal, the report and a clear error)."""
    spec, rec = run.spec, run.rec
    if (
        stop_reason in (None, "max_minutes")
        and run.val is not None
        and (not rec.evals or rec.evals[-1]["step"] != run.step)
    ):
        _evaluate_and_track(run)
    rec.seconds = time.monotonic() - run.t_start
    rec.stopped = stop_reason or "completed"
    if run.writer is not None:
        run.writer.close()
    if stop_reason and stop_reason.startswith("SIG"):
        report = rec.report()
        if run.main:
            write_json_atomic(spec.report_path, report)
        raise TrainingInterrupted(
            f"training of '{spec.name}' stopped by {stop_reason} at step {run.step:,}; "
            "checkpoint saved",
            "run the same command again to continue from it",
        )
    export_model(spec, run.accelerator, run.model, run.tokenizer, rec.best_step)
    report = rec.report()
    if run.main:
        write_json_atomic(spec.report_path, report)
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()
    return report


def _evaluate_and_track(run: Training) -> str | None:
    """Validation loss, the best weights kept, the samples; "patience" when it is time to stop."""
    spec, tc, rec, step = run.spec, run.spec.model.train, run.rec, run.step
    if run.val is None:  # nothing to measure: the samples only
        if run.main:
            _samples(run)
        return None
    loss, tokens = evaluate(run.accelerator, run.model, run.val, run.val_index, tc.micro_batch)
    improved = rec.best_loss is None or loss < rec.best_loss - tc.min_delta
    rec.evaluation(step, loss, tokens, improved)
    if run.main:
        log.info(
            f"train {spec.name}: step {step:,} validation loss {loss:.4f} "
            f"(perplexity {perplexity(loss):.2f}){' best' if improved else ''}"
        )
        _samples(run)
        if run.writer is not None:
            run.writer.add_scalar("val/loss", loss, step)
            run.writer.add_scalar("val/perplexity", perplexity(loss), step)
    if improved:
        save_best(run.accelerator, run.model, spec.best_dir, step)
    elif tc.patience and rec.bad_evals >= tc.patience:
        return "patience"
    return None


def _samples(run: Training) -> None:
    """The fixed prompts' samples, on the main process (a sharded model can't generate
    alone: FSDP and DeepSpeed runs skip them)."""
    spec, tc, step = run.spec, run.spec.model.train, run.step
    if not spec.sample_prompts or sharded_backend():
        return
    model = run.accelerator.unwrap_model(run.model)
    samples = take_samples(model, run.tokenizer, spec.sample_prompts, tc.sample_tokens)
    checked = [s["parses"] for s in samples if s["parses"] is not None]
    rate = round(sum(checked) / len(checked), 3) if checked else None
    run.rec.samples.append({"step": step, "parse_rate": rate, "samples": samples})
    if rate is not None:
        blank = len(samples) - len(checked)
        blanks = f" ({blank} blank)" if blank else ""
        log.info(
            f"train {spec.name}: step {step:,} samples that parse: "
            f"{sum(checked)}/{len(checked)}{blanks}"
        )
        if run.writer is not None:
            run.writer.add_scalar("samples/parse_rate", rate, step)


def _tensorboard(spec: RunSpec) -> Any:
    from tensorboardX import SummaryWriter

    return SummaryWriter(logdir=str(spec.tensorboard_dir), flush_secs=30)
