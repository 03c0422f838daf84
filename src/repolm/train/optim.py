"""The optimizer: AdamW over the trainable parameters (its learning rate follows schedule.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repolm.config.schema import TrainConfig

if TYPE_CHECKING:
    import torch


def optimizer_for(
    model: torch.nn.Module, lr: float, tc: TrainConfig, fused: bool
) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not norms, biases or 1-d adapter vectors)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    other = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": tc.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=lr, betas=(tc.beta1, tc.beta2), fused=fused
    )
