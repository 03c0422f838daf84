"""The chronological split: training sees the repository up to a cutoff, evaluation its future.

Commits are put in one order: by commit time, parents always before their children, commits
of equal time by HEAD's first-parent line (a rebased or scripted series shares one committer
date). The fractions are shares of commits in that order: by default the last 10% are the test
set and the 5% before them the validation set, so no training commit comes after a held-out one
(nor descends from one). `split.cutoff` (an ISO date or a commit sha) moves the cutoff instead.
The *cutoff commit* is the newest training commit of HEAD's first-parent line: its tree is the
snapshot training may see. Every stage from chunk on uses this one split.

A history too short to hold out a future (or whose future is filtered away: see the build
stage) trains on every commit, with the snapshot at HEAD, unless `split.require_future`.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from repolm.config.schema import SplitConfig
from repolm.errors import ConfigError, RepolmError
from repolm.layout import RunLayout


@dataclass(frozen=True)
class Split:
    cutoff_sha: str  # the snapshot training sees
    cutoff_time: datetime  # its commit time (shown; membership is by the order, not by time)
    val_end_time: datetime | None  # the last validation commit's time (shown); None without one
    train: frozenset[str]
    val: frozenset[str]
    test: frozenset[str]
    no_future: str = ""  # why nothing is held out, when nothing is
    needed: int | None = None  # commits the fractions need to hold out a future, when known

    @property
    def has_future(self) -> bool:
        return bool(self.val or self.test)

    def part(self, sha: str) -> str:
        return "train" if sha in self.train else "val" if sha in self.val else "test"

    def without_future(self, reason: str, needed: int | None = None) -> Split:
        """This split with every commit in training (the same snapshot)."""
        return dataclasses.replace(
            self,
            train=self.train | self.val | self.test,
            val=frozenset(),
            test=frozenset(),
            val_end_time=None,
            no_future=reason,
            needed=needed,
        )

    def warning(self) -> str:
        """The one warning a run without a future gives."""
        return (
            f"{self.no_future}: training on every commit instead; the evaluations on the "
            "future are skipped (split.require_future=true makes this an error)"
        )

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {
            "cutoff_sha": self.cutoff_sha,
            "cutoff_time": self.cutoff_time.isoformat(),
            "val_end_time": self.val_end_time.isoformat() if self.val_end_time else None,
            "commits": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "future": self.has_future,
        }
        if self.no_future:
            out["no_future"] = self.no_future
            out["commits_needed"] = self.needed
        return out


def run_split(out: Path, head: str | None, cfg: SplitConfig) -> Split:
    """The split of a run directory, from the mine stage's commits."""
    commits = pq.read_table(RunLayout(out).mined_commits, columns=["sha", "parents", "commit_time"])
    return compute_split(commits, head, cfg)


def compute_split(commits: pa.Table, head: str | None, cfg: SplitConfig) -> Split:
    """Split `commits` (mine's commits.parquet) in commit order; `head` picks the cutoff's
    line and breaks ties of time."""
    shas = commits.column("sha").to_pylist()
    if not shas:
        raise RepolmError("no commits to split", "run the mine stage on a repository with history")
    time_of = dict(zip(shas, map(_utc, commits.column("commit_time").to_pylist()), strict=True))
    parents = dict(zip(shas, commits.column("parents").to_pylist(), strict=True))
    order = commit_order(shas, parents, time_of, head)
    n, t, v = len(order), cfg.test_fraction, cfg.val_fraction
    if cfg.cutoff:
        n_train = _cutoff_position(cfg.cutoff, order, time_of)
        n_val = _share(n - n_train, v / (v + t))
    else:
        n_test, n_val = _share(n, t), _share(n, v)
        n_train = max(n - n_test - n_val, 0)
    train, val, test = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    if not train and cfg.cutoff:
        raise RepolmError(
            f"the cutoff {cfg.cutoff} leaves the train split empty (0 train commits)",
            "set split.cutoff to a later date or sha",
        )
    short = _shortfall(cfg, n, len(train), len(val), len(test))
    if short and cfg.require_future:
        raise RepolmError(
            short.error, short.hint + ", or unset split.require_future to train on every commit"
        )
    if short:
        train, val, test = order, [], []
    cutoff = _cutoff_commit(head, parents, frozenset(train), train[-1])
    split = Split(
        cutoff,
        time_of[cutoff],
        time_of[val[-1]] if val else None,
        frozenset(train),
        frozenset(val),
        frozenset(test),
    )
    return split.without_future(short.reason, short.needed) if short else split


def commit_order(
    shas: list[str], parents: dict[str, list[str]], time_of: dict[str, datetime], head: str | None
) -> list[str]:
    """Every commit once, parents before children, otherwise by commit time; commits of equal
    time by the first commit of HEAD's first-parent line that contains them, then as given
    (mine's order, parents first)."""
    index = {s: i for i, s in enumerate(shas)}
    rank = _line_rank(parents, head)
    children: dict[str, list[str]] = defaultdict(list)
    waiting = {}
    for s in shas:
        present = [p for p in dict.fromkeys(parents[s]) if p in index]
        waiting[s] = len(present)
        for p in present:
            children[p].append(s)

    def key(s: str) -> tuple[datetime, int, int]:
        return time_of[s], rank.get(s, len(rank)), index[s]

    ready = [key(s) for s in shas if not waiting[s]]
    heapq.heapify(ready)
    order = []
    while ready:
        s = shas[heapq.heappop(ready)[2]]
        order.append(s)
        for c in children[s]:
            waiting[c] -= 1
            if not waiting[c]:
                heapq.heappush(ready, key(c))
    return order


def _line_rank(parents: dict[str, list[str]], head: str | None) -> dict[str, int]:
    """For each commit HEAD reaches: the position (root first) of the first commit of HEAD's
    first-parent line that contains it, i.e. the line commit itself or the merge bringing it in."""
    line = []
    sha = head
    while sha is not None and sha in parents:
        line.append(sha)
        sha = parents[sha][0] if parents[sha] else None
    rank: dict[str, int] = {}
    for pos, tip in enumerate(reversed(line)):
        stack = [tip]
        while stack:
            s = stack.pop()
            if s in rank or s not in parents:
                continue
            rank[s] = pos
            stack.extend(parents[s])
    return rank


def commits_needed(cfg: SplitConfig) -> int:
    """The fewest commits that the fractions split with a commit in each part (one whose
    fraction is 0 stays empty)."""
    n = 1
    while n - _share(n, cfg.test_fraction) - _share(n, cfg.val_fraction) < 1:
        n += 1
    return n


def _share(n: int, fraction: float) -> int:
    # ceil, without float noise turning 7.000000000000001 into 8
    return math.ceil(round(n * fraction, 9))


class _Shortfall(NamedTuple):
    reason: str  # for the warning
    error: str  # under split.require_future
    hint: str
    needed: int | None  # commits the fractions need, when that is what is short


def _shortfall(
    cfg: SplitConfig, n: int, n_train: int, n_val: int, n_test: int
) -> _Shortfall | None:
    """What is short when a part that should hold commits holds none; None when the split
    is whole."""
    if not cfg.cutoff and n_train < 1:
        needed = commits_needed(cfg)
        what = " and ".join(
            f"{f:.0%} {name}"
            for name, f in (("test", cfg.test_fraction), ("validation", cfg.val_fraction))
            if f > 0
        )
        return _Shortfall(
            f"{n} commit{'s are' if n > 1 else ' is'} too few to hold out a future (at least "
            f"{needed} are needed for {what})",
            f"{n} commits are too few to split {cfg.test_fraction:.0%} test and "
            f"{cfg.val_fraction:.0%} validation with any training left",
            "lower split.test_fraction / split.val_fraction or set split.cutoff",
            needed,
        )
    for name, count, fraction in (
        ("validation", n_val, cfg.val_fraction),
        ("test", n_test, cfg.test_fraction),
    ):
        if fraction > 0 and not count:
            text = (
                f"the cutoff {cfg.cutoff} leaves the {name} split empty ({n_train} train, "
                f"{n_val} validation, {n_test} test commits)"
            )
            hint = (
                "set split.cutoff to an earlier date or sha, or change split.test_fraction "
                "/ split.val_fraction"
            )
            return _Shortfall(text, text, hint, None)
    return None


def _cutoff_position(value: str, order: list[str], time_of: dict[str, datetime]) -> int:
    """How many commits of `order` the cutoff puts in training: up to and including a sha;
    for a date, up to the last commit at or before it (so every such commit trains)."""
    matches = [s for s in order if s.startswith(value.lower())] if len(value) >= 4 else []
    if len(matches) == 1:
        return order.index(matches[0]) + 1
    if len(matches) > 1:
        raise ConfigError(
            f"split.cutoff '{value}' matches {len(matches)} commits",
            "give more characters of the sha",
        )
    try:
        when = _utc(datetime.fromisoformat(value))
    except ValueError:
        raise ConfigError(
            f"split.cutoff '{value}' is neither a commit of this history nor an ISO date",
            "write a date such as 2024-06-30 or a commit sha",
        ) from None
    return max((k + 1 for k, s in enumerate(order) if time_of[s] <= when), default=0)


def _cutoff_commit(
    head: str | None, parents: dict[str, list[str]], train: frozenset[str], last: str
) -> str:
    """The newest commit of HEAD's first-parent line that is in train; else the last training
    commit in the order (HEAD's line may start after the cutoff, e.g. a young orphan branch)."""
    sha = head
    while sha is not None and sha in parents:
        if sha in train:
            return sha
        ps = parents[sha]
        sha = ps[0] if ps else None
    return last


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
