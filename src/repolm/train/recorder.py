"""The run's numbers: per-step series, evaluations and early stopping as training goes, kept in
every checkpoint, and at the end the report (OUT/train/<name>/report.json)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from repolm.hardware.device import DeviceInfo, model_flops_utilization
from repolm.logs import log
from repolm.train.schedule import Budget
from repolm.train.spec import RunSpec


def perplexity(loss: float) -> float:
    """exp(loss), capped where a diverged loss would overflow."""
    return math.exp(min(loss, 50))


class Recorder:
    """The run's numbers: per-step series, evaluations, early stopping; the report."""

    def __init__(
        self,
        spec: RunSpec,
        budget: Budget,
        total: int,
        trainable: int,
        precision: str,
        device: DeviceInfo,
        world: int,
        flops: int,
    ) -> None:
        self.spec, self.budget = spec, budget
        self.meta = {
            "name": spec.name,
            "source": spec.source,
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

    def step(
        self,
        step: int,
        loss: float,
        lr: float,
        grad_norm: float | None,
        tokens: int,
        label_tokens: int,
        seconds: float,
    ) -> None:
        self.tokens += tokens
        self.label_tokens += int(label_tokens)
        tps = tokens / max(seconds, 1e-9)
        row = {
            "step": step,
            "loss": round(loss, 5),
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": round(tps, 1),
            "seconds": round(seconds, 4),
        }
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
        ppl = round(perplexity(loss), 4)
        self.evals.append(
            {"step": step, "loss": round(loss, 5), "perplexity": ppl, "tokens": tokens}
        )
        if improved:
            self.best_loss, self.best_step, self.bad_evals = loss, step, 0
        else:
            self.bad_evals += 1

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the numbers so far (`restore` puts it back)."""
        return {
            "steps": self.steps,
            "evals": self.evals,
            "samples": self.samples,
            "hardware_samples": self.hardware_samples,
            "best_loss": self.best_loss,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "tokens": self.tokens,
            "label_tokens": self.label_tokens,
            "seconds": self.seconds,
        }

    def restore(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def report(self) -> dict[str, Any]:
        losses = [s["loss"] for s in self.steps]
        spe = self.budget.steps_per_epoch
        per_epoch = [
            round(float(np.mean(losses[i : i + spe])), 5) for i in range(0, len(losses), spe)
        ]
        grad = [s["grad_norm"] for s in self.steps if s["grad_norm"] is not None]
        lrs = [s["lr"] for s in self.steps]
        tps = [s["tokens_per_s"] for s in self.steps[1:]] or [0.0]
        final = self.evals[-1] if self.evals else None
        best = next((e for e in self.evals if e["step"] == self.best_step), None)
        mfu = None
        if self.peak and len(self.steps) > 1:
            mfu = round(float(np.median([s["mfu"] for s in self.steps[1:]])), 4)
        return {
            **self.meta,
            "steps": len(self.steps),
            "epochs_done": round(len(self.steps) / spe, 3),
            "tokens_seen": self.tokens,
            "label_tokens_seen": self.label_tokens,
            "seconds": round(self.seconds, 2),
            "tokens_per_s": round(float(np.median(tps)), 1),
            "tokens_per_s_per_step": [s["tokens_per_s"] for s in self.steps],
            "mfu": mfu,
            "loss": {
                "first": losses[0] if losses else None,
                "last": losses[-1] if losses else None,
                "per_epoch": per_epoch,
                "per_step": losses,
            },
            "validation": {
                "sequences": self.val_sequences,
                "final": final,
                "best": best,
                "evaluations": self.evals,
                "unigram_loss": None if self.unigram is None else round(self.unigram, 5),
            },
            "samples": self.samples,
            "grad_norm": (
                {
                    "min": min(grad),
                    "max": max(grad),
                    "per_step": [s["grad_norm"] for s in self.steps],
                }
                if grad
                else None
            ),
            "lr": {"min": min(lrs), "max": max(lrs), "per_step": lrs} if lrs else None,
            "seconds_per_step": [s["seconds"] for s in self.steps],
            "early_stopping": {
                "stopped": self.stopped,
                "best_step": self.best_step,
                "patience": self.spec.model.train.patience,
                "evaluations_without_gain": self.bad_evals,
            },
            "hardware": self.hardware,
            "hardware_samples": self.hardware_samples,
            "model_dir": str(self.spec.model_dir),
        }
