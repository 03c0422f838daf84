"""Readers of the filter stage's outputs, for the stages after it."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from repolm.formats.special import CHANGE_TYPES


def change_types(filter_dir: Path) -> dict[tuple[str, str], list[str]]:
    """(sha, path) -> the change types of its labelled units, in CHANGE_TYPES order."""
    t = pq.read_table(
        filter_dir / "chunks.parquet",
        columns=["sha", "path", "change_type"],
        filters=[("source", "=", "change")],
    )
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for sha, path, ct in zip(*(t.column(n).to_pylist() for n in t.column_names), strict=True):
        if ct:
            found[(sha, path)].add(ct)
    order = {t: i for i, t in enumerate(CHANGE_TYPES)}
    return {k: sorted(v, key=order.__getitem__) for k, v in found.items()}
