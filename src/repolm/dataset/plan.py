"""The training plan the build stage writes into `stats.json`, the warm-up rule that the plan
and the training schedule share, and the reader other stages use for `stats.json`."""

from __future__ import annotations

import json
import math
from typing import Any

from repolm.config.schema import BuildConfig
from repolm.errors import RepolmError
from repolm.layout import RunLayout


def warmup_steps(cfg: BuildConfig, total: int) -> int:
    """Warm-up for a run of `total` optimizer steps: clamp(warmup_fraction × total, min, max),
    at most a tenth of a short run (at least one step), never past the last step. The plan in
    `stats.json` and the training schedule both call this, so they agree."""
    warmup = min(
        max(round(cfg.warmup_fraction * total), cfg.min_warmup_steps), cfg.max_warmup_steps
    )
    return min(warmup, max(total // 10, 1), total)


def training_plan(cfg: BuildConfig, train_tokens: int, train_sequences: int) -> dict[str, Any]:
    """The original design's plan: epochs = clamp(target_tokens // train_tokens, min, max),
    with `warmup_steps` over the steps that gives."""
    epochs = min(max(cfg.target_tokens // max(train_tokens, 1), cfg.min_epochs), cfg.max_epochs)
    steps_per_epoch = math.ceil(train_sequences / cfg.batch_size)
    total = steps_per_epoch * epochs
    return {
        "train_tokens": train_tokens,
        "train_sequences": train_sequences,
        "target_tokens": cfg.target_tokens,
        "epochs": epochs,
        "batch_size": cfg.batch_size,
        "tokens_per_step": cfg.batch_size * cfg.seq_len,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "warmup_steps": warmup_steps(cfg, total),
    }


def read_stats(run: RunLayout) -> dict[str, Any]:
    """The build stage's `stats.json`: the dataset's sizes, mixes and training plan."""
    path = run.dataset_stats
    if not path.is_file():
        raise RepolmError(f"missing {path}", "run the build stage first")
    return json.loads(path.read_text())
