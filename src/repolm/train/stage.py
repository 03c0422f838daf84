"""The train stage: every model the config declares, one after another, each on its own data
mix, each saved under OUT/models/<name>/ with its report under OUT/train/<name>/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repolm.config.schema import Config, ModelConfig
from repolm.dataset.plan import read_stats
from repolm.errors import RepolmError
from repolm.fsutil import file_digest, json_digest, write_json_atomic
from repolm.stage import StageContext, StageResult

# TrainConfig keys that change how a run is watched or stopped, not what it computes: a
# checkpoint made with other values of these is still resumed.
NOT_IN_FINGERPRINT = (
    "max_minutes", "checkpoint_every", "checkpoint_minutes", "keep_checkpoints", "log_every",
    "hardware_every_s", "save", "sample_prompts", "sample_tokens",
)  # fmt: skip


def run_stage(ctx: StageContext) -> StageResult:
    from repolm.train.loop import train_model

    resume = ctx.options.get("resume", "auto")
    if ctx.force:
        resume = "never"
    stats = read_stats(ctx.layout)
    reports: dict[str, Any] = {}
    for name, mc in ctx.config.models.items():
        spec = run_spec(ctx.out, ctx.config, name, mc, stats, resume)
        reports[name] = train_model(spec)
    summary = _summary(reports)
    write_json_atomic(ctx.out / "train" / "report.json", {"models": reports})
    brief = {name: _brief(r) for name, r in reports.items()}
    # the weights are outputs too: deleting or replacing them makes the stage stale
    files = [p for name in reports for p in (ctx.out / "models" / name).rglob("*.safetensors")]
    weights = sorted(p.relative_to(ctx.out).as_posix() for p in files)
    return StageResult(stats={"models": brief}, summary=summary, manifest={"models": brief},
                       outputs=tuple(weights))  # fmt: skip


def check_model(config: Config, name: str, mc: ModelConfig, stats: dict[str, Any]) -> None:
    """Errors that need no model loaded: a base model the run's tokenizer doesn't come from,
    a mix the build didn't make."""
    tk = config.tokenize
    if mc.base is not None and (tk.kind != "base" or tk.base_model != mc.base):
        raise RepolmError(
            f"model '{name}' fine-tunes {mc.base!r}, but the run's tokenizer is "
            + (
                f"trained from scratch ({tk.kind})"
                if tk.kind != "base"
                else f"that of {tk.base_model!r}"
            ),  # fmt: skip
            f"set tokenize.kind: base and tokenize.base_model: {mc.base} (models of one run "
            "share its tokenizer; fine-tune a base with another tokenizer in another run)",
        )
    if mc.mix != "default" and mc.mix not in (stats.get("mixes") or {}):
        known = ", ".join(["default", *(stats.get("mixes") or {})])
        raise RepolmError(
            f"model '{name}' trains on mix '{mc.mix}', which the build did not make",
            f"declare it under build.mixes, or choose one of: {known}",
        )


def run_spec(
    out: Path, config: Config, name: str, mc: ModelConfig, stats: dict[str, Any], resume: str
):
    from repolm.train.loop import RunSpec

    check_model(config, name, mc, stats)
    dataset = out / "dataset"
    if mc.mix == "default":
        train_dir, plan, shards = dataset / "train", stats["plan"], stats["shards"]["train"]
    else:
        mix = stats["mixes"][mc.mix]
        train_dir, plan, shards = dataset / "mixes" / mc.mix / "train", mix["plan"], mix["shards"]
    tok_dir = out / "tokenizer"
    pinned = mc.model_dump(mode="json")
    for key in NOT_IN_FINGERPRINT:
        pinned["train"].pop(key, None)
    fingerprint = json_digest({
        "model": pinned, "train": shards, "val": stats["shards"]["val"],
        "tokenizer": file_digest(tok_dir / "tokenizer.json"),
    })  # fmt: skip
    added: list[int] = []
    if mc.base is not None and mc.method != "full":
        from transformers import AutoTokenizer

        from repolm.train.models import new_token_ids

        tok = AutoTokenizer.from_pretrained(tok_dir)
        added = new_token_ids(mc.base, tok, mc.trust_remote_code)
    from repolm.train.samples import sample_prompts

    return RunSpec(
        name=name, model=mc, build=config.build, train_dir=train_dir,
        val_dir=dataset / "val" if stats["sequences"]["val"] else None, tokenizer_dir=tok_dir,
        work_dir=out / "train" / name,
        model_dir=out / "models" / name, plan=plan, fingerprint=fingerprint, resume=resume,
        added_tokens=added,
        sample_prompts=sample_prompts(out / "filter", mc.train.sample_prompts),
    )  # fmt: skip


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
