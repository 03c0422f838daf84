"""The run as one self-contained HTML page: the inputs a run directory holds in, a string out.

Pure: no file or network access. Everything that comes from the repository (paths, code,
commit messages, model output) is escaped; figures are inline SVG; the style sheet is inline;
the page loads nothing. A missing input (a run stopped before train or eval) leaves its
section with a line saying so. Secrets appear only as the types and counts the filter stage
recorded: the page never reads a text that was not scrubbed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from repolm.report import evaluation as ev
from repolm.report import plots
from repolm.report.markup import (
    CSS,
    duration,
    esc,
    facts,
    fmt,
    missing_note,
    note,
    parse_flag,
    pre,
    size,
    table,
    when,
)

Scalars = dict[str, list[tuple[float, float]]]  # TensorBoard tag -> (step, value)


@dataclass(frozen=True)
class ReportInputs:
    """What the report shows; None where the run has not produced it."""

    run_dir: str
    manifest: dict[str, Any] = field(default_factory=dict)
    filter_stats: dict[str, Any] | None = None  # OUT/filter/stats.json
    dataset_stats: dict[str, Any] | None = None  # OUT/dataset/stats.json
    train: dict[str, Any] | None = None  # OUT/train/report.json
    eval: dict[str, Any] | None = None  # OUT/eval/report.json
    commits: dict[str, list[Any]] | None = None  # {"time": [epoch s], "split": [str | None]}
    scalars: dict[str, Scalars] = field(default_factory=dict)  # per model, from TensorBoard
    unreadable: tuple[str, ...] = ()  # inputs that exist but could not be read


INPUTS = {  # field -> (file, the stage that writes it)
    "manifest": ("manifest.json", "mine"),  # every stage updates it; mine is the first
    "filter_stats": ("filter/stats.json", "filter"),
    "dataset_stats": ("dataset/stats.json", "build"),
    "train": ("train/report.json", "train"),
    "eval": ("eval/report.json", "eval"),
}


def missing_inputs(inputs: ReportInputs) -> list[str]:
    """The run's outputs the report would show but that are not there."""
    return [file for name, (file, _) in INPUTS.items() if not getattr(inputs, name)]


def _missing(name: str) -> str:
    return missing_note(*INPUTS[name])


# -- the page -----------------------------------------------------------------------------------

SECTIONS = {
    "overview": "Overview",
    "data": "Data",
    "training": "Training",
    "evaluation": "Evaluation",
    "samples": "Samples",
    "timings": "Timings",
}


def render_report(inputs: ReportInputs) -> str:
    """The whole page."""
    repo = (inputs.manifest.get("repository") or {}).get("path") or inputs.manifest.get(
        "repo_path", ""
    )
    nav = "".join(f'<a href="#{k}">{v}</a>' for k, v in SECTIONS.items())
    missing = missing_inputs(inputs)
    head = [
        f"<h1>repolm report: {esc(repo or inputs.run_dir)}</h1>",
        f'<p class="sub">run directory {esc(inputs.run_dir)}; updated '
        f"{when(inputs.manifest.get('updated', '—'))}</p><nav>{nav}</nav>",
    ]
    if missing:
        head.append(
            note(
                "Not in this run yet: "
                + ", ".join(esc(m) for m in missing)
                + ". Their sections say what is missing."
            )
        )
    if inputs.unreadable:
        head.append(note("Could not read: " + ", ".join(esc(u) for u in inputs.unreadable)))
    body = [
        _section("overview", overview(inputs)),
        _section("data", data(inputs)),
        _section("training", training(inputs)),
        _section("evaluation", ev.evaluation(inputs.eval)),
        _section("samples", ev.samples(inputs.eval)),
        _section("timings", ev.timings(inputs.eval)),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>repolm report: {esc(repo or inputs.run_dir)}</title>"
        f"<style>{CSS}</style></head><body><main>{''.join(head)}{''.join(body)}"
        "</main></body></html>\n"
    )


def _section(key: str, content: str) -> str:
    return f'<section id="{key}"><h2>{SECTIONS[key]}</h2>{content}</section>'


# -- overview -----------------------------------------------------------------------------------


def _epoch(iso: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return None


def overview(inputs: ReportInputs) -> str:
    m = inputs.manifest
    if not m:
        return _missing("manifest")
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


# -- data ---------------------------------------------------------------------------------------


def _reasons(excluded: Mapping[str, Any]) -> str:
    return (
        ", ".join(f"{esc(k)}: {fmt(v)}" for k, v in sorted(excluded.items(), key=lambda kv: -kv[1]))
        or "—"
    )


def data(inputs: ReportInputs) -> str:
    parts = ["<h3>Filtering</h3>"]
    f = inputs.filter_stats
    if f is None:
        parts.append(_missing("filter_stats"))
    else:
        rows = []
        for kind in ("files", "changes", "chunks"):
            s = f.get(kind) or {}
            if s:
                ex = s.get("excluded") or {}
                rows.append(
                    (
                        esc(kind),
                        fmt(s.get("total")),
                        fmt(s.get("kept")),
                        fmt(sum(ex.values())),
                        _reasons(ex),
                    )
                )
        parts.append(table(("", "total", "kept", "excluded", "reasons"), rows))
        c = f.get("commits") or {}
        parts.append(
            facts(
                [
                    ("commits", fmt(c.get("total")) if c else None),
                    (
                        "author emails / names",
                        f"{esc(c.get('author_emails'))} / {esc(c.get('author_names'))}"
                        if c
                        else None,
                    ),
                    ("repository licence", esc(f.get("repository_license") or "none found")),
                ]
            )
        )
        parts.append(_secrets(f.get("secrets") or {}, "Secrets and personal data scrubbed"))
    d = inputs.dataset_stats
    parts.append("<h3>Dataset</h3>")
    if d is None:
        parts.append(_missing("dataset_stats"))
    else:
        parts.append(_dataset(d))
    tok = ((inputs.manifest.get("stages") or {}).get("tokenize") or {}).get("stats") or {}
    if tok:
        parts.append(
            "<h3>Tokenizer</h3>"
            + facts(
                [
                    ("kind", esc(tok.get("kind"))),
                    ("vocabulary", fmt(tok.get("vocab_size"))),
                    ("special tokens", fmt(tok.get("special_tokens"))),
                    ("trained on", size(tok.get("corpus_bytes"))),
                    ("round trip exact", fmt(tok.get("roundtrip_exact"))),
                ]
            )
        )
    return "".join(parts)


def _secrets(found: Mapping[str, Any], title: str) -> str:
    """Types and counts only: the values are never recorded, nor shown. Counts grouped one
    level deeper (by where they were found) are shown as `where: type`."""
    counts = {
        f"{k}: {t}" if isinstance(v, Mapping) else k: n
        for k, v in found.items()
        for t, n in (v.items() if isinstance(v, Mapping) else [(k, v)])
        if isinstance(n, (int, float))
    }
    if not counts:
        return f"<h3>{title}</h3><p>None found.</p>"
    rows = [(esc(k), fmt(v)) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    rows.append(("<b>total</b>", f"<b>{fmt(sum(counts.values()))}</b>"))
    return (
        f"<h3>{title}</h3><p class=sub>By type; each was replaced by a placeholder before "
        f"anything else read the text.</p>" + table(("type", "found"), rows)
    )


def _dataset(d: Mapping[str, Any]) -> str:
    tokens = d.get("tokens") or {}
    kinds = list(dict.fromkeys(k for s in tokens.values() for k in s if k != "total"))
    padding = d.get("padding") or {}
    rows = [
        (
            esc(split),
            fmt((d.get("sequences") or {}).get(split)),
            fmt(t.get("total")),
            *(fmt(t.get(k)) for k in kinds),
            f"{100 * padding.get(split, 0):.1f}%",
        )
        for split, t in tokens.items()
    ]
    parts = [
        table(("split", "sequences", "tokens", *map(esc, kinds), "padding"), rows),
        f"<p class=sub>sequences of {fmt(d.get('seq_len'))} tokens, vocabulary "
        f"{fmt(d.get('vocab_size'))}</p>",
    ]
    mix = d.get("mix") or {}
    if mix.get("wanted"):
        rows = [
            (esc(k), f"{100 * v:.1f}%", f"{100 * (mix.get('realised') or {}).get(k, 0):.1f}%")
            for k, v in mix["wanted"].items()
        ]
        parts.append("<h3>Training mix</h3>" + table(("source", "wanted", "realised"), rows))
    plan = d.get("plan") or {}
    if plan:
        parts.append(facts([(k.replace("_", " "), fmt(v)) for k, v in plan.items()]))
    ev = d.get("eval") or {}
    if ev:
        rows = [(esc(k), fmt(v)) for k, v in ev.items() if isinstance(v, int)]
        parts.append("<h3>Evaluation sets (after the cutoff)</h3>" + table(("set", "items"), rows))
        scrubbed = ev.get("completion_secrets_scrubbed") or {}
        if scrubbed:
            parts.append(_secrets(scrubbed, "Secrets scrubbed from the completion set"))
    return "".join(parts)


# -- training -----------------------------------------------------------------------------------


def training(inputs: ReportInputs) -> str:
    models = (inputs.train or {}).get("models") or {}
    if not models:
        return _missing("train")
    return "".join(_model(name, r, inputs.scalars.get(name) or {}) for name, r in models.items())


def _model(name: str, r: Mapping[str, Any], scalars: Scalars) -> str:
    plan, dev = r.get("plan") or {}, r.get("device") or {}
    val = r.get("validation") or {}
    best = val.get("best") or {}
    lr = r.get("lr") or {}
    stop = r.get("early_stopping") or {}
    parts = [
        f"<h3>Model {esc(name)}</h3>",
        facts(
            [
                (
                    "source / method / mix",
                    " / ".join(esc(r.get(k)) for k in ("source", "method", "mix")),
                ),
                (
                    "parameters (trainable)",
                    f"{fmt((r.get('parameters') or {}).get('total'))} "
                    f"({fmt((r.get('parameters') or {}).get('trainable'))})",
                ),
                (
                    "precision, device",
                    f"{esc(r.get('precision'))}, {esc(dev.get('kind'))} "
                    f"{esc(dev.get('name'))} × {fmt(dev.get('processes'))}"
                    if dev
                    else None,
                ),
                (
                    "steps (planned)",
                    f"{fmt(r.get('steps'))} ({fmt(plan.get('total_steps'))}), "
                    f"{fmt(r.get('epochs_done'))} epochs",
                ),
                ("tokens seen", fmt(r.get("tokens_seen"))),
                (
                    "time, throughput",
                    f"{duration(r.get('seconds'))}, {fmt(r.get('tokens_per_s'))} "
                    f"tokens/s (median)" + (f", MFU {100 * r['mfu']:.1f}%" if r.get("mfu") else ""),
                ),
                (
                    "best validation loss",
                    f"{fmt(best.get('loss'))} at step {fmt(best.get('step'))} "
                    f"(perplexity {fmt(best.get('perplexity'))})"
                    if best
                    else None,
                ),
                (
                    "validation",
                    "none: no validation data (no future held out)"
                    if val.get("sequences") == 0
                    else None,
                ),
                ("unigram validation loss", fmt(val.get("unigram_loss"))),
                (
                    "learning rate",
                    f"peak {fmt(lr.get('max'))}, lowest {fmt(lr.get('min'))}" if lr else None,
                ),
                (
                    "stopped by",
                    f"{esc(stop.get('stopped'))} (patience {fmt(stop.get('patience'))})"
                    if stop
                    else None,
                ),
            ]
        ),
    ]
    loss = (r.get("loss") or {}).get("per_step") or [p[1] for p in scalars.get("train/loss", [])]
    evals = [(e["step"], e["loss"]) for e in val.get("evaluations") or [] if "loss" in e]
    if loss or evals:
        parts.append(plots.loss_plot(loss, evals, val.get("unigram_loss"), f"{name}: loss"))
    else:
        parts.append(note("No loss was recorded (the model trained no step)."))
    if scalars.get("train/lr"):
        parts.append(
            plots.series_plot(scalars["train/lr"], "learning rate", f"{name}: learning rate")
        )
    else:
        parts.append(
            note(
                "The learning rate per step is recorded only in TensorBoard "
                f"(train/{esc(name)}/tensorboard), and none was found."
            )
        )
    tps = r.get("tokens_per_s_per_step") or []
    points = [(i + 1, v) for i, v in enumerate(tps)] or scalars.get("train/tokens_per_s", [])
    if points:
        median = {"median": r["tokens_per_s"]} if r.get("tokens_per_s") else None
        parts.append(plots.series_plot(points, "tokens / s", f"{name}: throughput", median))
    hardware = {k.split("/", 1)[1]: v for k, v in scalars.items() if k.startswith("hardware/")}
    if hardware:
        parts.append(plots.hardware_plot(hardware, name))
    else:
        parts.append(
            note(
                "No hardware samples over time (they are in TensorBoard only, and "
                "none was found); the peaks are below."
            )
        )
    parts.append(_peaks(r.get("hardware") or {}))
    parts.append(_train_samples(r.get("samples") or []))
    return "".join(parts)


def _peaks(peaks: Mapping[str, Any]) -> str:
    if not peaks:
        return ""
    rows = []
    for k, v in peaks.items():
        shown = (
            size(v)
            if k.endswith("_bytes")
            else (f"{fmt(v)}%" if k.endswith(("_percent", "_util")) else fmt(v))
        )
        rows.append((esc(k.replace("_", " ")), shown))
    return "<h3>Hardware peaks</h3>" + table(("", "peak"), rows)


def _train_samples(rounds: Sequence[Mapping[str, Any]]) -> str:
    """At each evaluation, whether the fixed prompts' continuations parse; the last
    evaluation's continuations."""
    if not rounds:
        return ""
    rows = []
    for r in rounds:
        s = r.get("samples") or []
        checked = [x.get("parses") for x in s if x.get("parses") is not None]
        rate = r.get("parse_rate")
        rows.append(
            (
                fmt(r.get("step")),
                f"{sum(checked)}/{len(checked)}" if checked else "—",
                "—" if rate is None else f"{100 * rate:.0f}%",
            )
        )
    parts = [
        "<h3>In-training samples</h3><p class=sub>The model continues the first lines of "
        "a few files of the snapshot at each evaluation; a sample that parses is a valid "
        "prefix of the language.</p>",
        table(("step", "parse", "rate"), rows, numeric=0),
    ]
    last = rounds[-1]
    for s in last.get("samples") or []:
        parts.append(
            f'<div class="sample"><b>{esc(s.get("path"))}</b> at step '
            f"{fmt(last.get('step'))}: {parse_flag(s.get('parses'))}"
            f"{pre(s.get('sample'))}</div>"
        )
    return "".join(parts)
