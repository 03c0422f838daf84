"""The report's overview: the repository, the cutoff, the run's config and software, the models
and stages at a glance."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from repolm.report import plots
from repolm.report.inputs import ReportInputs, missing_section
from repolm.report.markup import duration, esc, facts, fmt, note, size, table, when


def _epoch(iso: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return None


def overview(inputs: ReportInputs) -> str:
    m = inputs.manifest
    if not m:
        return missing_section("manifest")
    repo = m.get("repository") or {}
    # the build's split when there is one: what training used (it may have dropped a future)
    cut = (inputs.dataset_stats or {}).get("cutoff") or m.get("split") or {}
    cfg = m.get("config") or {}
    deps = m.get("dependencies") or {}
    counts = cut.get("commits") or {}
    parts = [
        facts(
            [
                ("repository", esc(repo.get("path") or m.get("repo_path"))),
                (
                    "HEAD",
                    esc(f"{repo.get('head')} ({repo.get('head_ref') or 'detached'})")
                    if repo.get("head")
                    else None,
                ),
                (
                    "commits",
                    f"{fmt(repo.get('commits'))} ({fmt(repo.get('merges'))} merges)"
                    if "commits" in repo
                    else None,
                ),
                (
                    "branches / tags / authors",
                    " / ".join(fmt(repo.get(k)) for k in ("branches", "tags", "authors"))
                    if repo
                    else None,
                ),
                (
                    "history",
                    f"{when(repo.get('first_commit_time'))} → {when(repo.get('last_commit_time'))}"
                    if repo.get("first_commit_time")
                    else None,
                ),
                (
                    "cutoff (last training commit)",
                    f"<code>{esc(cut.get('cutoff_sha'))}</code> at {when(cut.get('cutoff_time'))}"
                    if cut.get("cutoff_sha")
                    else None,
                ),
                (
                    "validation period ends",
                    when(cut["val_end_time"]) if cut.get("val_end_time") else None,
                ),
                (
                    "future held out",
                    "none: every commit trains" if cut.get("future") is False else None,
                ),
                (
                    "commits per split",
                    ", ".join(f"{esc(k)} {fmt(v)}" for k, v in counts.items()) if counts else None,
                ),
                (
                    "config",
                    f"preset {esc(cfg.get('preset'))}, hash {esc(str(cfg.get('hash'))[:12])}"
                    if cfg
                    else None,
                ),
                (
                    "software",
                    f"repolm {esc(m.get('repolm_version'))}, Python {esc(m.get('python'))}, "
                    f"torch {esc(deps.get('torch'))}, {esc(m.get('platform'))}"
                    if m.get("repolm_version")
                    else None,
                ),
            ]
        )
    ]
    if cut.get("future") is False:
        parts.insert(0, no_future_note(cut))
    if inputs.commits and inputs.commits.get("time"):
        marks = {
            k: t
            for k, t in (
                ("cutoff", _epoch(cut.get("cutoff_time"))),
                ("end of validation", _epoch(cut.get("val_end_time"))),
            )
            if t is not None
        }
        parts.append(plots.commits_plot(inputs.commits["time"], inputs.commits["split"], marks))
    languages = repo.get("languages_at_head") or {}
    if languages:
        total = sum(languages.values()) or 1
        rows = [
            (esc(k), size(v), f"{100 * v / total:.1f}%")
            for k, v in sorted(languages.items(), key=lambda kv: -kv[1])
        ]
        parts.append("<h3>Languages at HEAD</h3>" + table(("language", "bytes", "share"), rows))
    parts.append(_models_table(inputs))
    stages = m.get("stages") or {}
    if stages:
        rows = [
            (esc(k), esc(v.get("status")), duration(v.get("seconds")), esc(v.get("summary")))
            for k, v in stages.items()
        ]
        parts.append(
            "<h3>Stages</h3>" + table(("stage", "status", "time", "summary"), rows, numeric=(2,))
        )
    return "".join(parts)


def no_future_note(cut: Mapping[str, Any]) -> str:
    """What a run that held out no future says first: why, and what it means."""
    return note(
        f"<b>This repository holds out no future:</b> {esc(cut.get('no_future'))}. "
        "The model trained on every commit, without validation loss or early stopping; "
        "bits per byte and the generation tasks on the future were skipped "
        "(split.require_future=true makes this an error)."
    )


def _models_table(inputs: ReportInputs) -> str:
    models = (inputs.train or {}).get("models") or inputs.manifest.get("models") or {}
    if not models:
        return "<h3>Models</h3>" + note("No model has been trained in this run yet.")
    rows = []
    for name, r in models.items():
        val = (r.get("validation") or {}).get("final") or {}
        loss = val.get("loss", r.get("val_loss"))
        unigram = (r.get("validation") or {}).get("unigram_loss", r.get("unigram_val_loss"))
        rows.append(
            (
                esc(name),
                esc(r.get("source", "")),
                esc(r.get("method", "")),
                fmt((r.get("parameters") or {}).get("total")),
                fmt(r.get("steps")),
                fmt(r.get("tokens_seen")),
                fmt(loss),
                fmt(unigram),
                esc((r.get("early_stopping") or {}).get("stopped", r.get("stopped"))),
                duration(r.get("seconds")),
            )
        )
    head = (
        "model",
        "source",
        "method",
        "parameters",
        "steps",
        "tokens",
        "validation loss",
        "unigram loss",
        "stopped by",
        "time",
    )
    return "<h3>Models</h3>" + table(head, rows, numeric=3)
