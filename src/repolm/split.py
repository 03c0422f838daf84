"""The chronological split: training sees the repository up to a cutoff, evaluation its future.

Commits are ordered by commit time. By default the newest 10% are the test set and the 5% before
them the validation set; `split.cutoff` (an ISO date or a commit sha) moves the cutoff instead.
The *cutoff commit* is the newest commit of HEAD's first-parent line at or before the cutoff
time: its tree is the snapshot training may see. Every stage from chunk on uses this one split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from repolm.config.schema import SplitConfig
from repolm.errors import ConfigError, RepolmError


@dataclass(frozen=True)
class Split:
    cutoff_sha: str  # the snapshot training sees
    cutoff_time: datetime  # commits at or before it are train
    val_end_time: datetime  # commits after cutoff_time and at or before this are validation
    train: frozenset[str]
    val: frozenset[str]
    test: frozenset[str]

    def part(self, sha: str) -> str:
        return "train" if sha in self.train else "val" if sha in self.val else "test"

    def summary(self) -> dict[str, object]:
        return {
            "cutoff_sha": self.cutoff_sha,
            "cutoff_time": self.cutoff_time.isoformat(),
            "val_end_time": self.val_end_time.isoformat(),
            "commits": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
        }


def run_split(out: Path, head: str | None, cfg: SplitConfig) -> Split:
    """The split of a run directory, from the mine stage's commits."""
    commits = pq.read_table(out / "mine" / "commits.parquet",
                            columns=["sha", "parents", "commit_time"])  # fmt: skip
    return compute_split(commits, head, cfg)


def compute_split(commits: pa.Table, head: str | None, cfg: SplitConfig) -> Split:
    """Split `commits` (mine's commits.parquet) by time; `head` picks the cutoff's line."""
    shas = commits.column("sha").to_pylist()
    times = [_utc(t) for t in commits.column("commit_time").to_pylist()]
    parents = dict(zip(shas, commits.column("parents").to_pylist(), strict=True))
    if not shas:
        raise RepolmError("no commits to split", "run the mine stage on a repository with history")
    ordered = sorted(range(len(shas)), key=lambda i: (times[i], i))
    n = len(shas)
    time_of = dict(zip(shas, times, strict=True))

    if cfg.cutoff:
        cutoff_time = _cutoff_time(cfg.cutoff, time_of)
        later = [i for i in ordered if times[i] > cutoff_time]
        n_val = math.ceil(len(later) * cfg.val_fraction / (cfg.val_fraction + cfg.test_fraction))
        val_end = times[later[n_val - 1]] if n_val else cutoff_time
    else:
        n_test = math.ceil(n * cfg.test_fraction)
        n_val = math.ceil(n * cfg.val_fraction)
        n_train = n - n_test - n_val
        if n_train < 1:
            raise RepolmError(
                f"{n} commits are too few to split {cfg.test_fraction:.0%} test and "
                f"{cfg.val_fraction:.0%} validation with any training left",
                "lower split.test_fraction / split.val_fraction or set split.cutoff",
            )
        cutoff_time = times[ordered[n_train - 1]]
        val_end = times[ordered[n_train + n_val - 1]] if n_val else cutoff_time

    train = frozenset(s for s in shas if time_of[s] <= cutoff_time)
    val = frozenset(s for s in shas if cutoff_time < time_of[s] <= val_end)
    test = frozenset(s for s in shas if time_of[s] > val_end)
    for name, part in (("train", train), ("validation", val), ("test", test)):
        if not part:
            raise RepolmError(
                f"the cutoff {cutoff_time.isoformat()} leaves the {name} split empty "
                f"({len(train)} train, {len(val)} validation, {len(test)} test commits)",
                "set split.cutoff to an earlier date or sha, or change split.test_fraction / "
                "split.val_fraction",
            )
    return Split(
        _cutoff_commit(head, parents, time_of, cutoff_time, train),
        cutoff_time,
        val_end,
        train,
        val,
        test,
    )


def _cutoff_time(value: str, time_of: dict[str, datetime]) -> datetime:
    matches = [s for s in time_of if s.startswith(value.lower())] if len(value) >= 4 else []
    if len(matches) == 1:
        return time_of[matches[0]]
    if len(matches) > 1:
        raise ConfigError(
            f"split.cutoff '{value}' matches {len(matches)} commits",
            "give more characters of the sha",
        )
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"split.cutoff '{value}' is neither a commit of this history nor an ISO date",
            "write a date such as 2024-06-30 or a commit sha",
        ) from None
    return _utc(when)


def _cutoff_commit(
    head: str | None,
    parents: dict[str, list[str]],
    time_of: dict[str, datetime],
    cutoff_time: datetime,
    train: frozenset[str],
) -> str:
    """The newest commit of HEAD's first-parent line that is in train; else the newest train
    commit (HEAD's line may start after the cutoff, e.g. a young orphan branch)."""
    sha = head
    while sha is not None and sha in parents:
        if time_of[sha] <= cutoff_time:
            return sha
        ps = parents[sha]
        sha = ps[0] if ps else None
    return max(train, key=lambda s: (time_of[s], s))


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
