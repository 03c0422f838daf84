"""Checkpoints that survive any crash: written to a temporary directory, renamed when whole.

A checkpoint is `accelerate`'s state (trainable weights as safetensors, optimizer, gradient
scaler, every process's RNG; loaded back with `torch.load(weights_only=True)`) plus our
`state.json`: the step (which fixes the data position, see `data.Schedule`), the scheduler,
early-stopping state and the report so far. Only trainable weights are stored, so a LoRA
checkpoint of a 7B model holds megabytes, not the frozen base. A directory without
`state.json` is never complete: `state.json` is written last, then the directory is renamed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from repolm.fsutil import write_json_atomic

STATE = "state.json"
NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if NAME.match(p.name) and (p / STATE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest(root: Path, fingerprint: str) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint made by a run with this fingerprint."""
    for path in reversed(list_checkpoints(root)):
        state = json.loads((path / STATE).read_text())
        if state.get("fingerprint") == fingerprint:
            return path, state
    return None


def trainable_only(accelerator: Any) -> None:
    """Make `accelerator.save_state` store only trainable weights; `load_state(strict=False)`
    then restores them into a model whose frozen weights came from the base."""

    def hook(models: list[Any], weights: list[dict[str, Any]], output_dir: str) -> None:
        for i, (model, state) in enumerate(zip(models, weights, strict=False)):
            keep = {n for n, p in model.named_parameters() if p.requires_grad}
            weights[i] = {k: v for k, v in state.items() if k in keep}

    accelerator.register_save_state_pre_hook(hook)


def save(accelerator: Any, root: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Every process calls this; the main process renames and prunes."""
    final = root / checkpoint_name(step)
    tmp = root / f".{final.name}.tmp"
    if accelerator.is_main_process:
        for stale in root.glob(".step-*.tmp"):  # left by a crash while writing
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / STATE, {**state, "step": step})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load(accelerator: Any, path: Path) -> dict[str, Any]:
    accelerator.load_state(str(path), strict=False)
    return json.loads((path / STATE).read_text())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
