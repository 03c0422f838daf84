"""`repolm plan`: what each model's training will cost, before it starts — parameters, tokens,
steps, memory against this device's, time per epoch measured on a few real steps — and what
to change when it will not fit."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repolm.config.schema import Config
from repolm.dataset.plan import read_stats
from repolm.errors import RepolmError
from repolm.hardware import device as dev
from repolm.hardware.device import DeviceInfo, choose_precision, detect
from repolm.hub import local_model_dir
from repolm.layout import RunLayout
from repolm.logs import console
from repolm.train import models
from repolm.train.data import PackedData
from repolm.train.distributed import start_accelerator
from repolm.train.memory import (
    MemoryEstimate,
    ModelShape,
    estimate_memory,
    estimated_micro_batch,
    tensor_bytes,
)
from repolm.train.optim import optimizer_for
from repolm.train.schedule import Budget, data_order, plan_budget
from repolm.train.spec import RunSpec, mix_stats, run_spec
from repolm.train.step import optimizer_step
from repolm.train.suggest import suggest

MEASURED_STEPS = 2  # timed after one warm-up step


@dataclass
class ModelPlan:
    """What one model's training will cost on this device, and what would make it fit."""

    name: str
    source: str
    method: str
    total_params: int
    trainable_params: int
    sequences: int
    seq_len: int
    budget: Budget
    precision: str
    memory: MemoryEstimate
    checkpointing: bool
    available: int
    suggestions: list[str] = field(default_factory=list)
    seconds_per_step: float | None = None
    note: str = ""

    @property
    def needed(self) -> int:
        return self.memory.total(self.checkpointing)

    @property
    def fits(self) -> bool:
        return self.needed <= self.available

    @property
    def epoch_seconds(self) -> float | None:
        if self.seconds_per_step is None:
            return None
        return self.seconds_per_step * self.budget.steps_per_epoch


def plan_models(out: Path, config: Config, measure: bool = True) -> list[ModelPlan]:
    """The plan of every model of the run at `out` (through the build stage)."""
    layout = RunLayout(out)
    if not (layout.tokenizer_dir / "tokenizer.json").is_file():
        raise RepolmError(f"no tokenizer in {out}", "run 'repolm build' first (plan reads it)")
    stats = read_stats(layout)
    device = detect()
    plans = []
    for name, mc in config.models.items():
        spec = run_spec(layout, config, name, mc, stats, resume="never")
        plans.append(plan_one(spec, stats, device, measure))
    return plans


def plan_one(spec: RunSpec, stats: dict[str, Any], device: DeviceInfo, measure: bool) -> ModelPlan:
    """One model's plan: counted on a meta model (no memory), timed on real steps if asked."""
    from transformers import AutoTokenizer

    mc, tc = spec.model, spec.model.train
    sequences = mix_stats(stats, mc.mix)["sequences"]
    precision = choose_precision(tc.precision, device)
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_dir)
    model = _meta_model(spec, tokenizer)
    total, trainable = models.count_parameters(model)
    shape = ModelShape.from_config(model.config, total_params=total, trainable_params=trainable)
    note = ""
    if tc.micro_batch == "auto":
        micro = estimated_micro_batch(mc, shape, stats["seq_len"], sequences, device, precision)
        spec.set_micro_batch(micro)
        mc, tc = spec.model, spec.model.train
        note = f"micro_batch auto → {micro} by the estimate"
        if device.kind == "cuda":
            note += "; training may halve it if a real step runs out of memory"
    budget = plan_budget(
        spec, sequences, world=max(1, device.count if device.kind == "cuda" else 1)
    )
    param_bytes, compute_bytes = tensor_bytes(mc, precision)
    memory = estimate_memory(
        shape,
        tc.micro_batch,
        stats["seq_len"],
        param_bytes=param_bytes,
        compute_bytes=compute_bytes,
        method=mc.method,
        device=device.kind,
        checkpointing=tc.gradient_checkpointing,
    )
    plan = ModelPlan(
        name=spec.name,
        source=spec.source,
        method=mc.method,
        total_params=total,
        trainable_params=trainable,
        sequences=sequences,
        seq_len=stats["seq_len"],
        budget=budget,
        precision=precision,
        memory=memory,
        checkpointing=tc.gradient_checkpointing,
        available=dev.available_memory(device),
    )
    if not plan.fits:
        plan.suggestions = suggest(
            shape,
            plan.available,
            micro_batch=tc.micro_batch,
            seq_len=stats["seq_len"],
            grad_accum=tc.grad_accum,
            param_bytes=param_bytes,
            compute_bytes=compute_bytes,
            method=mc.method,
            checkpointing=tc.gradient_checkpointing,
            device=device.kind,
            lora_rank=mc.lora.rank,
        )
    plan.note = note
    if measure and plan.fits:
        plan.seconds_per_step = time_steps(spec)
    elif measure:
        plan.note = "; ".join(filter(None, [note, "not timed: it would not fit"]))
    return plan


def _meta_model(spec: RunSpec, tokenizer: Any) -> Any:
    """The model with its real shapes and no memory (meta tensors), adapters included."""
    import torch

    mc = spec.model
    with torch.device("meta"):
        if mc.base is None:
            model = models.build_scratch(models.architecture(mc), tokenizer)
        else:
            from transformers import AutoConfig, AutoModelForCausalLM

            cfg = AutoConfig.from_pretrained(
                local_model_dir(mc.base), trust_remote_code=mc.trust_remote_code
            )
            model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=mc.trust_remote_code)
            if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
                model.resize_token_embeddings(
                    len(tokenizer), pad_to_multiple_of=64, mean_resizing=False
                )
        model.tie_weights()  # transformers 5.0 leaves a meta model's head untied until asked
        if mc.method != "full":  # a quantised base has as many values: count it unquantised
            as_lora = mc.model_copy(update={"method": "lora"})
            model = models.add_adapters(model, as_lora, spec.added_tokens, False)
    return model


def time_steps(spec: RunSpec) -> float:
    """Seconds per optimizer step on this device, from real steps of the real model on the
    training data (one warm-up step, then MEASURED_STEPS timed)."""
    import torch
    from transformers import AutoTokenizer

    tc = spec.model.train
    accelerator, device, precision = start_accelerator(tc)
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_dir)
    data = PackedData.read(spec.train_dir)
    model = models.build_model(spec.model, spec.added_tokens, tokenizer, precision)
    optimizer = optimizer_for(model, 1e-6, tc, fused=device.kind == "cuda")
    model, optimizer = accelerator.prepare(model, optimizer)
    schedule = data_order(spec, len(data), 1)
    times = []
    for step in range(MEASURED_STEPS + 1):
        if device.kind == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        optimizer_step(
            accelerator, model, optimizer, data, schedule.micro_batches(step, 0), tc.grad_clip
        )
        if device.kind == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    accelerator.free_memory()
    return sum(times[1:]) / MEASURED_STEPS


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def print_plan(out: Path, config: Config, measure: bool = True) -> list[ModelPlan]:
    """`repolm plan`: each model's plan as a table on the console."""
    from rich.table import Table

    plans = plan_models(out, config, measure)
    device = detect()
    con = console()
    con.print(
        f"device: {device.kind} {device.name}, {_gb(device.memory_bytes)}"
        f"{' ×' + str(device.count) if device.count > 1 else ''}"
    )
    for p in plans:
        t = Table(
            title=f"model '{p.name}': {p.source}, {p.method}, {p.precision}",
            show_header=False,
            title_justify="left",
        )
        t.add_column(style="bold")
        t.add_column()
        b, m = p.budget, p.memory
        t.add_row("parameters", f"{p.total_params:,} total, {p.trainable_params:,} trainable")
        t.add_row(
            "data",
            f"{p.sequences:,} sequences of {p.seq_len} "
            f"({p.sequences * p.seq_len:,} tokens per epoch)",
        )
        t.add_row(
            "steps",
            f"{b.total_steps:,} ({b.epochs} epochs × {b.steps_per_epoch:,}), "
            f"batch {b.global_batch} sequences, warm-up {b.warmup_steps:,}, "
            f"peak lr {b.lr:.2e}",
        )
        t.add_row(
            "memory",
            (
                f"weights {_gb(m.weights)}, gradients {_gb(m.gradients)}, optimizer "
                f"{_gb(m.optimizer)}, activations {_gb(m.activations)} "
                f"({_gb(m.activations_checkpointed)} with checkpointing), logits {_gb(m.logits)}"
            ),
        )
        verdict = "fits" if p.fits else "[red]does NOT fit[/red]"
        if p.checkpointing:
            verdict += " (gradient checkpointing on)"
        t.add_row("needs", f"{_gb(p.needed)} of {_gb(p.available)} available: {verdict}")
        if p.seconds_per_step is not None:
            total = p.seconds_per_step * b.total_steps
            t.add_row(
                "time",
                f"{p.seconds_per_step:.2f} s/step measured: "
                f"{_duration(p.epoch_seconds)} per epoch, {_duration(total)} "
                f"in all",
            )
        if p.note:
            t.add_row("note", p.note)
        for s in p.suggestions:
            t.add_row("[yellow]suggest[/yellow]", s)
        con.print(t)
    return plans
