"""The stage pipeline: fingerprints, cache hits and invalidation, failures, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repolm.config import load_config
from repolm.errors import RepolmError, StageFailed
from repolm.pipeline.registry import PLANNED, REGISTRY
from repolm.pipeline.runner import run_pipeline, select_stages, stage_state
from repolm.stage import PathInput, Stage, StageContext, StageResult

CALLS: list[str] = []


def stage_a(ctx: StageContext) -> StageResult:
    CALLS.append("a")
    (ctx.out / "a").mkdir(exist_ok=True)
    (ctx.out / "a" / "out.txt").write_text(f"a {ctx.config.mine.max_patch_bytes}")
    return StageResult(stats={"n": 1}, summary="a ok")


def stage_b(ctx: StageContext) -> StageResult:
    CALLS.append("b")
    (ctx.out / "b.txt").write_text((ctx.out / "a" / "out.txt").read_text() + " b")
    return StageResult(summary="b ok")


def stage_c(ctx: StageContext) -> StageResult:
    CALLS.append("c")
    (ctx.out / "c.txt").write_text("c")
    return StageResult(summary="c ok")


def stage_boom(ctx: StageContext) -> StageResult:
    CALLS.append("boom")
    raise ValueError("kaboom")


def _registry(fail_a: bool = False) -> dict[str, Stage]:
    a_entry = f"{__name__}:stage_boom" if fail_a else f"{__name__}:stage_a"
    stages = [
        Stage("a", a_entry, outputs=("a/out.txt",), config=("mine",)),
        Stage("b", f"{__name__}:stage_b", inputs=("a",), outputs=("b.txt",)),
        Stage("c", f"{__name__}:stage_c", outputs=("c.txt",)),
    ]
    return {s.name: s for s in stages}


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


@pytest.fixture
def repo(git_repo):
    r = git_repo()
    r.write("a.txt", "x\n")
    r.commit("first")
    return r


def test_cache_hit_then_invalidation_by_config(repo, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = load_config()
    first = run_pipeline(out, repo.path, cfg, registry=_registry())
    assert [o.status for o in first] == ["done", "done", "done"]
    second = run_pipeline(out, repo.path, cfg, registry=_registry())
    assert [o.status for o in second] == ["cached", "cached", "cached"]
    assert CALLS == ["a", "b", "c"]

    # A change in a's config section re-runs a, and b because a's output changed; c is untouched.
    CALLS.clear()
    third = run_pipeline(
        out, repo.path, load_config(overrides=["mine.max_patch_bytes=7"]), registry=_registry()
    )
    assert [o.status for o in third] == ["done", "done", "cached"]
    assert (out / "b.txt").read_text() == "a 7 b"


def test_identical_upstream_output_keeps_downstream_cached(repo, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_pipeline(out, repo.path, load_config(), registry=_registry())
    CALLS.clear()
    outcomes = run_pipeline(
        out, repo.path, load_config(), force=True, only=["a"], registry=_registry()
    )
    assert [o.status for o in outcomes] == ["done"]
    outcomes = run_pipeline(out, repo.path, load_config(), registry=_registry())
    assert [o.status for o in outcomes] == ["cached", "cached", "cached"]


def test_force_reruns_only_the_stages_asked_for(repo, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_pipeline(out, repo.path, load_config(), registry=_registry())
    CALLS.clear()
    outcomes = run_pipeline(
        out, repo.path, load_config(), force=True, only=["b"], registry=_registry()
    )
    assert [(o.stage, o.status) for o in outcomes] == [("a", "cached"), ("b", "done")]
    assert CALLS == ["b"]
    CALLS.clear()
    outcomes = run_pipeline(out, repo.path, load_config(), force=True, registry=_registry())
    assert [o.status for o in outcomes] == ["done", "done", "done"]


def test_tampered_or_missing_output_reruns(repo, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_pipeline(out, repo.path, load_config(), registry=_registry())
    (out / "c.txt").unlink()
    CALLS.clear()
    outcomes = run_pipeline(out, repo.path, load_config(), registry=_registry())
    assert [o.status for o in outcomes] == ["cached", "cached", "done"]
    assert CALLS == ["c"]


def test_files_named_in_the_config_are_in_the_fingerprint(repo, tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "tokenizer.json").write_text("{}")
    (base / "model.safetensors").write_text("weights")
    files = PathInput("tokenize.base_model", ("tokenizer*.json",))
    reg = {"c": Stage("c", f"{__name__}:stage_c", outputs=("c.txt",), path_inputs=(files,))}
    cfg = load_config(overrides=[f"tokenize.base_model={base}"])

    def status() -> str:
        return run_pipeline(tmp_path / "run", repo.path, cfg, registry=reg)[0].status

    assert [status(), status()] == ["done", "cached"]
    (base / "model.safetensors").write_text("other weights")  # matches no pattern
    assert status() == "cached"
    (base / "tokenizer.json").write_text('{"changed": true}')
    assert status() == "done"
    (base / "tokenizer_config.json").write_text("{}")  # a new file counts too
    assert [status(), status()] == ["done", "cached"]
    (base / "tokenizer_config.json").unlink()
    assert status() == "done"


def test_a_list_of_files_and_builtin_names_is_in_the_fingerprint(repo, tmp_path: Path) -> None:
    from repolm.pipeline.runner import _input_digest

    mine = tmp_path / "mine.yaml"
    mine.write_text("a")
    item = PathInput("eval.suites", resolve="repolm.eval.behaviour:suite_path")
    first = _input_digest(item, ["reasoning", str(mine)])
    shipped = _input_digest(item, ["reasoning"])[0]
    assert isinstance(shipped, str) and shipped != "missing"  # the shipped file's digest
    mine.write_text("b")
    second = _input_digest(item, ["reasoning", str(mine)])
    assert second == [shipped, _input_digest(item, str(mine))] and second != first
    assert _input_digest(item, ["no-such-suite"]) == ["missing"]


def test_failure_stops_or_continues(repo, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="kaboom"):
        run_pipeline(out, repo.path, load_config(), registry=_registry(fail_a=True))
    assert CALLS == ["boom"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["a"]["status"] == "failed"
    assert "kaboom" in manifest["stages"]["a"]["error"]

    CALLS.clear()
    with pytest.raises(ValueError, match="kaboom"):
        run_pipeline(
            out, repo.path, load_config(), continue_on_error=True, registry=_registry(fail_a=True)
        )
    assert CALLS == ["boom", "c"]  # b depends on a: skipped; c is independent: ran
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["c"]["status"] == "done"
    assert "b" not in manifest["stages"]


def test_several_failures_end_non_zero(repo, tmp_path: Path) -> None:
    stages = {
        "x": Stage("x", f"{__name__}:stage_boom"),
        "y": Stage("y", f"{__name__}:stage_boom"),
    }
    with pytest.raises(StageFailed, match="stages failed: x, y") as e:
        run_pipeline(
            tmp_path / "run", repo.path, load_config(), continue_on_error=True, registry=stages
        )
    assert e.value.exit_code != 0


def test_select_stages() -> None:
    reg = _registry()
    assert [s.name for s in select_stages(["b"], registry=reg)] == ["a", "b"]
    assert [s.name for s in select_stages(until="b", registry=reg)] == ["a", "b"]
    with pytest.raises(RepolmError, match="unknown stage 'nope'"):
        select_stages(["nope"], registry=reg)
    with pytest.raises(RepolmError, match="stage 'index' is not built yet"):
        select_stages(["index"])
    assert list(REGISTRY)[0] == "mine"


def test_registry_follows_the_planned_order() -> None:
    """The stages run in the product's order, each reading only stages before it."""
    assert [n for n in PLANNED if n in REGISTRY] == list(REGISTRY)
    for i, stage in enumerate(REGISTRY.values()):
        assert set(stage.inputs) <= set(list(REGISTRY)[:i]), stage.name


def test_mine_stage_cached_until_refs_move(repo, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = load_config()
    assert run_pipeline(out, repo.path, cfg, until="mine")[0].status == "done"
    assert run_pipeline(out, repo.path, cfg, until="mine")[0].status == "cached"
    repo.write("b.txt", "y\n")
    repo.commit("second")
    outcome = run_pipeline(out, repo.path, cfg, until="mine")[0]
    assert outcome.status == "done"
    manifest = json.loads((out / "manifest.json").read_text())
    mine = manifest["stages"]["mine"]
    assert mine["stats"]["commits"] == 2 and mine["stats"]["new_commits"] == 1
    repo.git("tag", "v1")  # a new ref, no new commit: still re-runs (refs are in the key)
    assert run_pipeline(out, repo.path, cfg, until="mine")[0].status == "done"


def test_manifest_contents(repo, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_pipeline(out, repo.path, load_config(), until="mine")
    m = json.loads((out / "manifest.json").read_text())
    assert m["repolm_version"]
    assert m["dependencies"]["pyarrow"]
    assert m["config"]["hash"] == load_config().digest and m["config"]["preset"] == "tiny-cpu"
    assert (out / "config.yaml").is_file()
    r = m["repository"]
    assert r["commits"] == 1 and r["branches"] == 1 and r["tags"] == 0 and r["authors"] == 1
    assert r["first_commit_time"] and r["last_commit_time"]
    assert r["languages_at_head"] == {"Text": 2}
    st = m["stages"]["mine"]
    assert st["status"] == "done" and st["seconds"] >= 0 and st["started"]
    assert set(st["outputs"]) == {"mine/commits.parquet", "mine/changes.parquet"}
    assert all(len(o["sha256"]) == 64 for o in st["outputs"].values())
    assert not list(out.glob("**/*.tmp")), "temporary files left behind"


def test_stage_state_labels(repo, tmp_path: Path) -> None:
    out = tmp_path / "run"
    reg = _registry()
    run_pipeline(out, repo.path, load_config(), registry=reg)
    m = json.loads((out / "manifest.json").read_text())
    a = reg["a"]
    fp = m["stages"]["a"]["fingerprint"]
    assert stage_state(a, m["stages"]["a"], fp, out) == "done"
    assert stage_state(a, m["stages"]["a"], "other", out) == "stale"
    assert stage_state(a, None, fp, out) == "not run"
    assert stage_state(a, {"status": "failed"}, fp, out) == "failed"
    (out / "a" / "out.txt").write_text("edited by hand")
    assert stage_state(a, m["stages"]["a"], fp, out) == "stale"


def test_outputs_are_ordinary_files(repo, tmp_path: Path) -> None:
    import os

    out = tmp_path / "run"
    run_pipeline(out, repo.path, load_config(), until="mine")
    mask = os.umask(0)
    os.umask(mask)
    for rel in ("manifest.json", "config.yaml", "mine/commits.parquet", "mine/changes.parquet"):
        assert (out / rel).stat().st_mode & 0o777 == 0o666 & ~mask, rel
