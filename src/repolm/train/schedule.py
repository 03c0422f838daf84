"""The numbers a run is planned with and the learning rate's course over it: steps and epochs,
the peak rate scaled to the batch, warm-up (the build plan's one rule, `warmup_steps`), cosine
decay, and with `max_minutes` the schedule fitted to the steps the clock allows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from repolm.dataset.plan import warmup_steps
from repolm.train.data import Schedule
from repolm.train.spec import RunSpec

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import LambdaLR

DEFAULT_LR = {"scratch": 6e-4, "full": 2e-5, "lora": 2e-4, "qlora": 2e-4}
FIT_AT = (10, 50)  # steps after which a max_minutes budget fits the schedule to the clock
# ...and these too when FIT_AT's first would spend over a tenth of the budget: a slow model is
# fitted after its second step and fitted again as it goes, since its first steps are slower
# (or shared the machine) and a first fit of 9 steps would never reach step 10 to correct it
EARLY_FITS = (2, 4, 8, 16, 32)


def fit_due(steps_run: int, step_seconds: float, max_minutes: float | None) -> bool:
    """Whether to fit the schedule to the clock after `steps_run` steps of this run. A slow
    model (a pretrained base on a CPU: a minute a step) would otherwise spend its whole budget
    in the planned warm-up, at a learning rate near zero, before the first fit."""
    if not max_minutes:
        return False
    if steps_run in FIT_AT:
        return True
    return steps_run in EARLY_FITS and step_seconds * FIT_AT[0] > max_minutes * 60 / 10


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


def data_order(spec: RunSpec, sequences: int, world: int) -> Schedule:
    """Which sequences each of `world` processes reads at each step."""
    tc = spec.model.train
    return Schedule(sequences, tc.micro_batch, tc.grad_accum, world, tc.seed)


def plan_budget(spec: RunSpec, sequences: int, world: int) -> Budget:
    """Steps from the epochs (the config's, else the build plan's) and `max_steps`; the peak
    rate scaled by the square root of the global batch over `lr_reference_batch`."""
    tc = spec.model.train
    sched = data_order(spec, sequences, world)
    epochs = tc.epochs or int(spec.plan.get("epochs") or 1)
    total = sched.steps_per_epoch * epochs
    if tc.max_steps:
        total = min(total, tc.max_steps)
    warmup = warmup_for(spec, total)
    key = "scratch" if spec.model.base is None else spec.model.method
    base_lr = tc.lr if tc.lr is not None else DEFAULT_LR[key]
    lr = base_lr * math.sqrt(sched.global_batch / tc.lr_reference_batch)
    return Budget(sched.steps_per_epoch, epochs, total, warmup, lr, sched.global_batch)


def warmup_for(spec: RunSpec, total: int) -> int:
    """The configured warm-up, else the build plan's rule, for a run of `total` steps."""
    tc = spec.model.train
    if tc.warmup_steps is not None:
        return min(tc.warmup_steps, total)
    return warmup_steps(spec.build, total)


def lr_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up whose first step already learns (transformers' starts at 0), then a
    cosine decay to `floor` at the last step."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min((step - warmup) / max(total - warmup - 1, 1), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def set_schedule(scheduler: LambdaLR, budget: Budget, floor: float) -> None:
    """Make every parameter group follow `budget`'s schedule, from the scheduler's step on."""
    fn = partial(lr_factor, warmup=budget.warmup_steps, total=budget.total_steps, floor=floor)
    groups = scheduler.optimizer.param_groups
    scheduler.lr_lambdas = [fn] * len(groups)  # every group: decayed and not
    # the rate of the step about to run, under the new schedule
    for group, base in zip(groups, scheduler.base_lrs, strict=True):
        group["lr"] = base * fn(scheduler.last_epoch)


def fit_to_clock(
    spec: RunSpec,
    budget: Budget,
    step: int,
    elapsed: float,
    step_seconds: float,
    eval_seconds: float,
) -> bool:
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
