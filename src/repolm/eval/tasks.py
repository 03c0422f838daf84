"""What the three evaluations on the repository's future share: their inputs (one split of an
evaluation set written by the build stage, optionally an even sample of it) and the shape of
their results.

The evaluations themselves: `completion.evaluate_completion` (code completion of functions
added or modified after the cutoff), `next_change.evaluate_next_change` (which files a commit
touches, given its message) and `messages.evaluate_commit_messages` (a commit's message from
its diff). Each takes `(lm, eval_dir, run_dir, split, limit, ...)`: `eval_dir` is
`OUT/dataset/eval/`, `run_dir` is `OUT` (its `filter/` tables are the history before the
cutoff that the baselines draw on), and `lm` None computes the baselines only. Each returns

    {"split", "n", "metrics" (the model's; absent without a model),
     "baselines": {name: the same metric keys}, "samples" (up to 5), "seconds"}
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from repolm.dataset.evalsets import FUTURE
from repolm.errors import RepolmError
from repolm.eval.metrics import mean

T = TypeVar("T")
SAMPLES = 5  # examples shown in a result
SAMPLE_CHARS = 600  # each text of an example, at most


def read_eval_set(eval_dir: Path, name: str, split: str, limit: int | None) -> list[dict[str, Any]]:
    """The rows of `OUT/dataset/eval/NAME.parquet` in `split` (val or test), in the file's
    (chronological) order; with `limit`, that many spread evenly over them."""
    import pyarrow.parquet as pq

    if split not in FUTURE:
        raise ValueError(f"split must be one of {FUTURE}, got {split!r}")
    path = eval_dir / f"{name}.parquet"
    if not path.exists():
        raise RepolmError(f"missing {path}", "run the build stage first (repolm run)")
    rows = pq.read_table(path, filters=[("split", "=", split)]).to_pylist()
    return spread(rows, limit)


def spread(items: Sequence[T], limit: int | None) -> list[T]:
    """`limit` items at even steps over `items`, in order (all of them without a limit): a
    sample that covers the whole future, not just its first weeks."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        return []
    return [items[i * len(items) // limit] for i in range(limit)]


def averages(scores: Iterable[Mapping[str, float]], keys: Sequence[str]) -> dict[str, Any]:
    """Each key's mean over the items' scores (None without items), rounded for reports."""
    items = list(scores)
    out: dict[str, Any] = {}
    for key in keys:
        m = mean(float(s[key]) for s in items)
        out[key] = None if m is None else round(m, 4)
    return out


def clip(text: str, n: int = SAMPLE_CHARS) -> str:
    """A text for a sample, cut to `n` characters."""
    return text if len(text) <= n else text[:n] + "…"


def task_result(
    split: str,
    n: int,
    metrics: dict[str, Any] | None,
    baselines: dict[str, dict[str, Any]],
    samples: list[dict[str, Any]],
    started: float,
    **extra: Any,
) -> dict[str, Any]:
    """The result of one evaluation (`metrics` None: no model was given, the key is left out)."""
    out: dict[str, Any] = {"split": split, "n": n}
    if metrics is not None:
        out["metrics"] = metrics
    out["baselines"] = baselines
    out.update(extra)
    out["samples"] = samples[:SAMPLES]
    out["seconds"] = round(time.monotonic() - started, 2)
    return out
