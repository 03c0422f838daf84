"""The chronological split: fractions, explicit cutoffs, HEAD's line, clear errors."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repolm.config import SplitConfig
from repolm.errors import ConfigError, RepolmError
from repolm.split import commit_order, commits_needed, compute_split

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


def graph(t: pa.Table) -> tuple[list[str], dict[str, list[str]], dict[str, datetime]]:
    """(shas, parents by sha, commit time by sha): what `commit_order` takes."""
    shas = t.column("sha").to_pylist()
    parents = dict(zip(shas, t.column("parents").to_pylist(), strict=True))
    return shas, parents, dict(zip(shas, t.column("commit_time").to_pylist(), strict=True))


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
    strict = {"require_future": True}
    with pytest.raises(RepolmError, match="too few to split.*require_future"):
        compute_split(t, None, SplitConfig(test_fraction=0.4, val_fraction=0.4, **strict))
    with pytest.raises(RepolmError, match="leaves the validation split empty.*split.cutoff"):
        compute_split(t, None, SplitConfig(cutoff="2030-01-01", **strict))
    with pytest.raises(RepolmError, match="leaves the train split empty.*later"):
        compute_split(t, None, SplitConfig(cutoff="2000-01-01"))
    with pytest.raises(ConfigError, match="neither a commit of this history nor an ISO date"):
        compute_split(t, None, SplitConfig(cutoff="yesterday"))


def test_fractions_must_leave_room() -> None:
    with pytest.raises(ValueError, match="must stay below 1"):
        SplitConfig(test_fraction=0.5, val_fraction=0.5)
    with pytest.raises(ValueError, match="cannot both be 0"):
        SplitConfig(test_fraction=0, val_fraction=0)


# -- shared timestamps: the order, not the clock ------------------------------------------------

ONE_TIME = "2021-06-01T12:00:00+00:00"


def test_commits_of_one_time_split_by_the_first_parent_line(git_repo, mine_repo) -> None:
    # a scripted series: every commit has the same author and committer date
    repo = git_repo()
    for i in range(30):
        repo.write(f"f{i % 4}.py", f"x = {i}\n")
        repo.commit(f"step {i}", date=ONE_TIME)
    mined = mine_repo(repo)
    table = pq.read_table(mined.stage_dir / "commits.parquet")
    assert len(set(table.column("commit_time").to_pylist())) == 1
    line = repo.rev_list("--first-parent", "--reverse", "HEAD")
    s = compute_split(table, repo.head, SplitConfig())
    assert (len(s.train), len(s.val), len(s.test)) == (25, 2, 3)
    assert s.test == frozenset(line[27:]) and s.val == frozenset(line[25:27])
    assert s.train == frozenset(line[:25]) and s.cutoff_sha == line[24]
    assert s.has_future and s.val_end_time == s.cutoff_time == datetime.fromisoformat(ONE_TIME)
    # a sha cutoff is a position in that order: the commits after it are the future
    by_sha = compute_split(table, repo.head, SplitConfig(cutoff=line[19]))
    assert by_sha.train == frozenset(line[:20]) and by_sha.cutoff_sha == line[19]
    assert len(by_sha.val) == 4 and by_sha.test == frozenset(line[24:])
    # a date cutoff trains on every commit at or before it: here all of them
    by_date = compute_split(table, repo.head, SplitConfig(cutoff=ONE_TIME))
    assert by_date.train == frozenset(line) and not by_date.has_future


def test_a_merge_of_one_time_never_trains_on_a_descendant_of_the_future(
    git_repo, mine_repo
) -> None:
    repo = git_repo()
    sha: dict[str, str] = {}

    def commit(name: str, path: str) -> None:
        repo.write(path, f"{name.replace(' ', '_')} = 1\n")
        sha[name] = repo.commit(name, date=ONE_TIME)

    for i in range(3):
        commit(f"main {i}", "a.py")
    repo.git("checkout", "-q", "-b", "side")
    for i in range(4):
        commit(f"side {i}", "b.py")
    repo.git("checkout", "-q", "main")
    for i in range(3, 6):
        commit(f"main {i}", "a.py")
    repo.git(
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "merge side",
        "side",
        env={"GIT_AUTHOR_DATE": ONE_TIME, "GIT_COMMITTER_DATE": ONE_TIME},
    )
    sha["merge"] = repo.head
    for i in range(6, 9):
        commit(f"main {i}", "a.py")
    table = pq.read_table(mine_repo(repo).stage_dir / "commits.parquet")
    assert table.num_rows == 14
    # ties by HEAD's line: a side branch comes just before the merge that brings it in
    names = [
        *(f"main {i}" for i in range(6)),
        *(f"side {i}" for i in range(4)),
        "merge",
        *(f"main {i}" for i in range(6, 9)),
    ]
    assert commit_order(*graph(table), repo.head) == [sha[n] for n in names]
    for test, val in ((0.1, 0.05), (0.3, 0.2), (0.5, 0.3), (0.2, 0.1)):
        s = compute_split(table, repo.head, SplitConfig(test_fraction=test, val_fraction=val))
        held = s.val | s.test
        assert held and len(s.train) + len(held) == 14
        for c in s.train:
            assert not set(repo.rev_list(c)) & held, "a training commit descends from the future"
        for c in s.val:
            assert not set(repo.rev_list(c)) & s.test
    # 0.2 / 0.1: the cutoff falls inside the side branch; the snapshot is main's last commit
    assert s.train == {sha[n] for n in names[:9]} and s.val == {sha["side 3"], sha["merge"]}
    assert s.cutoff_sha == sha["main 5"]


def test_parents_come_first_whatever_the_clock() -> None:
    # each commit dated an hour before its parent (a skewed clock): order follows the graph
    t = history(10)
    shas = t.column("sha").to_pylist()
    t = t.set_column(
        2,
        "commit_time",
        pa.array([T0 - timedelta(hours=i) for i in range(10)], pa.timestamp("us", tz="UTC")),
    )
    s = compute_split(t, shas[-1], SplitConfig())
    assert s.test == frozenset(shas[9:]) and s.val == frozenset(shas[8:9])
    assert s.cutoff_sha == shas[7]
    assert commit_order(*graph(t), None) == shas


# -- too young to hold out a future -------------------------------------------------------------


def test_too_few_commits_train_on_all_of_them() -> None:
    t = history(2)
    shas = t.column("sha").to_pylist()
    s = compute_split(t, shas[-1], SplitConfig())
    assert not s.has_future and s.train == frozenset(shas) and not s.val and not s.test
    assert s.cutoff_sha == shas[-1] and s.needed == 3
    assert s.no_future == (
        "2 commits are too few to hold out a future (at least 3 are needed "
        "for 10% test and 5% validation)"
    )
    assert "training on every commit" in s.warning() and "require_future" in s.warning()
    assert s.summary()["future"] is False and s.summary()["commits_needed"] == 3
    assert s.summary()["commits"] == {"train": 2, "val": 0, "test": 0}
    assert compute_split(history(3), None, SplitConfig()).has_future  # 1 / 1 / 1
    with pytest.raises(RepolmError, match="2 commits are too few to split"):
        compute_split(t, None, SplitConfig(require_future=True))
    # a cutoff that leaves no future trains on everything too, the snapshot at HEAD
    late = compute_split(history(6), None, SplitConfig(cutoff="2030-01-01"))
    assert not late.has_future and len(late.train) == 6 and late.needed is None
    assert late.no_future.startswith("the cutoff 2030-01-01 leaves the validation split empty")


@pytest.mark.parametrize(
    "test,val", [(0.1, 0.05), (0.12, 0.08), (0.5, 0.3), (0.0, 0.2), (0.25, 0.25)]
)
def test_commits_needed_is_the_fewest_that_split(test: float, val: float) -> None:
    cfg = SplitConfig(test_fraction=test, val_fraction=val)
    n = commits_needed(cfg)
    assert compute_split(history(n), None, cfg).has_future
    assert not compute_split(history(n - 1), None, cfg).has_future if n > 1 else True


def test_a_zero_fraction_leaves_its_part_empty() -> None:
    s = compute_split(history(10), None, SplitConfig(val_fraction=0.0))
    assert s.has_future and not s.val and len(s.test) == 1 and s.val_end_time is None
