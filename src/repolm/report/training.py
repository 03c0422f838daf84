"""The report's training section: each model's facts, curves, hardware and in-training samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from repolm.report import plots
from repolm.report.inputs import RUN, ReportInputs, Scalars, missing_section
from repolm.report.markup import duration, esc, facts, fmt, note, parse_flag, pre, size, table


def training(inputs: ReportInputs) -> str:
    models = (inputs.train or {}).get("models") or {}
    if not models:
        return missing_section("train")
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
                f"({esc(RUN.tensorboard_dir(name).as_posix())}), and none was found."
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
