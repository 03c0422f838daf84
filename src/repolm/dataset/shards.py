"""The build stage's Parquet outputs: packed sequences of a split as shards, and instruction
pairs as prompt/completion text per split."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from repolm.dataset.corpus import Encoder
from repolm.mine.tables import rows_table

SPLITS = ("train", "val", "test")

SEQUENCE_SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("position_ids", pa.list_(pa.int32())),
        ("doc_lengths", pa.list_(pa.int32())),
        ("kind", pa.list_(pa.string())),
        ("sha", pa.list_(pa.string())),
        ("time", pa.list_(pa.timestamp("ms", tz="UTC"))),
        ("text", pa.string()),
    ]
)
INSTRUCTION_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("sha", pa.string()),
        ("time", pa.timestamp("ms", tz="UTC")),
        ("prompt", pa.string()),
        ("completion", pa.string()),
    ]
)


class ShardWriter:
    """Sequences of one split into `DIR/shard-NNNNN.parquet`, `per_shard` at a time."""

    def __init__(self, out: Path, enc: Encoder, per_shard: int) -> None:
        self.out, self.enc, self.per_shard = out, enc, per_shard
        self.rows: list[dict[str, Any]] = []
        self.sequences = 0
        self.tokens: Counter[str] = Counter()
        self.docs: Counter[str] = Counter()
        self.shards: list[str] = []

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self._write()

    def add(self, seq: dict[str, Any]) -> None:
        self.rows.append(seq)
        self.sequences += 1
        for (kind, _, _), n in zip(seq["meta"], seq["doc_lengths"], strict=True):
            self.tokens[kind] += n
            self.docs[kind] += 1
        if len(self.rows) >= self.per_shard:
            self._write()

    def _write(self) -> None:
        if not self.rows:
            return
        rows, self.rows = self.rows, []
        used = [r["input_ids"][: sum(r["doc_lengths"])] for r in rows]

        def lists(key: str) -> pa.Array:
            flat = np.concatenate([r[key] for r in rows])
            offsets = np.arange(0, len(flat) + 1, len(rows[0][key]), dtype=np.int32)
            return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))

        table = pa.table(
            {
                "input_ids": lists("input_ids"),
                "labels": lists("labels"),
                "position_ids": lists("position_ids"),
                "doc_lengths": pa.array([r["doc_lengths"] for r in rows], pa.list_(pa.int32())),
                "kind": pa.array([[m[0] for m in r["meta"]] for r in rows], pa.list_(pa.string())),
                "sha": pa.array([[m[1] for m in r["meta"]] for r in rows], pa.list_(pa.string())),
                "time": pa.array(
                    [[m[2] for m in r["meta"]] for r in rows],
                    pa.list_(pa.timestamp("ms", tz="UTC")),
                ),
                "text": pa.array(self.enc.decode(used), pa.string()),
            },
            schema=SEQUENCE_SCHEMA,
        )
        name = f"shard-{len(self.shards):05d}.parquet"
        pq.write_table(table, self.out / name, compression="zstd")
        self.shards.append(name)


class InstructionWriter:
    """Instruction pairs as prompt/completion text per split (`instructions/SPLIT.parquet`),
    the format TRL's SFT trainer reads."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.rows: dict[str, list[tuple[Any, ...]]] = {p: [] for p in SPLITS}
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.count: Counter[str] = Counter()

    def __enter__(self) -> InstructionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        for part in SPLITS:
            self._write(part, final=True)
        for w in self.writers.values():
            w.close()

    def add(
        self,
        part: str,
        kind: str,
        sha: str | None,
        when: datetime | None,
        prompt: str,
        completion: str,
    ) -> None:
        self.rows[part].append((kind, sha, when, prompt, completion))
        self.count[f"{part}/{kind}"] += 1
        if len(self.rows[part]) >= 2048:
            self._write(part)

    def _write(self, part: str, final: bool = False) -> None:
        rows = self.rows[part]
        if not rows and not (final and part not in self.writers):
            return
        self.rows[part] = []
        table = rows_table(rows, INSTRUCTION_SCHEMA)
        if part not in self.writers:
            path = self.out / f"{part}.parquet"
            self.writers[part] = pq.ParquetWriter(path, INSTRUCTION_SCHEMA, compression="zstd")
        self.writers[part].write_table(table)
