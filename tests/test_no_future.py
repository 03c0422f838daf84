"""A repository that cannot hold out a future still gets a model: too few commits, or later
commits all filtered out, train on every commit with one warning; the evaluations on the
future are skipped and say why; `split.require_future` restores the error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_MODEL, GitRepo
from repolm.config import load_config
from repolm.config.schema import EvalConfig
from repolm.errors import RepolmError
from repolm.eval.stage import held_out_splits, skipped_future, summary
from repolm.pipeline.runner import run_pipeline
from repolm.report.html import ReportInputs, render_report

TINY = [
    "tokenize.vocab_size=400",
    "build.seq_len=64",
    "build.batch_size=4",
    *TINY_MODEL,
    "train.micro_batch=4",
    "train.max_steps=4",
    "train.eval_every=2",
    "train.eval_sequences=4",
    "train.hardware_every_s=0.2",
]
TOO_FEW = (
    "2 commits are too few to hold out a future (at least 3 are needed for 10% test and "
    "5% validation)"
)


def young(path: Path) -> GitRepo:
    r = GitRepo(path)
    r.write("calc.py", "def add(a, b):\n    return a + b\n")
    r.commit("add")
    r.write("calc.py", "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n")
    r.commit("mul")
    return r


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repolm", *args], capture_output=True, text=True)


def test_two_commits_train_a_model_evaluate_what_they_can_and_report(tmp_path: Path) -> None:
    repo = young(tmp_path / "repo")
    out = tmp_path / "run"
    sets = [a for s in TINY for a in ("--set", s)]
    r = cli("run", "--repo", str(repo.path), "--out", str(out), *sets)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and TOO_FEW + ": training on every commit" in warnings[0]
    # every commit trained, the snapshot at HEAD, no validation
    stats = json.loads((out / "dataset" / "stats.json").read_text())
    assert stats["cutoff"]["future"] is False and stats["cutoff"]["cutoff_sha"] == repo.head
    assert stats["cutoff"]["commits"] == {"train": 2, "val": 0, "test": 0}
    seqs = stats["sequences"]
    assert seqs["train"] > 0 == seqs["val"] == seqs["test"]
    trained = json.loads((out / "train" / "report.json").read_text())["models"]["main"]
    assert trained["steps"] == 4 and trained["validation"]["sequences"] == 0
    assert trained["validation"]["evaluations"] == []
    assert trained["early_stopping"]["best_step"] is None
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out / "models" / "main").num_parameters() > 0
    # the evaluations on the future are skipped and say why; the suite still runs
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["future"] == {
        "held_out": False,
        "reason": TOO_FEW,
        "commits_needed": 3,
        "skipped": ["bits_per_byte", "completion", "next_change", "commit_messages"],
    }
    main = report["models"]["main"]
    assert main["bits_per_byte"] == {} and "tasks" not in main and "reasoning" in main["suites"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "This repository holds out no future:</b> " + TOO_FEW in page
    assert "No evaluation on the future: " + TOO_FEW in page
    assert "no evaluation on the future: " + TOO_FEW in r.stdout


def test_require_future_keeps_the_one_line_error(tmp_path: Path) -> None:
    repo = young(tmp_path / "repo")
    sets = [a for s in [*TINY, "split.require_future=true"] for a in ("--set", s)]
    r = cli("run", "--repo", str(repo.path), "--out", str(tmp_path / "run"), *sets)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: 2 commits are too few to split 10% test and 5% validation with any training "
        "left — lower split.test_fraction / split.val_fraction or set split.cutoff, or unset "
        "split.require_future to train on every commit"
    ]
    assert not (tmp_path / "run" / "models").exists()


def filtered_future(path: Path) -> GitRepo:
    """10 commits of code, then 3 that touch only a vendored file (which the filter drops)."""
    r = GitRepo(path)
    for i in range(10):
        r.write(f"calc{i % 3}.py", f"def op_{i}(a, b):\n    return a * {i} + b\n")
        r.commit(f"op {i}")
    for i in range(3):
        r.write("vendor/lib.py", f"x = {i}\n")
        r.commit(f"vendor {i}")
    return r


def test_a_future_filtered_away_trains_on_every_commit(tmp_path: Path, repolm_log) -> None:
    repo = filtered_future(tmp_path / "repo")
    out = tmp_path / "run"
    run_pipeline(out, repo.path, load_config(overrides=TINY), until="build")
    stats = json.loads((out / "dataset" / "stats.json").read_text())
    reason = (
        "the validation split of the dataset is empty after filtering (10 train, "
        "1 validation, 2 test commits)"
    )
    assert stats["cutoff"]["future"] is False and stats["cutoff"]["no_future"] == reason
    assert stats["cutoff"]["commits"] == {"train": 13, "val": 0, "test": 0}
    assert stats["sequences"]["val"] == stats["sequences"]["test"] == 0
    assert stats["eval"]["future_records"] == stats["eval"]["completion"] == 0
    warned = [r.getMessage() for r in repolm_log.records if r.levelname == "WARNING"]
    assert warned == [
        reason + ": training on every commit instead; the evaluations on the "
        "future are skipped (split.require_future=true makes this an error)"
    ]
    strict = load_config(overrides=[*TINY, "split.require_future=true"])
    with pytest.raises(RepolmError, match="the validation split of the dataset is empty"):
        run_pipeline(tmp_path / "strict", repo.path, strict, until="build")


# -- the pieces ---------------------------------------------------------------------------------

NO_FUTURE = {
    "cutoff_sha": "a" * 40,
    "cutoff_time": "2024-01-01T00:00:00+00:00",
    "val_end_time": None,
    "commits": {"train": 2, "val": 0, "test": 0},
    "future": False,
    "no_future": TOO_FEW,
    "commits_needed": 3,
}


def test_eval_skips_only_the_future() -> None:
    cfg = EvalConfig()
    assert held_out_splits(NO_FUTURE, cfg) == []
    split = {"commits": {"train": 8, "val": 0, "test": 2}, "future": True}
    assert held_out_splits(split, cfg) == ["test"]  # split.val_fraction 0: no validation
    assert held_out_splits({}, cfg) == ["test", "val"]  # a run from before the flag
    report = {"cutoff": NO_FUTURE, "future": skipped_future(NO_FUTURE, cfg), "models": {}}
    assert report["future"]["reason"] == TOO_FEW and report["future"]["commits_needed"] == 3
    assert summary(report)["future"]["held_out"] is False


def test_the_page_says_there_is_no_future() -> None:
    future = skipped_future(NO_FUTURE, EvalConfig())
    page = render_report(
        ReportInputs(
            run_dir="/run",
            manifest={"repo_path": "/r", "split": NO_FUTURE},
            dataset_stats={"cutoff": NO_FUTURE},
            train={"models": {"main": {"steps": 4, "validation": {"sequences": 0}}}},
            eval={
                "cutoff": NO_FUTURE,
                "future": future,
                "models": {"main": {"bits_per_byte": {}}},
                "timings": {},
            },
        )
    )
    assert "This repository holds out no future:</b> " + TOO_FEW in page
    assert "No evaluation on the future: " + TOO_FEW in page
    assert "none: no validation data (no future held out)" in page
    assert "none: every commit trains" in page
