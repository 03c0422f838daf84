"""The chronological split: fractions, explicit cutoffs, HEAD's line, clear errors."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from repolm.config import SplitConfig
from repolm.errors import ConfigError, RepolmError
from repolm.split import compute_split

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def history(n: int, side: dict[int, int] | None = None) -> pa.Table:
    """A first-parent line c0..c{n-1}, one hour apart; `side` adds commit s{i} at hour h
    branching off the line (not on HEAD's first-parent line)."""
    shas = [hashlib.sha1(str(i).encode()).hexdigest() for i in range(n)]
    parents = [[]] + [[shas[i - 1]] for i in range(1, n)]
    times = [T0 + timedelta(hours=i) for i in range(n)]
    for i, hour in (side or {}).items():
        shas.append(hashlib.sha1(f"side{i}".encode()).hexdigest())
        parents.append([shas[0]])
        times.append(T0 + timedelta(hours=hour, minutes=30))
    return pa.table({"sha": shas, "parents": parents, "commit_time": times})


def test_default_fractions_take_the_newest_commits() -> None:
    t = history(20)
    shas = t.column("sha").to_pylist()
    s = compute_split(t, shas[-1], SplitConfig())
    assert len(s.test) == 2 and len(s.val) == 1 and len(s.train) == 17
    assert s.test == frozenset(shas[18:]) and s.val == frozenset(shas[17:18])
    assert s.cutoff_sha == shas[16]
    assert s.cutoff_time == T0 + timedelta(hours=16)
    assert s.part(shas[0]) == "train" and s.part(shas[19]) == "test"
    assert s.summary()["commits"] == {"train": 17, "val": 1, "test": 2}


def test_cutoff_commit_is_on_heads_line() -> None:
    # A side commit at 16:30 is the newest train commit by time, but not on HEAD's line.
    t = history(20, side={1: 16})
    shas = t.column("sha").to_pylist()
    s = compute_split(t, shas[19], SplitConfig(test_fraction=0.1, val_fraction=0.05))
    assert shas[20] in s.train or shas[20] in s.val
    assert s.cutoff_sha in shas[:20]


def test_explicit_cutoff_by_date_and_by_sha() -> None:
    t = history(10)
    shas = t.column("sha").to_pylist()
    by_date = compute_split(t, shas[-1], SplitConfig(cutoff="2024-01-01T05:10:00+00:00"))
    assert by_date.cutoff_sha == shas[5] and len(by_date.train) == 6
    assert len(by_date.val) + len(by_date.test) == 4 and len(by_date.val) >= 1
    by_sha = compute_split(t, shas[-1], SplitConfig(cutoff=shas[4][:8]))
    assert by_sha.cutoff_sha == shas[4]


def test_errors_say_what_to_do() -> None:
    t = history(3)
    with pytest.raises(RepolmError, match="too few to split"):
        compute_split(t, None, SplitConfig(test_fraction=0.5, val_fraction=0.5))
    with pytest.raises(RepolmError, match="leaves the validation split empty.*split.cutoff"):
        compute_split(t, None, SplitConfig(cutoff="2030-01-01"))
    with pytest.raises(ConfigError, match="neither a commit of this history nor an ISO date"):
        compute_split(t, None, SplitConfig(cutoff="yesterday"))
