"""Incremental mining: a second run on the same stage reads only what is new, forgets what was
rewritten away, re-reads what was read incompletely, and recomputes ref columns every time."""

from __future__ import annotations

from conftest import GitRepo, blob_sha, check_history

REF_COLUMNS = ("refs", "branches")


def without(row: dict, *cols: str) -> dict:
    return {k: v for k, v in row.items() if k not in cols}


def history(repo: GitRepo, n: int, start: int = 0) -> list[str]:
    shas = []
    for i in range(start, start + n):
        repo.write("a.txt", "".join(f"line {j}\n" for j in range(i + 1)))
        repo.write(f"f{i}.txt", f"file {i}\n")
        shas.append(repo.commit(f"commit {i}"))
    return shas


def test_second_run_reads_only_new_commits(git_repo, mine_repo):
    repo = git_repo()
    old = history(repo, 5)
    first = mine_repo(repo)
    assert first.stats["new_commits"] == 5 and first.stats["kept_commits"] == 0
    new = history(repo, 3, start=5)
    second = mine_repo(repo)
    check_history(repo, second)
    st = second.stats
    assert (st["commits"], st["new_commits"], st["kept_commits"]) == (8, 3, 5)
    assert (st["dropped_commits"], st["retried_commits"]) == (0, 0)
    assert st["new_file_changes"] == 6 and st["file_changes"] == len(second.changes) == 16
    assert second.shas == old + new
    # Old rows are kept as they were; only the ref columns move with the refs.
    for sha in old:
        assert without(second.commit(sha), *REF_COLUMNS) == without(first.commit(sha), *REF_COLUMNS)
        assert second.changes_of(sha) == first.changes_of(sha)
    assert first.commit(old[-1])["refs"] == ["refs/heads/main"]
    assert second.commit(old[-1])["refs"] == []
    assert second.commit(new[-1])["refs"] == ["refs/heads/main"]
    assert all(c["branches"] == ["refs/heads/main"] for c in second.commits)
    keys = [(r["sha"], r["path"]) for r in second.changes]
    assert len(keys) == len(set(keys))


def test_run_without_changes_keeps_everything(git_repo, mine_repo):
    repo = git_repo()
    history(repo, 4)
    first = mine_repo(repo)
    again = mine_repo(repo)
    assert again.stats["new_commits"] == 0 and again.stats["kept_commits"] == 4
    assert again.stats["new_file_changes"] == 0
    assert again.commits == first.commits
    assert sorted(again.changes, key=lambda r: (r["sha"], r["path"])) == sorted(
        first.changes, key=lambda r: (r["sha"], r["path"])
    )


def test_new_commits_on_a_new_branch_and_a_merge(git_repo, mine_repo):
    repo = git_repo()
    base = history(repo, 3)
    mine_repo(repo)
    repo.git("checkout", "-q", "-b", "topic", base[0])
    repo.write("topic.txt", "topic\n")
    topic = repo.commit("topic work")
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-edit", "topic")
    merge = repo.head
    res = mine_repo(repo)
    check_history(repo, res)
    assert res.stats["new_commits"] == 2 and res.stats["kept_commits"] == 3
    assert res.shas.index(topic) < res.shas.index(merge)
    assert res.commit(topic)["branches"] == ["refs/heads/topic"]
    assert res.commit(base[0])["branches"] == ["refs/heads/main", "refs/heads/topic"]
    assert [r["path"] for r in res.changes_of(merge)] == ["topic.txt"]


def test_force_push_drops_rewritten_commits(git_repo, mine_repo, repolm_log):
    repo = git_repo()
    shas = history(repo, 6)
    first = mine_repo(repo)
    assert len(first.commits) == 6
    # amend the tip, then throw away two more commits and build on the result
    repo.git("commit", "-q", "--amend", "-m", "amended tip")
    amended = repo.head
    repo.git("reset", "-q", "--hard", shas[2])
    repo.write("new.txt", "new history\n")
    rewritten = repo.commit("rewritten")
    res = mine_repo(repo)
    check_history(repo, res)
    assert amended not in res.by_sha  # no ref holds it any more
    assert res.shas == shas[:3] + [rewritten]
    st = res.stats
    assert (st["dropped_commits"], st["new_commits"], st["kept_commits"]) == (3, 1, 3)
    gone = set(shas[3:])
    assert not gone & {r["sha"] for r in res.changes}
    assert [r["path"] for r in res.changes_of(rewritten)] == ["new.txt"]
    assert res.commit(rewritten)["refs"] == ["refs/heads/main"]
    assert any("rewritten" in r.getMessage() for r in repolm_log.records)


def test_amend_only(git_repo, mine_repo):
    repo = git_repo()
    shas = history(repo, 3)
    mine_repo(repo)
    repo.write("a.txt", "amended content\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "--amend", "-m", "amended")
    amended = repo.head
    res = mine_repo(repo)
    check_history(repo, res)
    assert res.shas == shas[:2] + [amended]
    assert (res.stats["dropped_commits"], res.stats["new_commits"]) == (1, 1)
    assert res.commit(amended)["message"] == "amended"
    assert res.change(amended, "a.txt")["new_blob"] == blob_sha("amended content\n")


def test_deleted_branch_drops_its_commits(git_repo, mine_repo):
    repo = git_repo()
    base = history(repo, 2)
    repo.git("checkout", "-q", "-b", "doomed")
    doomed = history(repo, 2, start=10)
    repo.git("checkout", "-q", "main")
    assert len(mine_repo(repo).commits) == 4
    repo.git("branch", "-q", "-D", "doomed")
    res = mine_repo(repo)
    check_history(repo, res)
    assert res.shas == base
    assert res.stats["dropped_commits"] == 2 and res.stats["new_commits"] == 0
    assert not set(doomed) & {r["sha"] for r in res.changes}


def test_changed_row_settings_mine_everything_again(git_repo, mine_repo):
    repo = git_repo()
    repo.write("long.txt", "".join(f"line {i} of a long file\n" for i in range(100)))
    history(repo, 3)
    first = mine_repo(repo)
    assert first.stats["truncated_patches"] == 0
    capped = mine_repo(repo, max_patch_bytes=300)
    assert capped.stats["new_commits"] == 3 and capped.stats["kept_commits"] == 0
    row = capped.change(capped.shas[0], "long.txt")
    assert row["patch_truncated"] is True and len(row["patch"].encode()) <= 300
    assert capped.stats["truncated_patches"] >= 1
    # jobs shapes no row: changing it keeps everything
    same = mine_repo(repo, max_patch_bytes=300, jobs=1)
    assert same.stats["new_commits"] == 0 and same.stats["kept_commits"] == 3
    assert same.change(same.shas[0], "long.txt")["patch_truncated"] is True
    for settings in (
        {"max_patch_bytes": 300, "detect_copies": True},
        {"max_patch_bytes": 300, "detect_copies": True, "detect_renames": False},
        {
            "max_patch_bytes": 300,
            "detect_copies": True,
            "detect_renames": False,
            "merge_diff": "none",
        },
        {
            "max_patch_bytes": 300,
            "detect_copies": True,
            "detect_renames": False,
            "merge_diff": "none",
            "max_blob_bytes": 4096,
        },
    ):
        res = mine_repo(repo, **settings)
        assert res.stats["new_commits"] == 3 and res.stats["kept_commits"] == 0, settings
    back = mine_repo(repo)
    assert back.stats["new_commits"] == 3
    assert back.changes == first.changes and back.commits == first.commits


def test_full_flag_mines_everything_again(git_repo, mine_repo):
    repo = git_repo()
    history(repo, 3)
    first = mine_repo(repo)
    again = mine_repo(repo, full=True)
    assert again.stats["new_commits"] == 3 and again.stats["kept_commits"] == 0
    assert again.commits == first.commits and again.changes == first.changes


def test_refs_and_branches_follow_moved_refs(git_repo, mine_repo):
    repo = git_repo()
    shas = history(repo, 5)
    repo.git("branch", "feature", shas[2])
    repo.git("tag", "v1", shas[1])
    first = mine_repo(repo)
    assert first.commit(shas[2])["refs"] == ["refs/heads/feature"]
    assert first.commit(shas[1])["refs"] == ["refs/tags/v1"]
    assert first.commit(shas[3])["branches"] == ["refs/heads/main"]
    assert first.commit(shas[0])["branches"] == ["refs/heads/feature", "refs/heads/main"]

    repo.git("branch", "-f", "feature", shas[4])
    repo.git("tag", "-d", "v1")
    repo.git("tag", "-a", "-m", "release", "v2", shas[3])
    repo.git("branch", "other", shas[0])
    res = mine_repo(repo)
    check_history(repo, res)
    assert res.stats["new_commits"] == 0 and res.stats["kept_commits"] == 5
    assert res.commit(shas[2])["refs"] == []
    assert res.commit(shas[1])["refs"] == []
    assert res.commit(shas[3])["refs"] == ["refs/tags/v2"]
    assert res.commit(shas[4])["refs"] == ["refs/heads/feature", "refs/heads/main"]
    assert res.commit(shas[0])["refs"] == ["refs/heads/other"]
    assert res.commit(shas[3])["branches"] == ["refs/heads/feature", "refs/heads/main"]
    assert res.commit(shas[0])["branches"] == [
        "refs/heads/feature",
        "refs/heads/main",
        "refs/heads/other",
    ]
    # detaching HEAD adds a HEAD ref without new commits
    repo.git("checkout", "-q", "--detach", shas[3])
    res = mine_repo(repo)
    assert res.stats["new_commits"] == 0
    assert res.commit(shas[3])["refs"] == ["HEAD", "refs/tags/v2"]


def test_changed_ref_selection(git_repo, mine_repo):
    repo = git_repo()
    history(repo, 2)
    repo.write("a.txt", "stashed work\n")
    repo.git("stash", "-q")
    with_stash = ["refs/heads", "refs/tags", "refs/remotes", "refs/stash"]
    assert len(mine_repo(repo).commits) == 2
    res = mine_repo(repo, refs=with_stash)
    check_history(repo, res, "--all")
    assert res.stats["new_commits"] == 2 and res.stats["kept_commits"] == 2
    res = mine_repo(repo)
    check_history(repo, res)
    assert res.stats["dropped_commits"] == 2 and len(res.commits) == 2


def test_incomplete_commits_are_read_again(git_repo, mine_repo, tmp_path):
    repo = git_repo()
    repo.write("a.txt", "precious\n")
    c1 = repo.commit("one")
    repo.write("a.txt", "precious 2\n")
    c2 = repo.commit("two")
    c3s = history(repo, 2, start=5)
    obj = repo.loose_object_path(blob_sha("precious\n"))
    saved = tmp_path / "saved-object"
    saved.write_bytes(obj.read_bytes())
    obj.unlink()
    broken = mine_repo(repo)
    assert [broken.commit(s)["read_level"] for s in (c1, c2)] == ["files", "files"]
    assert broken.stats["missing_objects"] == 1

    still = mine_repo(repo)  # still missing: read again, still incomplete, nothing lost
    assert still.stats["retried_commits"] == 2 and still.stats["kept_commits"] == 2
    assert [still.commit(s)["read_level"] for s in (c1, c2)] == ["files", "files"]
    check_history(repo, still)

    obj.write_bytes(saved.read_bytes())  # the object comes back (e.g. fetched by the user)
    fixed = mine_repo(repo)
    check_history(repo, fixed)
    assert fixed.stats["retried_commits"] == 2 and fixed.stats["new_commits"] == 2
    assert fixed.stats["kept_commits"] == 2 and fixed.stats["missing_objects"] == 0
    assert all(c["read_level"] == "full" for c in fixed.commits)
    assert fixed.change(c1, "a.txt")["patch"] is not None
    assert fixed.change(c2, "a.txt")["additions"] == 1
    assert len(fixed.changes_of(c1)) == 1 and len(fixed.changes_of(c2)) == 1
    fresh = mine_repo(repo, stage="fresh")
    assert fixed.commits == fresh.commits
    assert sorted(fixed.changes, key=lambda r: (r["sha"], r["path"])) == sorted(
        fresh.changes, key=lambda r: (r["sha"], r["path"])
    )
    assert all(fixed.changes_of(s) == fresh.changes_of(s) for s in c3s)


def test_damaged_stage_is_mined_again(git_repo, mine_repo):
    repo = git_repo()
    history(repo, 3)
    first = mine_repo(repo)
    (first.stage_dir / "commits.parquet").write_bytes(b"not parquet")  # e.g. a bad copy
    res = mine_repo(repo)
    assert res.stats["new_commits"] == 3 and res.stats["kept_commits"] == 0
    assert res.commits == first.commits

    (first.stage_dir / "state.json").unlink()
    res = mine_repo(repo)
    assert res.stats["new_commits"] == 3
    assert res.changes == first.changes


def test_deepened_shallow_clone_updates_the_old_boundary(git_repo, mine_repo, tmp_path):
    """After `git fetch --deepen`, the commit that was cut off has parents again: its row (parents,
    shallow_boundary, file changes) must not stay as it was read at the boundary."""
    import subprocess

    src = git_repo("src")
    shas = history(src, 6)
    subprocess.run(
        ["git", "clone", "-q", "--depth", "2", f"file://{src.path}", str(tmp_path / "shallow")],
        check=True,
    )
    dst = GitRepo(tmp_path / "shallow", init=False)
    first = mine_repo(dst)
    cut = first.commit(shas[4])
    assert cut["shallow_boundary"] is True and cut["parents"] == []
    assert len(first.changes_of(shas[4])) == 6  # read as a root: every file "added"

    dst.git("fetch", "-q", "--deepen=2", "origin")
    res = mine_repo(dst)
    check_history(dst, res, "--all")
    assert len(res.commits) == 4
    row = res.commit(shas[4])
    assert row["parents"] == [shas[3]]
    assert row["shallow_boundary"] is False
    assert res.commit(shas[2])["shallow_boundary"] is True
    assert sorted((r["path"], r["status"]) for r in res.changes_of(shas[4])) == [
        ("a.txt", "modified"),
        ("f4.txt", "added"),
    ]
