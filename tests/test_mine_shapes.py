"""The miner on every shape of history: each commit exactly once, fields and file changes exact.

Every repository is built with the git CLI in tmp_path; git itself is the oracle (rev-list for
what must be mined, diff-tree for what a patch must look like).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from datetime import datetime, timezone

import pytest

from conftest import (
    AUTHOR_EMAIL,
    AUTHOR_NAME,
    COMMITTER_EMAIL,
    COMMITTER_NAME,
    GitRepo,
    blob_sha,
    check_history,
    linear_history_stream,
)
from repolm.errors import GitError, RepolmError
from repolm.gitrepo import open_repo

MODE_FILE, MODE_EXEC, MODE_LINK, MODE_GITLINK = 0o100644, 0o100755, 0o120000, 0o160000


# -- helpers ------------------------------------------------------------------------------------


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def git_patch(repo: GitRepo, sha: str, *flags: str) -> str:
    """The patch of a non-merge commit as git prints it (what repolm promises to keep)."""
    out = repo.git_bytes(
        "-c",
        "core.quotePath=false",
        "diff-tree",
        "-r",
        "-p",
        "--no-commit-id",
        "--root",
        "--no-ext-diff",
        "--no-textconv",
        "--src-prefix=a/",
        "--dst-prefix=b/",
        *flags,
        sha,
    )
    return out.decode("utf-8", "replace")


def content_lines(patch: str) -> list[str]:
    """Lines of a patch after the first hunk header (added, removed, context)."""
    i = patch.find("\n@@ ")
    return [] if i < 0 else patch[i + 1 :].splitlines()[1:]


# -- linear history -----------------------------------------------------------------------------


@pytest.fixture
def linear(git_repo):
    """A linear history that exercises every file status. Returns (repo, {name: sha})."""
    repo = git_repo()
    shas = {}
    poem = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(20))
    repo.write("a.py", "one\ntwo\nthree\n")
    repo.write("b.txt", "bee\n")
    repo.write("c.txt", "sea\n")
    repo.write("poem.txt", poem)
    repo.write("script.sh", "#!/bin/sh\necho hi\n")
    shas["root"] = repo.commit(
        "first commit\n\nwith a body\n\n\n",
        author_date="2020-01-02T03:04:05+05:30",
        committer_date="2020-01-02T10:00:00-08:00",
    )
    repo.write("a.py", "one\nTWO\nthree\nfour\n")
    repo.remove("b.txt")
    shas["modify"] = repo.commit(
        "modify a, delete b",
        author_date="2020-02-01T00:00:00-03:30",
        committer_date="2020-02-01T00:00:00+00:00",
    )
    repo.mv("poem.txt", "docs/verse.txt")
    shas["rename"] = repo.commit("rename poem")
    # A copy is found when its source is modified in the same commit (git -C).
    repo.write("copy.py", "one\nTWO\nthree\nfour\n")
    repo.write("a.py", "one\nTWO\nthree\nfour\nfive\n")
    shas["copy"] = repo.commit("copy a")
    repo.remove("c.txt")
    repo.symlink("c.txt", "a.py")
    shas["typechange"] = repo.commit("c becomes a symlink")
    (repo.path / "script.sh").chmod(0o755)
    shas["mode"] = repo.commit("make script executable")
    verse = poem.replace("line 3:", "line three:").replace("line 17:", "line seventeen:")
    repo.remove("docs/verse.txt")
    repo.write("docs/renamed-verse.txt", verse)
    shas["rename_edit"] = repo.commit(
        "rename and edit verse",
        env={"GIT_AUTHOR_NAME": "Zoë Ünïcode", "GIT_AUTHOR_EMAIL": "zoe@example.org"},
    )
    return repo, shas


def test_linear_history_commit_fields(linear, mine_repo):
    repo, shas = linear
    res = mine_repo(repo, detect_copies=True)
    check_history(repo, res, "--all")
    assert res.shas == repo.rev_list("--reverse", "--all")
    assert res.stats["new_commits"] == 7

    root = res.commit(shas["root"])
    assert root["parents"] == []
    assert root["author_name"] == AUTHOR_NAME and root["author_email"] == AUTHOR_EMAIL
    assert root["committer_name"] == COMMITTER_NAME and root["committer_email"] == COMMITTER_EMAIL
    assert root["author_time"] == utc(2020, 1, 1, 21, 34, 5)
    assert root["author_tz_offset"] == 330
    assert root["commit_time"] == utc(2020, 1, 2, 18, 0, 0)
    assert root["commit_tz_offset"] == -480
    assert root["message"] == "first commit\n\nwith a body"
    assert root["is_merge"] is False
    assert root["files_changed"] == 5
    assert root["insertions"] == 3 + 1 + 1 + 20 + 2 and root["deletions"] == 0
    assert root["read_level"] == "full" and root["shallow_boundary"] is False
    assert root["refs"] == [] and root["branches"] == ["refs/heads/main"]

    mod = res.commit(shas["modify"])
    assert mod["parents"] == [shas["root"]]
    assert mod["author_tz_offset"] == -210 and mod["commit_tz_offset"] == 0
    assert mod["author_time"] == utc(2020, 2, 1, 3, 30, 0)
    assert (mod["files_changed"], mod["insertions"], mod["deletions"]) == (2, 2, 2)
    assert mod["message"] == "modify a, delete b"

    last = res.commit(shas["rename_edit"])
    assert last["author_name"] == "Zoë Ünïcode" and last["author_email"] == "zoe@example.org"
    assert last["committer_name"] == COMMITTER_NAME
    assert last["refs"] == ["refs/heads/main"]
    assert all(c["branches"] == ["refs/heads/main"] for c in res.commits)
    for c in res.commits:
        at = repo.git("log", "-1", "--format=%at %ct", c["sha"]).split()
        assert int(c["author_time"].timestamp()) == int(at[0])
        assert int(c["commit_time"].timestamp()) == int(at[1])


def test_linear_history_statuses(linear, mine_repo):
    repo, shas = linear
    res = mine_repo(repo, detect_copies=True)

    added = {r["path"]: r for r in res.changes_of(shas["root"])}
    assert sorted(added) == ["a.py", "b.txt", "c.txt", "poem.txt", "script.sh"]
    a = added["a.py"]
    assert a["status"] == "added" and a["old_path"] is None
    assert (a["old_mode"], a["new_mode"]) == (0, MODE_FILE)
    assert a["old_blob"] is None and a["new_blob"] == blob_sha("one\ntwo\nthree\n")
    assert (a["additions"], a["deletions"]) == (3, 0)
    assert a["language"] == "Python"
    assert a["is_binary"] is False and a["is_large"] is False and a["is_symlink"] is False
    assert a["is_submodule"] is False and a["similarity"] is None
    assert a["patch_truncated"] is False

    rows = {r["path"]: r for r in res.changes_of(shas["modify"])}
    assert sorted(rows) == ["a.py", "b.txt"]
    m = rows["a.py"]
    assert m["status"] == "modified" and m["old_path"] == "a.py"
    assert m["old_blob"] == blob_sha("one\ntwo\nthree\n")
    assert m["new_blob"] == blob_sha("one\nTWO\nthree\nfour\n")
    assert (m["additions"], m["deletions"]) == (2, 1)
    assert "\n-two\n+TWO\n" in m["patch"] and "\n+four\n" in m["patch"]
    d = rows["b.txt"]
    assert d["status"] == "deleted" and d["path"] == "b.txt" and d["old_path"] == "b.txt"
    assert (d["old_mode"], d["new_mode"]) == (MODE_FILE, 0)
    assert d["old_blob"] == blob_sha("bee\n") and d["new_blob"] is None
    assert (d["additions"], d["deletions"]) == (0, 1)

    (r,) = res.changes_of(shas["rename"])
    assert r["status"] == "renamed"
    assert (r["path"], r["old_path"]) == ("docs/verse.txt", "poem.txt")
    assert r["similarity"] == 100 and r["old_blob"] == r["new_blob"]
    assert (r["additions"], r["deletions"]) == (0, 0)

    rows = {r["path"]: r for r in res.changes_of(shas["copy"])}
    assert sorted(rows) == ["a.py", "copy.py"]
    c = rows["copy.py"]
    assert c["status"] == "copied" and c["old_path"] == "a.py" and c["similarity"] == 100
    assert rows["a.py"]["status"] == "modified"

    (t,) = res.changes_of(shas["typechange"])
    assert t["status"] == "type_changed" and t["path"] == "c.txt" and t["old_path"] == "c.txt"
    assert (t["old_mode"], t["new_mode"]) == (MODE_FILE, MODE_LINK)
    assert t["is_symlink"] is True and t["symlink_target"] == "a.py"
    assert t["new_blob"] == blob_sha("a.py")
    assert (t["additions"], t["deletions"]) == (1, 1)
    assert t["patch"].count("diff --git ") == 2  # git prints a deletion and a creation

    (x,) = res.changes_of(shas["mode"])
    assert x["status"] == "modified" and x["path"] == "script.sh"
    assert (x["old_mode"], x["new_mode"]) == (MODE_FILE, MODE_EXEC)
    assert x["old_blob"] == x["new_blob"]
    assert (x["additions"], x["deletions"]) == (0, 0)
    assert "old mode 100644\nnew mode 100755" in x["patch"]

    (re_,) = res.changes_of(shas["rename_edit"])
    raw = repo.git("diff-tree", "-r", "-M", "--no-commit-id", shas["rename_edit"]).split()
    assert re_["status"] == "renamed"
    assert (re_["path"], re_["old_path"]) == ("docs/renamed-verse.txt", "docs/verse.txt")
    assert re_["similarity"] == int(raw[4][1:]) and 50 <= re_["similarity"] < 100
    assert (re_["additions"], re_["deletions"]) == (2, 2)


def test_copies_and_renames_follow_settings(linear, mine_repo):
    repo, shas = linear
    res = mine_repo(repo)  # defaults: renames on, copies off
    rows = {r["path"]: r for r in res.changes_of(shas["copy"])}
    assert rows["copy.py"]["status"] == "added" and rows["copy.py"]["old_path"] is None
    assert res.change(shas["rename"], "docs/verse.txt")["status"] == "renamed"

    res = mine_repo(repo, stage="no-renames", detect_renames=False)
    rows = {(r["path"], r["status"]) for r in res.changes_of(shas["rename"])}
    assert rows == {("poem.txt", "deleted"), ("docs/verse.txt", "added")}
    check_history(repo, res, "--all")


def test_patches_are_exactly_what_git_prints(linear, mine_repo):
    """Each row's patch is git's own patch for that file, byte for byte; together they are the
    commit's whole patch."""
    repo, shas = linear
    res = mine_repo(repo, detect_copies=True)
    for sha in shas.values():
        rows = res.changes_of(sha)
        expected = git_patch(repo, sha, "-M", "-C")
        assert "".join(r["patch"] for r in rows) == expected
        for r in rows:
            assert r["patch_bytes"] == len(r["patch"].encode())
            assert r["patch"].endswith("\n") and not r["patch"].endswith("\n\n")


# -- refs and shapes of the graph ---------------------------------------------------------------


def test_bare_repository(git_repo, mine_repo, tmp_path):
    src = git_repo("src")
    src.write("a.txt", "a\n")
    src.commit("one")
    src.git("checkout", "-q", "-b", "feature")
    src.write("b.txt", "b\n")
    feature = src.commit("two")
    src.git("checkout", "-q", "main")
    src.write("a.txt", "a\nb\n")
    main = src.commit("three")
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(src.path), str(tmp_path / "bare.git")], check=True
    )
    bare = GitRepo(tmp_path / "bare.git", init=False)
    repo = open_repo(bare.path)
    assert repo.bare and repo.name == "bare"
    res = mine_repo(bare)
    check_history(bare, res, "--all")
    assert len(res.commits) == 3
    assert res.commit(main)["refs"] == ["refs/heads/main"]
    assert res.commit(feature)["refs"] == ["refs/heads/feature"]
    assert res.change(feature, "b.txt")["status"] == "added"
    assert res.stats["repository"]["bare"] is True


def test_detached_head_commit_only_reachable_from_head(git_repo, mine_repo):
    repo = git_repo()
    repo.write("a.txt", "a\n")
    base = repo.commit("base")
    repo.git("checkout", "-q", "--detach")
    repo.write("a.txt", "detached\n")
    lone = repo.commit("only on HEAD")
    assert repo.count("--branches", "--tags") == 1
    res = mine_repo(repo)
    check_history(repo, res, "--all", "HEAD")
    assert res.shas == [base, lone]
    assert res.commit(lone)["refs"] == ["HEAD"]
    assert res.commit(lone)["branches"] == []
    assert res.commit(base)["refs"] == ["refs/heads/main"]
    assert res.commit(base)["branches"] == ["refs/heads/main"]
    assert res.change(lone, "a.txt")["status"] == "modified"

    # HEAD detached on a branch tip: listed as HEAD too.
    repo.git("checkout", "-q", "--detach", "main")
    res = mine_repo(repo, stage="again")
    assert res.commit(base)["refs"] == ["HEAD", "refs/heads/main"]
    assert lone not in res.by_sha  # no longer reachable from any ref


def test_orphan_branches_several_roots(git_repo, mine_repo):
    repo = git_repo()
    repo.write("a.txt", "a\n")
    root1 = repo.commit("root 1")
    repo.git("checkout", "-q", "--orphan", "docs")
    repo.git("rm", "-rq", "--cached", ".")
    repo.remove("a.txt")
    repo.write("README", "docs\n")
    root2 = repo.commit("root 2")
    repo.write("README", "docs\nmore\n")
    docs_tip = repo.commit("docs 2")
    repo.git("checkout", "-q", "--orphan", "empty-root")
    repo.git("rm", "-rq", "--cached", ".")
    repo.remove("README")
    root3 = repo.commit("empty root")  # no files at all
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-edit", "--allow-unrelated-histories", "docs")
    merge = repo.head
    res = mine_repo(repo)
    check_history(repo, res, "--all")
    roots = [c["sha"] for c in res.commits if not c["parents"]]
    assert sorted(roots) == sorted([root1, root2, root3])
    assert res.change(root2, "README")["status"] == "added"
    assert res.changes_of(root3) == [] and res.commit(root3)["files_changed"] == 0
    assert res.commit(root3)["insertions"] == 0
    assert res.commit(merge)["parents"] == [root1, docs_tip]
    # first-parent diff of the merge: README arrives from the docs history
    assert [(r["path"], r["status"]) for r in res.changes_of(merge)] == [("README", "added")]
    assert res.commit(root3)["branches"] == ["refs/heads/empty-root"]
    assert res.commit(docs_tip)["branches"] == ["refs/heads/docs"]
    assert res.commit(root1)["branches"] == ["refs/heads/main"]


@pytest.fixture
def octopus(git_repo):
    repo = git_repo()
    repo.write("base.txt", "base\n")
    base = repo.commit("base")
    for name in ("b1", "b2", "b3"):
        repo.git("checkout", "-q", "-b", name, base)
        repo.write(f"{name}.txt", f"{name}\n{name}\n")
        repo.commit(f"on {name}")
    repo.git("checkout", "-q", "main")
    repo.write("main.txt", "main\n")
    main_tip = repo.commit("on main")
    repo.git(
        "merge",
        "-q",
        "--no-edit",
        "b1",
        "b2",
        "b3",
        env={
            "GIT_AUTHOR_DATE": "2021-02-01T00:00:00+00:00",
            "GIT_COMMITTER_DATE": "2021-02-01T00:00:00+00:00",
        },
    )
    merge = repo.head
    assert len(repo.git("log", "-1", "--format=%P").split()) == 4
    return repo, merge, main_tip


def test_octopus_merge_first_parent_diff(octopus, mine_repo):
    repo, merge, main_tip = octopus
    res = mine_repo(repo)
    check_history(repo, res, "--all")
    m = res.commit(merge)
    assert m["is_merge"] is True and len(m["parents"]) == 4 and m["parents"][0] == main_tip
    rows = res.changes_of(merge)
    assert sorted((r["path"], r["status"]) for r in rows) == [
        ("b1.txt", "added"),
        ("b2.txt", "added"),
        ("b3.txt", "added"),
    ]
    assert all((r["additions"], r["deletions"]) == (2, 0) for r in rows)
    assert (m["files_changed"], m["insertions"], m["deletions"]) == (3, 6, 0)
    assert m["branches"] == ["refs/heads/main"]
    # A side branch's commit is on that branch's lineage only (first parents of main skip it).
    b1_tip = repo.rev_parse("b1")
    assert res.commit(b1_tip)["branches"] == ["refs/heads/b1"]
    assert res.commit(b1_tip)["refs"] == ["refs/heads/b1"]


def test_octopus_merge_without_merge_diff(octopus, mine_repo):
    repo, merge, _ = octopus
    res = mine_repo(repo, merge_diff="none")
    check_history(repo, res, "--all")
    assert res.changes_of(merge) == []
    m = res.commit(merge)
    assert m["is_merge"] is True and m["files_changed"] == 0
    assert m["read_level"] == "full"
    # Non-merge commits are unaffected.
    assert [r["path"] for r in res.changes_of(repo.rev_parse("b2"))] == ["b2.txt"]


def test_skewed_dates(git_repo, mine_repo):
    repo = git_repo()
    repo.write("a.txt", "1971\n")
    old = repo.commit("from 1971", date="@34000000 +0100")
    repo.write("a.txt", "2099\n")
    future = repo.commit("from 2099", date="2099-12-31T23:59:59+14:00")
    repo.write("a.txt", "skew\n")
    skew = repo.commit(
        "committed before authored",
        author_date="2090-06-01T12:00:00+00:00",
        committer_date="1980-01-01T00:00:00-12:00",
    )
    repo.write("a.txt", "back to normal\n")
    normal = repo.commit("normal")
    res = mine_repo(repo)
    check_history(repo, res, "--all")
    assert res.shas == [old, future, skew, normal]  # parents first, whatever the dates say
    assert res.commit(old)["author_time"] == datetime.fromtimestamp(34000000, timezone.utc)
    assert res.commit(old)["author_tz_offset"] == 60
    assert res.commit(future)["author_time"] == utc(2099, 12, 31, 9, 59, 59)
    assert res.commit(future)["commit_tz_offset"] == 14 * 60
    s = res.commit(skew)
    assert s["author_time"] == utc(2090, 6, 1, 12)
    assert s["commit_time"] == utc(1980, 1, 1, 12)
    assert s["commit_tz_offset"] == -720
    assert s["commit_time"] < s["author_time"]
    assert res.stats["repository"]["first_commit_time"].startswith("1971-01-29")


def raw_commit(
    repo: GitRepo, tree: str, parent: str, author: str, committer: str, message: bytes = b"raw\n"
) -> str:
    body = f"tree {tree}\nparent {parent}\nauthor {author}\ncommitter {committer}\n\n".encode()
    return repo.git(
        "hash-object", "-t", "commit", "-w", "--stdin", "--literally", input=body + message
    )


def test_malformed_dates_and_identities(git_repo, mine_repo):
    """Dates git cannot parse read as the epoch; odd identities are kept as git prints them."""
    repo = git_repo()
    repo.write("a.txt", "a\n")
    base = repo.commit("base")
    tree = repo.rev_parse("HEAD^{tree}")
    c1 = raw_commit(repo, tree, base, "A <a@x> -5 +0000", "C <c@x> 1600000000 +0100")
    c2 = raw_commit(repo, tree, c1, "A <a@x> garbage", "C <c@x> 1600000000 +9999")
    c3 = raw_commit(repo, tree, c2, "No Email 1600000000 +0000", "C <c@x> 1600000000 -0000")
    c4 = raw_commit(
        repo,
        tree,
        c3,
        "A <a@x> 1600000000 -0030",
        "C <c@x> 1600000000 +0000",
        b"message with a \0 NUL inside\n",
    )
    repo.git("update-ref", "refs/heads/main", c4)
    repo.write("b.txt", "b\n")
    after = repo.commit("after")
    res = mine_repo(repo)
    check_history(repo, res, "--all")
    assert res.shas == [base, c1, c2, c3, c4, after]
    epoch = datetime.fromtimestamp(0, timezone.utc)
    assert res.commit(c1)["author_time"] == epoch
    assert res.commit(c1)["commit_time"] == datetime.fromtimestamp(1600000000, timezone.utc)
    assert res.commit(c1)["commit_tz_offset"] == 60
    assert res.commit(c2)["author_time"] == epoch
    assert res.commit(c2)["commit_tz_offset"] == 99 * 60 + 99
    assert res.commit(c3)["commit_tz_offset"] == 0
    assert res.commit(c4)["author_tz_offset"] == -30
    assert res.commit(c4)["message"].startswith("message with a ")
    assert all(res.changes_of(s) == [] for s in (c1, c2, c3, c4))
    assert [r["path"] for r in res.changes_of(after)] == ["b.txt"]


def test_dates_beyond_year_9999_do_not_crash(git_repo, tmp_path):
    """Git stores any unsigned timestamp; a commit dated in the year 10000 must not stop mining."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from repolm.config import MineConfig
    from repolm.mine.miner import mine

    repo = git_repo()
    repo.write("a.txt", "a\n")
    base = repo.commit("base")
    tree = repo.rev_parse("HEAD^{tree}")
    far = raw_commit(repo, tree, base, "A <a@x> 253402300800 +0000", "C <c@x> 1600000000 +0000")
    repo.git("update-ref", "refs/heads/main", far)
    stats = mine(open_repo(repo.path), tmp_path / "stage", MineConfig())
    assert stats["commits"] == 2
    table = pq.read_table(tmp_path / "stage" / "commits.parquet")
    times = table.column("author_time").cast(pa.int64()).to_pylist()
    shas = table.column("sha").to_pylist()
    assert shas == [base, far]
    assert times[1] == 253402300799_000  # clamped to 9999-12-31T23:59:59 UTC, in ms


def test_tags_of_every_kind(git_repo, mine_repo):
    repo = git_repo()
    repo.write("a.txt", "a\n")
    c1 = repo.commit("one")
    repo.git("tag", "light", c1)
    repo.write("a.txt", "b\n")
    c2 = repo.commit("two")
    repo.git("tag", "-a", "-m", "annotated", "v1", c2)
    repo.git("-c", "advice.nestedTag=false", "tag", "-a", "-m", "tag of a tag", "v1-outer", "v1")
    repo.git(
        "-c",
        "advice.nestedTag=false",
        "tag",
        "-a",
        "-m",
        "tag of tag of tag",
        "v1-outer2",
        "v1-outer",
    )
    repo.git("tag", "tree-tag", "HEAD^{tree}")
    repo.git("tag", "-a", "-m", "annotated tree", "tree-atag", "HEAD^{tree}")
    repo.git(
        "-c",
        "advice.nestedTag=false",
        "tag",
        "-a",
        "-m",
        "tag of a tree tag",
        "tree-atag-outer",
        "tree-atag",
    )
    blob = repo.git("hash-object", "-w", "--stdin", input="a loose blob\n")
    repo.git("tag", "blob-tag", blob)
    repo.git("tag", "-a", "-m", "annotated blob", "blob-atag", blob)
    # A commit reachable only from a tag.
    repo.git("checkout", "-q", "-b", "gone")
    repo.write("a.txt", "only tagged\n")
    c3 = repo.commit("only reachable from a tag")
    repo.git("tag", "-a", "-m", "release", "v2", c3)
    repo.git("checkout", "-q", "main")
    repo.git("branch", "-D", "gone")

    res = mine_repo(repo)
    check_history(repo, res, "--all")
    assert res.shas == [c1, c2, c3]
    assert res.commit(c1)["refs"] == ["refs/tags/light"]
    assert res.commit(c2)["refs"] == [
        "refs/heads/main",
        "refs/tags/v1",
        "refs/tags/v1-outer",
        "refs/tags/v1-outer2",
    ]
    assert res.commit(c3)["refs"] == ["refs/tags/v2"]
    assert res.commit(c3)["branches"] == []  # tags are not branches
    assert res.stats["repository"]["tags"] == 5
    assert not any("tree" in r or "blob" in r for c in res.commits for r in c["refs"])


def test_remote_tracking_refs(git_repo, mine_repo, tmp_path):
    src = git_repo("src")
    src.write("a.txt", "a\n")
    src.commit("one")
    src.git("checkout", "-q", "-b", "feature")
    src.write("f.txt", "f\n")
    feature = src.commit("feature work")
    src.git("checkout", "-q", "main")
    src.write("a.txt", "a2\n")
    main = src.commit("main work")
    subprocess.run(["git", "clone", "-q", f"file://{src.path}", str(tmp_path / "dst")], check=True)
    dst = GitRepo(tmp_path / "dst", init=False)
    dst.write("local.txt", "local\n")
    local = dst.commit("local only")
    refs = dst.git("for-each-ref", "--format=%(refname)").split()
    assert "refs/remotes/origin/feature" in refs and "refs/heads/feature" not in refs

    res = mine_repo(dst)
    check_history(dst, res, "--all")
    assert len(res.commits) == 4
    assert res.commit(feature)["refs"] == ["refs/remotes/origin/feature"]
    assert res.commit(feature)["branches"] == ["refs/remotes/origin/feature"]
    assert "refs/remotes/origin/main" in res.commit(main)["refs"]
    assert res.commit(main)["branches"] == ["refs/heads/main", "refs/remotes/origin/main"]
    assert res.commit(local)["refs"] == ["refs/heads/main"]
    assert all("refs/remotes/origin/HEAD" not in c["branches"] for c in res.commits)

    only_heads = mine_repo(dst, stage="heads", refs=["refs/heads"])
    assert feature not in only_heads.by_sha
    check_history(dst, only_heads, "--branches", "HEAD")


def test_empty_ref_selection_mines_only_head(git_repo, mine_repo):
    """refs=[] selects no ref prefix: only HEAD's history (HEAD is always included)."""
    repo = git_repo()
    repo.write("a.txt", "a\n")
    head = repo.commit("on main")
    repo.git("checkout", "-q", "-b", "other")
    repo.write("b.txt", "b\n")
    repo.commit("on other")
    repo.git("tag", "t-other")
    repo.git("checkout", "-q", "main")
    repo.write("a.txt", "stash me\n")
    repo.git("stash", "-q")
    res = mine_repo(repo, refs=[])
    check_history(repo, res, "HEAD")
    assert res.shas == [head]


def test_ref_prefix_with_trailing_slash(git_repo, mine_repo):
    repo = git_repo()
    repo.write("a.txt", "a\n")
    repo.commit("one")
    repo.git("checkout", "-q", "-b", "side")
    repo.write("b.txt", "b\n")
    side = repo.commit("two")
    repo.git("checkout", "-q", "main")
    res = mine_repo(repo, refs=["refs/heads/"])
    check_history(repo, res, "--branches")
    assert res.commit(side)["refs"] == ["refs/heads/side"]


def test_notes_not_mined_by_default(git_repo, mine_repo):
    repo = git_repo()
    repo.write("a.txt", "a\n")
    c1 = repo.commit("one")
    repo.git("notes", "add", "-m", "a note", c1)
    assert repo.count("--all") == 2  # the notes commit
    res = mine_repo(repo)
    check_history(repo, res)
    assert res.shas == [c1]
    res = mine_repo(repo, stage="notes", refs=["refs/heads", "refs/notes"])
    check_history(repo, res, "--all")
    assert len(res.commits) == 2


def test_branch_lineage_settings(git_repo, mine_repo):
    repo = git_repo()
    repo.write("a.txt", "a\n")
    base = repo.commit("base")
    for name in ("b1", "b2", "b3"):
        repo.git("branch", name)
    res = mine_repo(repo, stage="on")
    assert res.commit(base)["branches"] == [
        "refs/heads/b1",
        "refs/heads/b2",
        "refs/heads/b3",
        "refs/heads/main",
    ]
    res = mine_repo(repo, stage="off", branch_lineage=False)
    assert res.commit(base)["branches"] == []
    assert res.commit(base)["refs"] == [
        "refs/heads/b1",
        "refs/heads/b2",
        "refs/heads/b3",
        "refs/heads/main",
    ]
    res = mine_repo(repo, stage="few", max_lineage_branches=3)
    assert res.commit(base)["branches"] == []
    res = mine_repo(repo, stage="enough", max_lineage_branches=4)
    assert len(res.commit(base)["branches"]) == 4


def test_unborn_head_with_other_branches(git_repo, mine_repo):
    repo = git_repo()
    repo.write("a.txt", "a\n")
    c1 = repo.commit("one")
    repo.git("checkout", "-q", "--orphan", "unborn")
    res = mine_repo(repo)
    check_history(repo, res, "--all")
    assert res.shas == [c1] and res.commit(c1)["refs"] == ["refs/heads/main"]
    assert res.stats["repository"]["head"] is None


def test_opened_from_a_subdirectory_a_worktree_or_an_odd_path(
    git_repo, mine_repo, tmp_path, monkeypatch
):
    repo = git_repo("my repo é")
    repo.write("sub/dir/a.txt", "a\n")
    c1 = repo.commit("one")
    res = mine_repo(repo.path / "sub" / "dir")
    check_history(repo, res, "--all")
    assert res.stats["repository"]["path"] == str(repo.path.resolve())

    repo.git("worktree", "add", "-q", "--detach", str(tmp_path / "wt"), c1)
    wt = GitRepo(tmp_path / "wt", init=False)
    wt.write("wt.txt", "from the worktree\n")
    c2 = wt.commit("only on the worktree's HEAD")
    res = mine_repo(wt, stage="wt")
    assert res.shas == [c1, c2]
    assert res.commit(c2)["refs"] == ["HEAD"]

    # GIT_DIR and friends in the caller's environment must not redirect the miner
    other = git_repo("other")
    other.write("o.txt", "o\n")
    other.commit("other")
    monkeypatch.setenv("GIT_DIR", str(other.path / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other.path))
    res = mine_repo(repo, stage="env")
    assert res.shas == [c1]


@pytest.fixture
def stashed(git_repo):
    repo = git_repo()
    repo.write("a.txt", "a\n")
    base = repo.commit("base")
    repo.write("a.txt", "a\nwork in progress\n")
    repo.git("stash", "-q")
    stash = repo.rev_parse("refs/stash")
    assert repo.count("--all") == 3  # base, the stash commit and its index commit
    return repo, base, stash


def test_stash_not_mined_by_default(stashed, mine_repo):
    repo, base, stash = stashed
    res = mine_repo(repo)
    check_history(repo, res)
    assert res.shas == [base]


def test_stash_mined_when_selected(stashed, mine_repo):
    repo, base, stash = stashed
    res = mine_repo(repo, refs=["refs/heads", "refs/tags", "refs/remotes", "refs/stash"])
    check_history(repo, res, "--all")
    assert len(res.commits) == 3
    s = res.commit(stash)
    assert s["refs"] == ["refs/stash"] and s["is_merge"] is True and s["branches"] == []
    (row,) = res.changes_of(stash)
    assert (row["path"], row["status"], row["additions"]) == ("a.txt", "modified", 1)


def test_shallow_clone(git_repo, mine_repo, tmp_path, repolm_log):
    src = git_repo("src")
    for i in range(5):
        src.write("a.txt", f"version {i}\n")
        src.write(f"f{i}.txt", f"{i}\n")
        src.commit(f"c{i}")
    subprocess.run(
        ["git", "clone", "-q", "--depth", "2", f"file://{src.path}", str(tmp_path / "shallow")],
        check=True,
    )
    dst = GitRepo(tmp_path / "shallow", init=False)
    assert dst.git("rev-parse", "--is-shallow-repository") == "true"
    cut = dst.rev_parse("HEAD~1")
    res = mine_repo(dst)
    check_history(dst, res, "--all")
    assert len(res.commits) == dst.count("--all") == 2
    assert res.commit(cut)["shallow_boundary"] is True
    assert res.commit(dst.head)["shallow_boundary"] is False
    assert res.commit(cut)["parents"] == []
    assert res.commit(dst.head)["read_level"] == "full"
    assert res.stats["shallow"] is True
    warnings = [r for r in repolm_log.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "shallow" in w.getMessage()]) == 1


# -- special files ------------------------------------------------------------------------------


def test_submodule_is_recorded_not_followed(git_repo, mine_repo):
    sub = git_repo("sub")
    sub.write("inner.txt", "inner\n")
    s1 = sub.commit("sub one")
    sub.write("inner.txt", "inner 2\n")
    s2 = sub.commit("sub two")
    repo = git_repo("main")
    repo.write("a.txt", "a\n")
    repo.commit("base")
    repo.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub.path), "sub")
    repo.git("-C", "sub", "checkout", "-q", s1)
    repo.git("add", "sub")
    add = repo.commit("add submodule")
    repo.git("-C", "sub", "checkout", "-q", s2)
    bump = repo.commit("bump submodule")
    repo.git("rm", "-q", "sub")
    drop = repo.commit("drop submodule")

    res = mine_repo(repo)
    check_history(repo, res, "--all")
    assert len(res.commits) == 4
    assert s1 not in res.by_sha and s2 not in res.by_sha  # no recursion into the submodule
    assert all(not r["path"].startswith("sub/") for r in res.changes)

    g = res.change(add, "sub")
    assert g["status"] == "added" and g["is_submodule"] is True
    assert (g["old_mode"], g["new_mode"]) == (0, MODE_GITLINK)
    assert g["new_blob"] == s1 and g["is_binary"] is False and g["is_symlink"] is False
    assert res.change(add, ".gitmodules")["is_submodule"] is False

    b = res.change(bump, "sub")
    assert b["status"] == "modified" and b["is_submodule"] is True
    assert (b["old_blob"], b["new_blob"]) == (s1, s2)
    assert f"-Subproject commit {s1}" in b["patch"] and f"+Subproject commit {s2}" in b["patch"]

    d = res.change(drop, "sub")
    assert d["status"] == "deleted" and d["is_submodule"] is True and d["old_blob"] == s2
    assert res.stats["submodule_changes"] == 3


def test_symlinks_are_read_from_history_never_followed(git_repo, mine_repo, tmp_path):
    secret = tmp_path / "outside-secret.txt"
    secret.write_text("TOP SECRET CONTENT\n")
    repo = git_repo()
    repo.write("a.txt", "a\n")
    repo.symlink("inside", "a.txt")
    repo.symlink("passwd", "/etc/passwd")
    repo.symlink("secret", str(secret))
    repo.symlink("dangling", "../../nowhere/at/all")
    repo.symlink("dirlink", "/etc")
    c1 = repo.commit("links")
    repo.symlink("inside", "b.txt")
    c2 = repo.commit("retarget")
    res = mine_repo(repo)
    check_history(repo, res, "--all")

    targets = {
        "inside": "a.txt",
        "passwd": "/etc/passwd",
        "secret": str(secret),
        "dangling": "../../nowhere/at/all",
        "dirlink": "/etc",
    }
    for path, target in targets.items():
        r = res.change(c1, path)
        assert r["status"] == "added" and r["is_symlink"] is True, r
        assert r["new_mode"] == MODE_LINK
        assert r["symlink_target"] == target
        assert r["new_blob"] == blob_sha(target)
        assert (r["additions"], r["deletions"]) == (1, 0)
    joined = "".join(r["patch"] for r in res.changes)
    assert "TOP SECRET" not in joined and "root:" not in joined
    assert res.change(c1, "a.txt")["is_symlink"] is False

    r = res.change(c2, "inside")
    assert r["status"] == "modified" and r["symlink_target"] == "b.txt"
    assert (r["additions"], r["deletions"]) == (1, 1)
    assert res.stats["symlink_changes"] == 6


def test_renamed_symlink_keeps_its_target(git_repo, mine_repo):
    """A pure rename prints no content lines; the target is still the (unchanged) blob."""
    repo = git_repo()
    repo.symlink("link", "/etc/passwd")
    repo.commit("add link")
    repo.mv("link", "moved-link")
    moved = repo.commit("move link")
    res = mine_repo(repo)
    r = res.change(moved, "moved-link")
    assert r["status"] == "renamed" and r["is_symlink"] is True and r["similarity"] == 100
    assert r["symlink_target"] == "/etc/passwd"


def test_deleted_symlink_keeps_its_target(git_repo, mine_repo):
    repo = git_repo()
    repo.symlink("link", "../outside")
    repo.write("a.txt", "a\n")
    repo.commit("add link")
    repo.remove("link")
    deleted = repo.commit("delete link")
    res = mine_repo(repo)
    d = res.change(deleted, "link")
    assert d["status"] == "deleted" and d["is_symlink"] is True
    assert (d["old_mode"], d["new_mode"]) == (MODE_LINK, 0)
    assert d["symlink_target"] == "../outside"


def test_type_changes_between_file_symlink_and_submodule(git_repo, mine_repo):
    sub = git_repo("sub")
    sub.write("x", "x\n")
    sub_sha = sub.commit("sub")
    repo = git_repo("main")
    repo.symlink("link", "target.txt")
    repo.write("mod", "a plain file\n")
    repo.write("keep.txt", "keep\n")
    c1 = repo.commit("symlink and file")
    repo.remove("link")
    repo.write("link", "now a file\nwith two lines\n")
    repo.git("add", "link")
    repo.git("rm", "-q", "mod")
    repo.git("update-index", "--add", "--cacheinfo", f"160000,{sub_sha},mod")
    repo.commit("link->file, file->gitlink", add=False)
    assert repo.git("ls-tree", "HEAD", "mod").startswith("160000 commit")
    res = mine_repo(repo)
    check_history(repo, res, "--all")
    rows = {r["path"]: r for r in res.changes_of(repo.head)}
    link = rows["link"]
    assert link["status"] == "type_changed"
    assert (link["old_mode"], link["new_mode"]) == (MODE_LINK, MODE_FILE)
    assert link["is_symlink"] is False and link["symlink_target"] is None
    assert (link["additions"], link["deletions"]) == (2, 1)
    mod = rows["mod"]
    assert mod["status"] == "type_changed"
    assert (mod["old_mode"], mod["new_mode"]) == (MODE_FILE, MODE_GITLINK)
    assert mod["is_submodule"] is True and mod["new_blob"] == sub_sha
    assert c1 in res.by_sha


def test_empty_files_and_missing_final_newline(git_repo, mine_repo):
    repo = git_repo()
    repo.write("empty.txt", "")
    repo.write("nonl.txt", "no newline at end")
    repo.write("crlf.txt", "one\r\ntwo\r\n")
    c1 = repo.commit("odd endings")
    repo.write("empty.txt", "now has content\n")
    repo.write("nonl.txt", "no newline at end\nand more")
    c2 = repo.commit("fill")
    repo.remove("empty.txt")
    repo.write("empty.txt", "")
    repo.write("newly-empty.txt", "")
    c3 = repo.commit("empty again")
    res = mine_repo(repo)
    check_history(repo, res, "--all")
    e = res.change(c1, "empty.txt")
    assert e["status"] == "added" and e["is_binary"] is False
    assert (e["additions"], e["deletions"]) == (0, 0)
    assert e["new_blob"] == blob_sha("")
    n = res.change(c1, "nonl.txt")
    assert (n["additions"], n["deletions"]) == (1, 0)
    assert "\\ No newline at end of file" in n["patch"]

    def counts(sha, path):
        r = res.change(sha, path)
        return r["additions"], r["deletions"]

    assert counts(c1, "crlf.txt") == (2, 0)
    assert counts(c2, "empty.txt") == (1, 0)
    assert counts(c2, "nonl.txt") == (2, 1)
    assert counts(c3, "empty.txt") == (0, 1)
    assert res.change(c3, "newly-empty.txt")["status"] == "added"


def test_big_patch_stream_across_read_chunks(git_repo, mine_repo):
    """Records far larger than one read of git's output (1 MiB) are cut at the right places."""
    repo = git_repo()
    shas = []
    for i in range(12):
        repo.write("big.txt", "".join(f"{i:02d} line {j} " + "x" * 60 + "\n" for j in range(4000)))
        repo.write(f"small{i}.txt", f"{i}\n")
        shas.append(repo.commit(f"rewrite {i}"))
    res = mine_repo(repo)
    check_history(repo, res, "--all")
    for sha in shas:
        numstat = repo.git("show", "--numstat", "--format=", sha).splitlines()
        expected = {line.split("\t")[2]: tuple(map(int, line.split("\t")[:2])) for line in numstat}
        got = {r["path"]: (r["additions"], r["deletions"]) for r in res.changes_of(sha)}
        assert got == expected
        big = res.change(sha, "big.txt")
        assert big["patch_bytes"] > 250_000 and big["patch_truncated"] is False
        assert big["patch"].startswith("diff --git a/big.txt b/big.txt\n")


def test_symlink_target_with_newlines(git_repo, mine_repo):
    """A symlink's target is its whole blob, newlines included (Linux allows them)."""
    repo = git_repo()
    try:
        repo.symlink("weird", "first\nsecond")
    except OSError:
        pytest.skip("the filesystem refuses newlines in symlink targets")
    c1 = repo.commit("weird link")
    res = mine_repo(repo)
    r = res.change(c1, "weird")
    assert r["is_symlink"] is True and r["new_blob"] == blob_sha("first\nsecond")
    assert r["symlink_target"] == "first\nsecond"


def test_odd_paths(git_repo, mine_repo, tmp_path):
    names = [
        "with space.txt",
        "tab\there.txt",
        "café.txt",
        "日本/語.py",
        ":colon.txt",
        ":(top)magic.txt",
        '"quoted".txt',
        "back\\slash.txt",
        "-dash.txt",
        "trailing space ",
    ]
    try:
        (tmp_path / "probe\nname").write_text("x")
        names.append("new\nline.txt")
    except OSError:
        pass
    repo = git_repo()
    for i, name in enumerate(names):
        repo.write(name, f"content {i}\nsecond line\n")
    added = repo.commit("odd names")
    for i, name in enumerate(names):
        repo.write(name, f"content {i}\nchanged line\n")
    modified = repo.commit("modify odd names")
    repo.mv("with space.txt", "still with space.txt")
    repo.mv("日本/語.py", "日本/言語.py")
    renamed = repo.commit("rename odd names")
    res = mine_repo(repo)
    check_history(repo, res, "--all")

    assert sorted(r["path"] for r in res.changes_of(added)) == sorted(names)
    for name in names:
        a = res.change(added, name)
        assert a["status"] == "added" and (a["additions"], a["deletions"]) == (2, 0), name
        assert a["patch"] is not None and "+second line" in a["patch"]
        m = res.change(modified, name)
        assert m["status"] == "modified" and (m["additions"], m["deletions"]) == (1, 1), name
        assert m["old_path"] == name
    assert res.change(added, "日本/語.py")["language"] == "Python"
    r = res.change(renamed, "still with space.txt")
    assert r["old_path"] == "with space.txt" and r["status"] == "renamed"
    r = res.change(renamed, "日本/言語.py")
    assert r["old_path"] == "日本/語.py" and r["similarity"] == 100


# -- encodings ----------------------------------------------------------------------------------


def test_non_utf8_file_content_and_name(git_repo, mine_repo):
    repo = git_repo()
    repo.write("latin1.txt", b"caf\xe9\nna\xefve\n")
    c1 = repo.commit("latin-1 content")
    repo.write("latin1.txt", b"caf\xe9\nna\xefve\nd\xe9j\xe0 vu\n")
    bad_name = os.fsdecode(b"r\xe9sum\xe9.txt")
    (repo.path / bad_name).write_bytes(b"cv\n")
    c2 = repo.commit("more latin-1")
    repo.write("after.txt", "still mining\n")
    c3 = repo.commit("after")
    res = mine_repo(repo)
    check_history(repo, res, "--all")
    a = res.change(c1, "latin1.txt")
    assert a["is_binary"] is False and (a["additions"], a["deletions"]) == (2, 0)
    assert "+caf\ufffd\n" in a["patch"]
    m = res.change(c2, "latin1.txt")
    assert (m["additions"], m["deletions"]) == (1, 0) and "+d\ufffdj\ufffd vu" in m["patch"]
    assert res.change(c2, "r\ufffdsum\ufffd.txt")["status"] == "added"
    assert res.change(c3, "after.txt")["additions"] == 1
    assert all(c["read_level"] == "full" for c in res.commits)


def test_non_utf8_commit_messages(git_repo, mine_repo, tmp_path):
    repo = git_repo()
    repo.write("a.txt", "a\n")
    base = repo.commit("base")
    # 1. declared ISO-8859-1: git re-encodes it to UTF-8 for us
    msg = tmp_path / "msg"
    msg.write_bytes(b"caf\xe9 d\xe9clar\xe9\n\nna\xefve body\n")
    repo.write("a.txt", "b\n")
    repo.git("add", "-A")
    repo.git("-c", "i18n.commitEncoding=ISO-8859-1", "commit", "-q", "-F", str(msg))
    declared = repo.head
    assert repo.git("cat-file", "-p", declared).count("encoding ISO-8859-1") == 1
    # 2. raw latin-1 bytes without an encoding header
    tree = repo.rev_parse("HEAD^{tree}")
    raw = (
        f"tree {tree}\nparent {declared}\n"
        f"author Jos\xe9 <j@example.com> 1600000000 +0200\n"
        f"committer Jos\xe9 <j@example.com> 1600000000 +0200\n\n"
    ).encode("latin-1")
    raw += b"undeclared caf\xe9\n"
    undeclared = repo.git("hash-object", "-t", "commit", "-w", "--stdin", input=raw)
    # 3. an encoding header git does not know
    raw2 = (
        f"tree {tree}\nparent {undeclared}\n"
        f"author A <a@example.com> 1600000100 +0000\n"
        f"committer A <a@example.com> 1600000100 +0000\n"
        f"encoding x-no-such-charset\n\n"
    ).encode() + b"bogus \xff\xfe charset\n"
    bogus = repo.git("hash-object", "-t", "commit", "-w", "--stdin", input=raw2)
    repo.git("update-ref", "refs/heads/main", bogus)
    repo.write("a.txt", "c\n")
    repo.git("reset", "-q", "--hard")
    repo.write("z.txt", "z\n")
    after = repo.commit("after the odd ones")

    res = mine_repo(repo)
    check_history(repo, res, "--all")
    assert res.shas == [base, declared, undeclared, bogus, after]
    assert res.commit(declared)["message"] == "café déclaré\n\nnaïve body"
    assert res.commit(undeclared)["message"] == "undeclared caf\ufffd"
    assert res.commit(undeclared)["author_name"] == "Jos\ufffd"
    assert res.commit(undeclared)["author_tz_offset"] == 120
    assert res.commit(bogus)["message"].startswith("bogus ")
    assert res.commit(after)["message"] == "after the odd ones"
    assert res.change(declared, "a.txt")["status"] == "modified"
    assert all(c["read_level"] == "full" for c in res.commits)


# -- binary, large, capped ----------------------------------------------------------------------


def test_binary_files(git_repo, mine_repo):
    repo = git_repo()
    data = bytes(range(256)) * 4
    repo.write("img.bin", data)
    repo.write("text.txt", "text\n")
    c1 = repo.commit("binary")
    repo.write("img.bin", data[::-1])
    c2 = repo.commit("binary changed")
    res = mine_repo(repo)
    check_history(repo, res, "--all")
    b = res.change(c1, "img.bin")
    assert b["is_binary"] is True and b["is_large"] is False
    assert (b["additions"], b["deletions"]) == (0, 0)
    assert "Binary files /dev/null and b/img.bin differ" in b["patch"]
    assert b["new_blob"] == blob_sha(data)
    assert res.change(c1, "text.txt")["is_binary"] is False
    m = res.change(c2, "img.bin")
    assert m["is_binary"] is True and m["status"] == "modified"
    assert (m["additions"], m["deletions"]) == (0, 0)
    assert res.stats["binary_changes"] == 2


def test_large_files_are_never_diffed(git_repo, mine_repo):
    repo = git_repo()
    big = "".join(f"this is line {i} of a large text file\n" for i in range(1500))
    assert len(big) > 50_000
    repo.write("big.txt", big)
    repo.write("small.txt", "small\n" * 10)
    c1 = repo.commit("large file")
    repo.write("big.txt", big + "one more line\n")
    c2 = repo.commit("large file grows")
    repo.remove("big.txt")
    c3 = repo.commit("large file deleted")
    res = mine_repo(repo, max_blob_bytes=4096)
    check_history(repo, res, "--all")
    for sha, status in ((c1, "added"), (c2, "modified"), (c3, "deleted")):
        r = res.change(sha, "big.txt")
        assert r["status"] == status
        assert r["is_large"] is True and r["is_binary"] is True, r
        assert (r["additions"], r["deletions"]) == (0, 0)
        assert "@@" not in r["patch"] and "this is line" not in r["patch"]
        assert content_lines(r["patch"]) == []
        assert r["patch"].startswith("diff --git a/big.txt b/big.txt\n")
    s = res.change(c1, "small.txt")
    assert s["is_large"] is False and s["is_binary"] is False and s["additions"] == 10

    # With the default limit the same file is a plain text diff.
    res = mine_repo(repo, stage="default")
    r = res.change(c1, "big.txt")
    assert r["is_large"] is False and r["is_binary"] is False and r["additions"] == 1500


def test_large_file_shrinking_below_the_limit_is_still_large(git_repo, mine_repo):
    """Git does not diff a change whose old side is over the limit either: the row is large."""
    repo = git_repo()
    repo.write("data.txt", "x" * 20 + "\n" + "y" * 60 + "\n" * 100 + "z\n" * 5000)
    repo.commit("large")
    repo.write("data.txt", "now small\n")
    shrink = repo.commit("shrink")
    res = mine_repo(repo, max_blob_bytes=4096)
    r = res.change(shrink, "data.txt")
    assert r["is_binary"] is True  # git refused to diff it
    assert r["is_large"] is True


def test_patch_cap(git_repo, mine_repo):
    repo = git_repo()
    long_file = "".join(f"{i:04d} some text on this line\n" for i in range(200))
    repo.write("long.txt", long_file)
    repo.write("short.txt", "short\n")
    repo.write("oneline.txt", "x" * 5000)  # no newline at all
    c1 = repo.commit("files")
    full = mine_repo(repo, stage="full")
    capped = mine_repo(repo, stage="capped", max_patch_bytes=500)
    f = full.change(c1, "long.txt")
    c = capped.change(c1, "long.txt")
    assert f["patch_truncated"] is False and f["patch_bytes"] == len(f["patch"].encode())
    assert c["patch_truncated"] is True
    assert c["patch_bytes"] == f["patch_bytes"] > 500
    assert c["patch_bytes"] > len(c["patch"].encode())
    assert len(c["patch"].encode()) <= 500
    assert c["patch"].endswith("\n") and f["patch"].startswith(c["patch"])
    assert len(c["patch"].encode()) > 500 - 40  # cut at the last line end before the cap
    assert (c["additions"], c["deletions"]) == (200, 0)  # counted on the whole patch
    s = capped.change(c1, "short.txt")
    assert s["patch_truncated"] is False and s["patch"] == full.change(c1, "short.txt")["patch"]
    o = capped.change(c1, "oneline.txt")
    assert o["patch_truncated"] is True and o["patch"].endswith("\n")
    assert "xxxx" not in o["patch"] and len(o["patch"].encode()) <= 500
    assert capped.stats["truncated_patches"] == 2
    assert full.commit(c1)["insertions"] == capped.commit(c1)["insertions"]

    zero = mine_repo(repo, stage="zero", max_patch_bytes=0)
    for r in zero.changes:
        assert r["patch"] == "" and r["patch_truncated"] is True and r["patch_bytes"] > 0


def test_patch_cap_smaller_than_the_first_line(git_repo, mine_repo):
    """Even when the first header line is longer than the cap, the kept text ends at a line end
    (or is empty) and is never cut inside a UTF-8 character."""
    repo = git_repo()
    name = "é" * 60 + ".txt"  # the diff --git line alone is ~250 bytes
    repo.write(name, "content\n")
    c1 = repo.commit("long name")
    res = mine_repo(repo, max_patch_bytes=102)
    r = res.change(c1, name)
    assert r["patch_truncated"] is True
    assert len(r["patch"].encode()) <= 102
    assert "\ufffd" not in r["patch"]
    assert r["patch"] == "" or r["patch"].endswith("\n")


def test_renamed_large_file_is_still_large(git_repo, mine_repo):
    """is_large is a property of the blob (over max_blob_bytes), not of how git printed it."""
    repo = git_repo()
    repo.write("big.txt", "a line of text in a big file\n" * 1000)
    repo.commit("big")
    repo.mv("big.txt", "moved/big.txt")
    moved = repo.commit("move big")
    res = mine_repo(repo, max_blob_bytes=4096)
    r = res.change(moved, "moved/big.txt")
    assert r["status"] == "renamed" and r["similarity"] == 100
    assert r["is_large"] is True


def test_renamed_binary_file_is_still_binary(git_repo, mine_repo):
    repo = git_repo()
    repo.write("img.bin", bytes(range(256)) * 8)
    repo.commit("binary")
    repo.mv("img.bin", "assets/img.bin")
    moved = repo.commit("move binary")
    res = mine_repo(repo)
    r = res.change(moved, "assets/img.bin")
    assert r["status"] == "renamed" and r["is_binary"] is True


def test_one_commit_touching_3000_files(git_repo, mine_repo):
    repo = git_repo()
    n = 3000
    for i in range(n):
        repo.write(f"pkg{i % 10}/mod_{i:04d}.py", f"VALUE = {i}\n")
    added = repo.commit("3000 files")
    repo.mv("pkg0", "moved0")
    for i in range(1, n, 10):
        repo.write(f"pkg1/mod_{i:04d}.py", f"VALUE = {i} + 1\n")
    big = repo.commit("move 300, modify 300")
    res = mine_repo(repo)
    check_history(repo, res, "--all")
    rows = res.changes_of(added)
    assert len(rows) == n == res.commit(added)["files_changed"]
    assert {r["path"] for r in rows} == {f"pkg{i % 10}/mod_{i:04d}.py" for i in range(n)}
    assert all(r["status"] == "added" and r["additions"] == 1 for r in rows)
    assert res.commit(added)["insertions"] == n
    rows = res.changes_of(big)
    assert sorted(r["status"] for r in rows) == ["modified"] * 300 + ["renamed"] * 300
    assert all(r["patch"].startswith("diff --git ") for r in rows)


def test_marker_bytes_in_content_and_diff_in_message(git_repo, mine_repo):
    """The stream parser cuts records at a marker; file content and messages that look like
    markers or patches must not confuse it."""
    repo = git_repo()
    text = "".join(f"plain text line {i}\n" for i in range(500)).encode()
    assert len(text) > 9000
    repo.write("a.txt", "a\n")
    c0 = repo.commit("base")
    tricky = text + b"\x00\x01\x02C" + c0.encode() + b"\x00\n" + b"tail line\n"
    repo.write("tricky.txt", tricky)
    c1 = repo.commit("add tricky content")
    message = (
        "message with a patch\n\ndiff --git a/a.txt b/a.txt\nindex 0000000..1111111 100644\n"
        "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-a\n+b\n:100644 100644 abc def M\ta.txt\n"
    )
    repo.write("a.txt", "b\n")
    c2 = repo.commit(message)
    repo.write("tricky.txt", tricky + b"another \x00\x01\x02C line\n")
    c3 = repo.commit("diff --git a/x b/x")
    repo.write("z.txt", "z\n")
    c4 = repo.commit("last")
    res = mine_repo(repo)
    check_history(repo, res, "--all")
    assert res.shas == [c0, c1, c2, c3, c4]
    t = res.change(c1, "tricky.txt")
    assert t["is_binary"] is False  # the NUL is past git's 8000-byte sniff
    assert t["additions"] == 500 + 2
    assert "\x00\x01\x02C" + c0 in t["patch"]
    assert t["patch_bytes"] == len(t["patch"].encode())
    assert res.commit(c2)["message"] == message.rstrip("\n")
    (r,) = res.changes_of(c2)
    assert (r["path"], r["status"], r["additions"], r["deletions"]) == ("a.txt", "modified", 1, 1)
    assert res.commit(c3)["message"] == "diff --git a/x b/x"
    (r,) = res.changes_of(c3)
    assert (r["path"], r["additions"], r["deletions"]) == ("tricky.txt", 1, 0)
    assert [r["path"] for r in res.changes_of(c4)] == ["z.txt"]
    assert all(c["read_level"] == "full" for c in res.commits)


def test_marker_and_next_sha_in_a_path_and_in_content(git_repo, mine_repo):
    """Commits are read newest first, so a commit's parent is the next record in the stream: a
    path or a file line holding a marker plus the parent's sha must not end the record early."""
    repo = git_repo()
    repo.write("x", "x\n")
    base = repo.commit("base")
    fake = "\x01\x02C" + base  # the next record's marker, minus its leading NUL (a path's end)
    repo.mv("x", fake)
    padding = "".join(f"line {i}\n" for i in range(1200))
    repo.write("content.txt", padding.encode() + b"y\x00\x01\x02C" + base.encode() + b"\x00\n")
    top = repo.commit("rename to a marker-like path, add marker-like content")
    for jobs in (1, 2):
        res = mine_repo(repo, stage=f"s{jobs}", jobs=jobs)
        check_history(repo, res, "--all")
        assert res.shas == [base, top]
        renamed = res.change(top, fake)
        assert (renamed["old_path"], renamed["status"]) == ("x", "renamed")
        assert res.change(top, "content.txt")["additions"] == 1201
        assert [r["path"] for r in res.changes_of(base)] == ["x"]


# -- missing objects ----------------------------------------------------------------------------


@pytest.fixture
def partial_clone(git_repo, tmp_path):
    """A blob-less partial clone of a 13-commit history whose source would serve every blob."""
    src = git_repo("src")
    src.git("config", "uploadpack.allowFilter", "true")
    src.git("config", "uploadpack.allowAnySHA1InWant", "true")
    for i in range(12):
        src.write("a.txt", f"version {i}\n" * 3)
        src.write(f"f{i % 3}.txt", f"file {i}\n")
        src.commit(f"c{i}")
    src.git("commit", "-q", "--allow-empty", "-m", "empty")
    subprocess.run(
        [
            "git",
            "clone",
            "-q",
            "--filter=blob:none",
            "--no-local",
            f"file://{src.path}",
            str(tmp_path / "partial"),
        ],
        check=True,
    )
    dst = GitRepo(tmp_path / "partial", init=False)
    assert dst.git("config", "remote.origin.promisor") == "true"
    assert blob_sha("version 0\n" * 3) not in dst.objects()  # old blobs really are missing
    return dst


def test_partial_clone_never_fetches(partial_clone, mine_repo):
    dst = partial_clone
    before = dst.objects()
    t0 = time.monotonic()
    res = mine_repo(dst)
    assert time.monotonic() - t0 < 20
    assert dst.objects() == before, "the miner fetched objects"
    check_history(dst, res, "--all")
    assert len(res.commits) == 13
    assert res.stats["unreadable_commits"] == 0
    files_level = [c for c in res.commits if c["read_level"] == "files"]
    assert len(files_level) >= 12  # every commit with a change needs a missing blob
    assert all(c["read_level"] in ("full", "files") for c in res.commits)
    for c in files_level:
        rows = res.changes_of(c["sha"])
        assert c["files_changed"] == len(rows)
        assert c["insertions"] is None and c["deletions"] is None
        assert all(r["patch"] is None and r["additions"] is None for r in rows)
    shas = dst.rev_list("--reverse", "--all")
    first = res.changes_of(shas[0])
    assert sorted((r["path"], r["status"]) for r in first) == [
        ("a.txt", "added"),
        ("f0.txt", "added"),
    ]
    assert first[0]["new_blob"] is not None
    assert sorted((r["path"], r["status"]) for r in res.changes_of(shas[5])) == [
        ("a.txt", "modified"),
        ("f2.txt", "modified"),
    ]
    assert res.changes_of(shas[12]) == []  # the empty commit


def test_partial_clone_is_reported_as_partial(partial_clone, mine_repo):
    # git >= 2.2x records a partial clone as remote.<name>.promisor, not extensions.partialClone
    res = mine_repo(partial_clone)
    assert res.stats["partial_clone"] is True


def test_partial_clone_counts_missing_objects(partial_clone, mine_repo, repolm_log):
    res = mine_repo(partial_clone)
    assert res.stats["missing_objects"] > 0
    warnings = [r.getMessage() for r in repolm_log.records if r.levelno == logging.WARNING]
    (warning,) = [w for w in warnings if "could not be read" in w]
    assert not warning.startswith("0 ")


def test_partial_clone_counts_commits_without_patches(partial_clone, mine_repo):
    res = mine_repo(partial_clone)
    files_level = [c for c in res.commits if c["read_level"] == "files"]
    assert res.stats["commits_without_patches"] == len(files_level)


def test_damaged_object_store(git_repo, mine_repo, repolm_log):
    repo = git_repo()
    repo.write("a.txt", "precious v1\n")
    repo.write("b.txt", "b\n")
    c1 = repo.commit("one")
    repo.write("a.txt", "precious v2\n")
    c2 = repo.commit("two")
    repo.write("b.txt", "b2\n")
    c3 = repo.commit("three")
    repo.write("c.txt", "c\n")
    c4 = repo.commit("four")
    lost = blob_sha("precious v1\n")
    obj = repo.loose_object_path(lost)
    assert obj.exists()
    obj.chmod(0o644)
    obj.unlink()

    res = mine_repo(repo)
    check_history(repo, res, "--all")
    assert [res.commit(s)["read_level"] for s in (c1, c2, c3, c4)] == [
        "files",
        "files",
        "full",
        "full",
    ]
    assert res.stats["missing_objects"] == 1
    assert res.stats["commits_without_patches"] == 2
    assert res.stats["unreadable_commits"] == 0
    rows = {r["path"]: r for r in res.changes_of(c2)}
    assert list(rows) == ["a.txt"] and rows["a.txt"]["old_blob"] == lost
    assert rows["a.txt"]["status"] == "modified" and rows["a.txt"]["patch"] is None
    assert res.change(c3, "b.txt")["additions"] == 1
    warnings = [r.getMessage() for r in repolm_log.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "could not be read" in w]) == 1


def test_missing_tree_keeps_metadata(git_repo, mine_repo, repolm_log):
    repo = git_repo()
    repo.write("dir/x.txt", "x1\n")
    repo.write("top.txt", "top\n")
    c1 = repo.commit("one")
    lost_tree = repo.rev_parse(f"{c1}:dir")
    repo.write("dir/x.txt", "x2\n")
    c2 = repo.commit("two")
    repo.write("top.txt", "top 2\n")
    c3 = repo.commit("three")
    repo.loose_object_path(lost_tree).unlink()
    res = mine_repo(repo)
    check_history(repo, res, "--all")
    assert [res.commit(s)["read_level"] for s in (c1, c2, c3)] == ["meta", "meta", "full"]
    for s in (c1, c2):
        c = res.commit(s)
        assert c["files_changed"] is None and c["insertions"] is None
        assert res.changes_of(s) == []
        assert c["message"] in ("one", "two") and c["author_name"] == AUTHOR_NAME
    assert res.stats["commits_without_files"] == 2
    assert res.stats["missing_objects"] >= 1
    assert res.change(c3, "top.txt")["additions"] == 1


def test_empty_repository(git_repo, mine_repo):
    repo = git_repo()
    with pytest.raises(GitError, match="no commits"):
        mine_repo(repo)
    bare = git_repo("bare.git", bare=True)
    with pytest.raises(GitError, match="no commits") as info:
        mine_repo(bare)
    assert isinstance(info.value, RepolmError) and "\n" not in str(info.value)


def test_not_a_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(GitError, match="not a git repository") as info:
        open_repo(plain)
    assert "\n" not in str(info.value)
    with pytest.raises(GitError, match="no such directory"):
        open_repo(tmp_path / "does-not-exist")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(GitError, match="not a directory"):
        open_repo(tmp_path / "file.txt")


# -- parallelism --------------------------------------------------------------------------------


def test_parallel_jobs_give_identical_rows(git_repo, mine_repo):
    repo = git_repo()
    repo.fast_import(linear_history_stream(600))
    repo.git("reset", "-q", "--hard", "main")
    assert repo.count("--all") == 600
    one = mine_repo(repo, stage="jobs1", jobs=1)
    check_history(repo, one, "--all")
    assert one.stats["jobs"] == 1
    for jobs in (2, 3):
        many = mine_repo(repo, stage=f"jobs{jobs}", jobs=jobs)
        assert many.stats["jobs"] == jobs
        assert many.commits == one.commits
        assert many.changes == one.changes
        assert sorted(p.name for p in many.stage_dir.iterdir()) == [
            "changes.parquet",
            "commits.parquet",
            "state.json",
        ]  # no spool files left behind
    assert one.commits[0]["author_tz_offset"] == 60 and one.commits[0]["commit_tz_offset"] == -150
    assert sum(1 for r in one.changes if r["status"] == "deleted") > 0
    assert len(one.changes) == 600


def test_parallel_jobs_with_a_damaged_store(git_repo, mine_repo, tmp_path):
    """A commit that fails in a later (spooled) slice is stepped around like in the first one."""
    repo = git_repo()
    repo.fast_import(linear_history_stream(600))
    # Explode the pack into loose objects so that a single blob can be removed.
    git_dir = repo.path / ".git"
    packs = list((git_dir / "objects" / "pack").glob("*.pack"))
    assert len(packs) == 1
    moved = tmp_path / "pack.pack"
    shutil.move(str(packs[0]), moved)
    for f in (git_dir / "objects" / "pack").iterdir():
        f.unlink()
    repo.git("unpack-objects", "-q", input=moved.read_bytes())
    shas = repo.rev_list("--reverse", "main")
    victim, follower = shas[450], shas[465]  # commits 451 and 466 touch the same file
    path = f"dir{451 % 3}/file{451 % 5}.py"
    lost = repo.rev_parse(f"{victim}:{path}")
    assert repo.rev_parse(f"{follower}~1:{path}") == lost
    repo.loose_object_path(lost).unlink()

    one = mine_repo(repo, stage="jobs1", jobs=1)
    two = mine_repo(repo, stage="jobs2", jobs=2)
    check_history(repo, two, "--all")
    assert two.commits == one.commits and two.changes == one.changes
    levels = {c["sha"]: c["read_level"] for c in two.commits}
    assert levels[victim] == levels[follower] == "files"
    assert sum(1 for lvl in levels.values() if lvl != "full") == 2
    assert two.stats["missing_objects"] == 1 and two.stats["commits_without_patches"] == 2


# -- the user's git configuration must not change what is read -----------------------------------


USER_SETTINGS = [
    "log.showRoot=false",
    "diff.ignoreSubmodules=all",
    "diff.noprefix=true",
    "diff.mnemonicPrefix=true",
    "color.ui=always",
    "color.diff=always",
    "core.quotePath=true",
    "diff.external=/bin/false",
    "log.showSignature=true",
    "diff.submodule=log",
    "diff.renames=copies",
    "diff.renames=false",
    "i18n.logOutputEncoding=ISO-8859-1",
    "diff.relative=true",
    "log.follow=true",
    "log.decorate=full",
    "format.pretty=oneline",
    "log.date=relative",
    "core.abbrev=5",
    "log.abbrevCommit=true",
    "diff.renameLimit=1",
    "pager.log=true",
    "log.mailmap=true",
    "core.bigFileThreshold=1k",
]


@pytest.mark.parametrize("setting", USER_SETTINGS)
def test_user_git_config_does_not_change_rows(setting, git_repo, mine_repo, isolated_env):
    sub = git_repo("sub")
    sub.write("s.txt", "s\n")
    sub_sha = sub.commit("sub")
    repo = git_repo("repo")
    poem = "".join(f"line {i} of a poem that is long enough to rename\n" for i in range(12))
    repo.write("poem.txt", poem)
    repo.write("café/naïve.py", "x = 1\n")
    repo.symlink("link", "poem.txt")
    repo.write(".mailmap", "Mapped Name <mapped@example.com> <ada@example.com>\n")
    repo.commit("root")
    repo.mv("poem.txt", "docs/poem.txt")
    repo.write("café/naïve.py", "x = 2\n")
    repo.git("update-index", "--add", "--cacheinfo", f"160000,{sub_sha},vendor/sub")
    repo.commit("rename, edit, submodule")
    repo.write("big.txt", "a line of text\n" * 200)
    repo.commit("a 3 kB file")
    baseline = mine_repo(repo, stage="baseline")

    key, _, value = setting.partition("=")
    section, _, name = key.rpartition(".")
    with open(isolated_env / ".gitconfig", "a") as f:
        f.write(f"[{section}]\n\t{name} = {value}\n")
    assert repo.git("config", "--global", key) == value
    res = mine_repo(repo, stage="configured")
    assert res.commits == baseline.commits
    assert res.changes == baseline.changes
