"""Run stages in order; skip those whose fingerprint is unchanged and whose outputs are intact.

A stage's fingerprint hashes its code version, its config sections, its upstream stages' output
digests, for stages that read the repository the repository's refs, and the contents of the
local files its config points at (a base model's tokenizer files; suites, shipped ones too).
A stage with an unchanged fingerprint and untouched outputs is reported as cached and not run
again.
"""

from __future__ import annotations

import hashlib
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repolm import logs
from repolm.config import ResolvedConfig
from repolm.errors import RepolmError, StageFailed
from repolm.fsutil import file_digest, json_digest, write_text_atomic
from repolm.gitrepo import open_repo
from repolm.layout import RunLayout
from repolm.logs import log
from repolm.pipeline import manifest as mf
from repolm.pipeline.registry import PLANNED, REGISTRY
from repolm.stage import PathInput, Stage, StageContext, StageResult


@dataclass
class Outcome:
    stage: str
    status: str  # done | cached | failed | skipped
    seconds: float = 0.0
    summary: str = ""
    error: BaseException | None = field(default=None, repr=False)


def select_stages(
    only: list[str] | None = None, until: str | None = None, registry: dict[str, Stage] = REGISTRY
) -> list[Stage]:
    """The stages to run, in order: `only` with their upstream stages, or all up to `until`."""
    for name in [*(only or []), *([until] if until else [])]:
        check_stage_name(name, registry)
    ordered = list(registry.values())
    if until:
        ordered = ordered[: [s.name for s in ordered].index(until) + 1]
    if not only:
        return ordered
    wanted: set[str] = set()
    stack = list(only)
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            stack.extend(registry[name].inputs)
    return [s for s in ordered if s.name in wanted]


def check_stage_name(name: str, registry: dict[str, Stage] = REGISTRY) -> None:
    if name in registry:
        return
    known = ", ".join(registry)
    if name in PLANNED:
        raise RepolmError(f"stage '{name}' is not built yet", f"stages available now: {known}")
    raise RepolmError(f"unknown stage '{name}'", f"choose from: {known}")


def refs_digest(repo_path: Path) -> str:
    """Every ref and HEAD: any commit, fetch, push or force-push changes it."""
    repo = open_repo(repo_path)
    h = hashlib.sha256(str(repo.path).encode())
    h.update(repo.run("for-each-ref", "--format=%(objectname) %(refname)"))
    h.update((repo.head or "").encode())
    return h.hexdigest()


def fingerprint(
    stage: Stage, config: dict[str, Any], stages_state: dict[str, Any], refs: str | None
) -> str:
    upstream = {
        name: {
            rel: meta.get("sha256")
            for rel, meta in ((stages_state.get(name) or {}).get("outputs") or {}).items()
        }
        for name in stage.inputs
    }
    parts = {
        "stage": stage.name,
        "version": stage.version,
        "config": {section: config.get(section) for section in stage.config},
        "upstream": upstream,
        "refs": refs if stage.reads_repo else None,
    }
    if stage.path_inputs:  # only then, so other stages' fingerprints stay as they were
        parts["paths"] = {
            p.key: _input_digest(p, _config_value(config, p.key)) for p in stage.path_inputs
        }
    return json_digest(parts)


def _input_digest(item: PathInput, value: Any) -> Any:
    if isinstance(value, list):
        return [_input_digest(item, v) for v in value]
    return path_digest(item.path(value) if value else value, item.files)


def path_digest(value: str | None, files: tuple[str, ...]) -> str | dict[str, str] | None:
    """sha256 of the file `value` names, or of each file in that directory matching `files`
    (by relative path); None when unset, "missing" when nothing is there."""
    if not value:
        return None
    path = Path(value)
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        return "missing"
    found = {f for pattern in files for f in path.glob(pattern) if f.is_file()}
    return {f.relative_to(path).as_posix(): file_digest(f) for f in sorted(found)}


def _config_value(config: dict[str, Any], key: str) -> Any:
    """The value at a dotted key; a `*` part stands for every entry of a mapping (a list)."""
    value: Any = config
    parts = key.split(".")
    for i, part in enumerate(parts):
        if part == "*":
            rest = ".".join(parts[i + 1 :])
            entries = value.values() if isinstance(value, dict) else ()
            return [_config_value(v, rest) if rest else v for v in entries]
        value = value.get(part) if isinstance(value, dict) else None
    return value


def outputs_intact(out: Path, recorded: dict[str, Any] | None) -> bool:
    if not recorded:
        return False
    for rel, meta in recorded.items():
        try:
            st = (out / rel).stat()
        except OSError:
            return False
        if st.st_size != meta.get("bytes") or st.st_mtime_ns != meta.get("mtime_ns"):
            return False
    return True


def stage_state(
    stage: Stage, entry: dict[str, Any] | None, current_fp: str | None, out: Path
) -> str:
    """done / cached / stale / failed / not run, as `repolm stages` shows it."""
    if not entry:
        return "not run"
    if entry.get("status") == "failed":
        return "failed"
    if entry.get("status") == "skipped":
        return "not run"
    if (current_fp is not None and entry.get("fingerprint") != current_fp) or not outputs_intact(
        out, entry.get("outputs")
    ):
        return "stale"
    return entry.get("status", "done")


def run_pipeline(
    out: Path,
    repo_path: Path,
    resolved: ResolvedConfig,
    only: list[str] | None = None,
    until: str | None = None,
    force: bool = False,
    continue_on_error: bool = False,
    registry: dict[str, Stage] = REGISTRY,
    options: dict[str, Any] | None = None,
) -> list[Outcome]:
    stages = select_stages(only, until, registry)
    rank, world = launch_rank()
    main = rank == 0
    out.mkdir(parents=True, exist_ok=True)
    config = resolved.config.model_dump(mode="json")
    manifest = mf.load(out)
    manifest.setdefault("created", mf.now())
    manifest.update(mf.environment())
    manifest["config"] = {
        "hash": resolved.digest,
        "preset": resolved.preset,
        "sources": resolved.sources,
        "file": RunLayout(out).run_config.name,
    }
    manifest["repo_path"] = str(repo_path)
    manifest.setdefault("stages", {})
    if main:
        write_text_atomic(RunLayout(out).run_config, resolved.to_yaml())
    ctx = StageContext(
        out=out, config=resolved.config, repo_path=repo_path, options=dict(options or {})
    )
    # --force reruns the stages asked for; their upstream stages run only if stale
    forced = ({*only} if only else {s.name for s in stages}) if force else set()
    refs = refs_digest(repo_path) if any(s.reads_repo for s in stages) else None

    outcomes: list[Outcome] = []
    failed: set[str] = set()
    for stage in stages:
        blocked = [name for name in stage.inputs if name in failed]
        if blocked:
            log.warning(f"{stage.name}: skipped, upstream stage {', '.join(blocked)} failed")
            failed.add(stage.name)
            outcomes.append(Outcome(stage.name, "skipped"))
            continue
        if failed and not continue_on_error:
            break
        ctx.force = stage.name in forced
        if world > 1 and not stage.distributed:
            _require_cached(stage, ctx, config, manifest, refs)
        outcome = _run_one(stage, ctx, config, manifest, refs)
        outcomes.append(outcome)
        if main:
            mf.save(out, manifest)
        if outcome.status == "failed":
            failed.add(stage.name)
            if not continue_on_error:
                break
    errors = [o.error for o in outcomes if o.error is not None]
    if errors:
        if len(errors) == 1 or not continue_on_error:
            raise errors[0]
        names = ", ".join(o.stage for o in outcomes if o.status == "failed")
        raise StageFailed(f"stages failed: {names}", "see the log in OUT/logs/ and manifest.json")
    return outcomes


def launch_rank() -> tuple[int, int]:
    """(rank, world size) under torchrun / accelerate launch; (0, 1) otherwise."""
    return logs.launch_rank(), int(os.environ.get("WORLD_SIZE", "1"))


def _require_cached(
    stage: Stage,
    ctx: StageContext,
    config: dict[str, Any],
    manifest: dict[str, Any],
    refs: str | None,
) -> None:
    """Under a multi-process launch only distributed stages run; the others must be cached."""
    entry = manifest["stages"].get(stage.name) or {}
    fp = fingerprint(stage, config, manifest["stages"], refs)
    if (
        ctx.force
        or entry.get("fingerprint") != fp
        or not outputs_intact(ctx.out, entry.get("outputs"))
    ):
        raise RepolmError(
            f"stage '{stage.name}' must run before a multi-process launch (it runs in one process)",
            "run 'repolm run --until build' with the same options first, then launch training",
        )


def _run_one(
    stage: Stage,
    ctx: StageContext,
    config: dict[str, Any],
    manifest: dict[str, Any],
    refs: str | None,
) -> Outcome:
    states = manifest["stages"]
    entry = states.get(stage.name) or {}
    fp = fingerprint(stage, config, states, refs)
    if (
        not ctx.force
        and entry.get("status") in ("done", "cached")
        and entry.get("fingerprint") == fp
        and outputs_intact(ctx.out, entry.get("outputs"))
    ):
        entry["status"] = "cached"
        log.info(f"{stage.name}: cached ({entry.get('summary', '')})")
        return Outcome(stage.name, "cached", 0.0, entry.get("summary", ""))

    log.info(f"{stage.name}: running")
    started, t0 = mf.now(), time.monotonic()
    try:
        result: StageResult = stage.load()(ctx)
    except Exception as e:  # recorded in the manifest, re-raised by run_pipeline
        seconds = time.monotonic() - t0
        states[stage.name] = {
            "status": "failed",
            "fingerprint": fp,
            "started": started,
            "seconds": round(seconds, 3),
            "error": str(e),
        }
        log.debug("".join(traceback.format_exception(e)))
        if not isinstance(e, RepolmError):
            log.error(f"{stage.name}: failed: {type(e).__name__}: {e}")
        return Outcome(stage.name, "failed", seconds, error=e)
    seconds = time.monotonic() - t0
    outputs = {}
    for rel in (*stage.outputs, *result.outputs):
        path = ctx.out / rel
        st = path.stat()
        outputs[rel] = {
            "bytes": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "sha256": file_digest(path),
        }
    states[stage.name] = {
        "status": "done",
        "fingerprint": fp,
        "started": started,
        "seconds": round(seconds, 3),
        "summary": result.summary,
        "outputs": outputs,
        "stats": result.stats,
    }
    manifest.update(result.manifest)
    log.info(f"{stage.name}: done in {seconds:.1f}s ({result.summary})")
    return Outcome(stage.name, "done", seconds, result.summary)
