"""The train stage: every model the config declares, one after another, each on its own data
mix, each saved under OUT/models/<name>/ with its report under OUT/train/<name>/."""

from __future__ import annotations

from typing import Any

from repolm.dataset.plan import read_stats
from repolm.fsutil import write_json_atomic
from repolm.stage import StageContext, StageResult
from repolm.train.loop import train_model
from repolm.train.spec import run_spec


def run_stage(ctx: StageContext) -> StageResult:
    """Train every model of the config; their weights are the stage's outputs too."""
    resume = ctx.options.get("resume", "auto")
    if ctx.force:
        resume = "never"
    stats = read_stats(ctx.layout)
    reports: dict[str, Any] = {}
    for name, mc in ctx.config.models.items():
        spec = run_spec(ctx.layout, ctx.config, name, mc, stats, resume)
        reports[name] = train_model(spec)
    summary = _summary(reports)
    write_json_atomic(ctx.layout.train_report, {"models": reports})
    brief = {name: _brief(r) for name, r in reports.items()}
    # the weights are outputs too: deleting or replacing them makes the stage stale
    files = [p for name in reports for p in ctx.layout.model_dir(name).rglob("*.safetensors")]
    weights = sorted(p.relative_to(ctx.out).as_posix() for p in files)
    return StageResult(
        stats={"models": brief},
        summary=summary,
        manifest={"models": brief},
        outputs=tuple(weights),
    )


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    final = report["validation"]["final"] or {}
    best = report["validation"]["best"] or {}
    return {
        "path": report["model_dir"],
        "parameters": report["parameters"],
        "steps": report["steps"],
        "tokens_seen": report["tokens_seen"],
        "val_loss": final.get("loss"),
        "best_val_loss": best.get("loss"),
        "unigram_val_loss": report["validation"]["unigram_loss"],
        "stopped": report["early_stopping"]["stopped"],
        "seconds": report["seconds"],
    }


def _summary(reports: dict[str, Any]) -> str:
    parts = []
    for name, r in reports.items():
        b = _brief(r)
        loss = b["best_val_loss"] if b["best_val_loss"] is not None else b["val_loss"]
        uni = b["unigram_val_loss"]
        parts.append(
            f"{name}: "
            + (
                "no validation data"
                if loss is None and uni is None
                else "validation loss " + ("–" if loss is None else f"{loss:.3f}")
            )
            + (f" (unigram {uni:.3f})" if uni is not None else "")
            + f", {b['steps']:,} steps, {b['stopped']} → {b['path']}"
        )
    return "; ".join(parts)
