"""The build stage's packed sequences, and the order training reads them in.

The order is a pure function of (seed, epoch, step), so a resumed run reads exactly the
batches an uninterrupted one would: the data position in a checkpoint is just the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repolm.errors import RepolmError

COLUMNS = ("input_ids", "labels", "position_ids")


@dataclass
class PackedData:
    """One split's sequences as [N, seq_len] int32 arrays (4 bytes a token each)."""

    input_ids: np.ndarray
    labels: np.ndarray
    position_ids: np.ndarray

    @classmethod
    def read(cls, split_dir: Path) -> PackedData:
        import pyarrow.parquet as pq

        shards = sorted(split_dir.glob("shard-*.parquet"))
        if not shards:
            raise RepolmError(f"no sequences in {split_dir}", "run the build stage first")
        parts: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
        width = None
        for shard in shards:
            table = pq.read_table(shard, columns=list(COLUMNS))
            for c in COLUMNS:
                col = table.column(c).combine_chunks()
                flat = col.flatten().to_numpy(zero_copy_only=False)
                rows = len(col)
                width = width or (len(flat) // max(rows, 1))
                parts[c].append(flat.astype(np.int32, copy=False).reshape(rows, width))
        return cls(*(np.concatenate(parts[c]) for c in COLUMNS))

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    def batch(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "input_ids": self.input_ids[index],
            "labels": self.labels[index],
            "position_ids": self.position_ids[index],
        }


@dataclass(frozen=True)
class Schedule:
    """Which sequences each process reads at each optimizer step.

    One step reads `micro_batch × grad_accum × world` sequences: every process `grad_accum`
    micro-batches of `micro_batch`. An epoch is a seeded permutation of all sequences; its last
    step is topped up from the start of the permutation so every step is full.
    """

    sequences: int
    micro_batch: int
    grad_accum: int
    world: int
    seed: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.world

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.sequences / self.global_batch))

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.sequences)

    def micro_batches(self, step: int, rank: int) -> list[np.ndarray]:
        """The `grad_accum` index arrays of process `rank` at global step `step` (0-based)."""
        epoch, within = divmod(step, self.steps_per_epoch)
        perm = self.permutation(epoch)
        start = within * self.global_batch
        take = np.arange(start, start + self.global_batch) % self.sequences
        mine = perm[take].reshape(self.grad_accum, self.world, self.micro_batch)[:, rank]
        return list(mine)


def unigram_loss(train: PackedData, val: PackedData, vocab_size: int) -> float:
    """Validation cross-entropy (nats per token) of a unigram model of the training labels,
    add-one smoothed: the floor a model must beat to have learned anything about context."""
    tr = train.labels[:, 1:]
    counts = np.bincount(tr[tr != -100], minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    va = val.labels[:, 1:]
    targets = va[va != -100]
    return float(-logp[targets].mean()) if len(targets) else float("nan")
