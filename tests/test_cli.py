"""The `repolm` command as a user runs it: exit codes, one-line errors, outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from repolm import __version__


def repolm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "repolm", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ.copy(),
        timeout=120,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def repo(git_repo):
    r = git_repo("proj")
    r.write("src/main.py", "print('hi')\n")
    r.commit("first")
    r.write("src/main.py", "print('hello')\n")
    r.commit("second")
    return r


def test_version_and_help() -> None:
    assert repolm("--version").stdout.strip() == f"repolm {__version__}"
    out = repolm("--help").stdout
    for command in ("run", "stages", "mine", "chunk", "filter", "config", "doctor"):
        assert command in out
    assert "--continue-on-error" in repolm("run", "--help").stdout


def test_mine_writes_tables_and_manifest_in_default_out(repo, tmp_path: Path) -> None:
    proc = repolm("mine", "--repo", str(repo.path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "runs" / "proj"
    assert pq.read_table(out / "mine" / "commits.parquet").num_rows == 2
    assert pq.read_table(out / "mine" / "changes.parquet").num_rows == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["mine"]["status"] == "done"
    assert list((out / "logs").glob("mine-*.log"))
    assert "results:" in proc.stdout

    again = repolm("run", "--repo", str(repo.path), "--until", "mine", cwd=tmp_path)
    assert again.returncode == 0 and "cached" in again.stdout
    stages = repolm("stages", "--repo", str(repo.path), cwd=tmp_path)
    assert stages.returncode == 0
    assert "cached" in stages.stdout and "not built" in stages.stdout
    repo.write("src/other.py", "x = 1\n")
    repo.commit("third")
    assert "stale" in repolm("stages", "--out", str(out)).stdout


def test_run_inside_a_subdirectory_uses_the_top_level(repo, tmp_path: Path) -> None:
    proc = repolm(
        "run", "--repo", str(repo.path / "src"), "--out", str(tmp_path / "o"), "--until", "mine"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["repo_path"] == str(repo.path)


def test_not_a_repository(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    assert_one_line_error(repolm("run", "--repo", str(tmp_path / "plain")), "not a git repository")


def test_missing_path_and_file_path(tmp_path: Path) -> None:
    assert_one_line_error(repolm("mine", "--repo", str(tmp_path / "nope")), "no such directory")
    (tmp_path / "f").write_text("x")
    assert_one_line_error(repolm("mine", "--repo", str(tmp_path / "f")), "is not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory")
def test_unreadable_path(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        assert_one_line_error(repolm("mine", "--repo", str(locked)), "permission denied")
    finally:
        locked.chmod(0o755)


def test_empty_repository(git_repo, tmp_path: Path) -> None:
    empty = git_repo("empty")
    proc = repolm("run", "--repo", str(empty.path), "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "has no commits")
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["stages"]["mine"]["status"] == "failed"


def test_bad_stage_names(repo) -> None:
    assert_one_line_error(
        repolm("run", "--repo", str(repo.path), "--stage", "mien"), "unknown stage 'mien'", "mine"
    )
    assert_one_line_error(
        repolm("run", "--repo", str(repo.path), "--until", "index"),
        "stage 'index' is not built yet",
    )


def test_config_errors(repo, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mine:\n  jbos: 2\n")
    proc = repolm("run", "--repo", str(repo.path), "--config", str(cfg))
    assert_one_line_error(proc, "unknown config key 'mine.jbos'", str(cfg), "did you mean 'jobs'")
    assert_one_line_error(repolm("config", "show", "--preset", "nope"), "unknown preset 'nope'")
    assert_one_line_error(repolm("config", "show", "--set", "mine.jobs=many"), "'mine.jobs'")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = repolm("--debug", "mine", "--repo", str(tmp_path / "nope"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_config_show(tmp_path: Path) -> None:
    proc = repolm("config", "show", "--set", "mine.jobs=3")
    assert proc.returncode == 0
    assert "jobs: 3" in proc.stdout and "max_patch_bytes" in proc.stdout


def test_doctor_runs() -> None:
    proc = repolm("doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for check in ("python", "git", "pyarrow", "disk"):
        assert check in proc.stdout


def test_too_short_a_history_to_split(repo, tmp_path: Path) -> None:
    # by default such a history trains on every commit (tests/test_no_future.py); CI-style
    # runs ask for a future and get the one-line error
    proc = repolm(
        "run",
        "--repo",
        str(repo.path),
        "--out",
        str(tmp_path / "o"),
        "--set",
        "split.require_future=true",
    )
    assert_one_line_error(proc, "too few to split", "split.cutoff")


def test_chunk_command(git_repo, tmp_path: Path) -> None:
    r = git_repo("five")
    for i in range(6):
        r.write(f"m{i}.py", f"def f{i}():\n    return {i}\n")
        r.commit(f"c{i}")
    proc = repolm("chunk", "--repo", str(r.path), "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    rows = pq.read_table(tmp_path / "o" / "chunk" / "chunks.parquet").to_pylist()
    assert {r["qualified_name"] for r in rows if r["change_type"] == "new_function"} == {
        f"f{i}" for i in range(6)
    }
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["split"]["commits"] == {"train": 4, "val": 1, "test": 1}
