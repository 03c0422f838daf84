"""The evaluation as tables for the terminal: the end of `repolm eval` / `repolm run`, and
`repolm eval compare`. Pure: a report dict in, rich tables out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from repolm.errors import RepolmError
from repolm.layout import RunLayout

# per task: (metric key, label); a fraction is shown as a percentage
TASK_METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    "completion": (
        ("next_line_em", "next line exact %"),
        ("next_line_es", "next line edit sim %"),
        ("body_em", "body exact %"),
        ("body_es", "body edit sim %"),
        ("identifier_f1", "identifier F1 %"),
    ),
    "next_change": (
        ("recall@1", "recall@1 %"),
        ("recall@5", "recall@5 %"),
        ("recall@10", "recall@10 %"),
    ),
    "commit_messages": (
        ("subject_rouge_l", "subject ROUGE-L %"),
        ("subject_bleu", "subject BLEU"),
        ("message_rouge_l", "message ROUGE-L %"),
        ("message_bleu", "message BLEU"),
    ),
}
PERCENT_SCALE = {"subject_bleu": 1.0, "message_bleu": 1.0}  # BLEU is 0-100 already


def load_report(path: Path) -> dict[str, Any]:
    """An eval report from a run directory or a report.json."""
    file = RunLayout(path).eval_report if path.is_dir() else path
    if not file.is_file():
        raise RepolmError(f"no evaluation report at {file}", "run 'repolm eval' on that run first")
    return json.loads(file.read_text())


def _num(value: Any, scale: float = 1.0, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return f"{value * scale:.{digits}f}"


def commit_rows(report: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, float]]]:
    """Each held-out commit as (split, commit entry, {model: its bits per byte}), hardest for
    the models first."""
    rows = []
    for split, commits in (report.get("commits") or {}).items():
        for c in commits:
            scores = {}
            for name, m in (report.get("models") or {}).items():
                v = ((m.get("bits_per_byte") or {}).get(split) or {}).get("by_commit") or {}
                if c.get("sha") in v:
                    scores[name] = v[c["sha"]]
            rows.append((split, c, scores))
    rows.sort(key=lambda r: -max(r[2].values(), default=0.0))
    return rows


def beats_xz(rows: list[tuple[str, dict[str, Any], dict[str, float]]], model: str) -> int:
    """On how many commits `model` needs fewer bits than xz compressing that commit alone."""
    return sum(1 for _, c, s in rows if model in s and s[model] < (c.get("xz -9e") or 0))


def _commits_caption(report: dict[str, Any]) -> str | None:
    """Per model: on how many held-out commits it beats xz (each commit alone), and the
    commit it is furthest behind on, in bits."""
    rows = commit_rows(report)
    lines = []
    for name in report["models"] if rows else ():
        line = (
            f"model {name}: fewer bits than xz on {beats_xz(rows, name)} of {len(rows)} "
            "commits (each compressed alone)"
        )
        behind = [
            (c["bytes"] * (s[name] - c["xz -9e"]), split, c, s[name])
            for split, c, s in rows
            if name in s and s[name] > (c.get("xz -9e") or float("inf"))
        ]
        if behind:
            _, split, c, v = max(behind, key=lambda x: x[0])
            line += (
                f"; furthest behind on {str(c['sha'])[:10]} ({split}, "
                f"{c['bytes']:,} bytes) {c.get('subject', '')[:40]!r}: {v:.3f} against "
                f"{c['xz -9e']:.3f}"
            )
        lines.append(line)
    return "\n".join(lines) or None


def bits_table(report: dict[str, Any]) -> Table:
    splits = list(report["baselines"])
    text = report["text"]
    title = "bits per byte on the future (lower is better): " + "; ".join(
        f"{s} {text[s]['commits']} commits, {text[s]['bytes']:,} bytes" for s in splits
    )
    table = Table(
        title=title, title_justify="left", caption=_commits_caption(report), caption_justify="left"
    )
    table.add_column("")
    for s in splits:
        table.add_column(s, justify="right")
    for name, m in report["models"].items():
        table.add_row(
            f"model {name}", *(_num(m["bits_per_byte"][s]["bits_per_byte"]) for s in splits)
        )
        if "base" in m:
            table.add_row(
                f"  its base {m['base']['model']}",
                *(_num(m["base"]["bits_per_byte"][s]["bits_per_byte"]) for s in splits),
            )
    train_mb = text["train"]["conditioning_bytes"] / 2**20
    for c in report["baselines"][splits[0]]:
        table.add_row(c, *(_num(report["baselines"][s][c]["bits_per_byte"]) for s in splits))
        if "conditioned_bits_per_byte" in report["baselines"][splits[0]][c]:
            table.add_row(
                f"{c} after {train_mb:.1f} MiB of training text",
                *(_num(report["baselines"][s][c]["conditioned_bits_per_byte"]) for s in splits),
            )
    return table


def task_table(report: dict[str, Any]) -> Table | None:
    """Each model's generation tasks next to the tasks' baselines."""
    rows = []
    for name, m in report["models"].items():
        for task, labels in TASK_METRICS.items():
            result = m.get("tasks", {}).get(task)
            if not result:
                continue
            for key, label in labels:
                scale = PERCENT_SCALE.get(key, 100.0)
                base = "; ".join(
                    f"{b}: {_num(v.get(key), scale, 1)}" for b, v in result["baselines"].items()
                )
                rows.append(
                    (
                        f"{name}: {task} (n={result['n']})",
                        label,
                        _num(result.get("metrics", {}).get(key), scale, 1),
                        base,
                    )
                )
    return _rows_table(
        "tasks on the future commits (higher is better)",
        ("task", "metric", "model", "baselines"),
        rows,
    )


def _rows_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table | None:
    """A table of (what, metric, the model's figure, detail) rows; None without rows."""
    if not rows:
        return None
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="right" if col == "model" else "left")
    for r in rows:
        table.add_row(*r)
    return table


def console() -> Console:
    """The terminal, or a wide page when output goes to a file or pipe (rich would wrap the
    figures' names at 80 columns)."""
    c = Console()
    return c if c.is_terminal else Console(width=160)


def other_table(report: dict[str, Any]) -> Table | None:
    """Suites (0-100), code benchmarks (pass@k %) and QA (%), per model."""
    rows = []
    for name, m in report["models"].items():
        for suite, r in m.get("suites", {}).items():
            cats = ", ".join(f"{c} {v['score']:.1f}" for c, v in r["categories"].items())
            rows.append(
                (
                    f"{name}: suite {suite} ({r['counts']['tests']} tests)",
                    "score 0-100",
                    _num(r["overall"], 1, 1),
                    cats,
                )
            )
        for bench, r in m.get("code", {}).items():
            for k in (k for k in r if k.startswith("pass@")):
                rows.append(
                    (
                        f"{name}: {bench} ({r['problems']} problems)",
                        f"{k} %",
                        _num(r[k], 100, 1),
                        "",
                    )
                )
        if m.get("qa"):
            r = m["qa"]
            cited = _num(r.get("citation_coverage"), 100, 1)
            rows.append(
                (
                    f"{name}: QA (n={r['n']})",
                    "exact match % / F1 %",
                    f"{_num(r['exact_match'], 100, 1)} / {_num(r['f1'], 100, 1)}",
                    f"citation coverage {cited} %",
                )
            )
    return _rows_table("suites and benchmarks", ("evaluation", "metric", "model", "detail"), rows)


def print_report(report: dict[str, Any], out: Console | None = None) -> None:
    out = out or console()
    if "future" in report:  # nothing held out: no bits per byte, no tasks
        out.print(f"no evaluation on the future: {report['future']['reason']}")
    else:
        out.print(bits_table(report))
    for table in (task_table(report), other_table(report)):
        if table is not None:
            out.print(table)


def flatten(report: dict[str, Any]) -> dict[str, float]:
    """Every number of a report by its dotted path (for comparing two runs)."""
    out: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in ("samples", "timings", "cutoff", "by_commit"):
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix] = float(value)

    walk("", {k: report[k] for k in ("models", "baselines") if k in report})
    return out


COMPARED = (
    "bits_per_byte",
    "conditioned_bits_per_byte",
    "loss",
    "recall@",
    "_em",
    "_es",
    "_f1",
    "rouge_l",
    "bleu",
    "pass@",
    "score",
    "exact_match",
    "f1",
)


def compare_table(a: dict[str, Any], b: dict[str, Any], name_a: str, name_b: str) -> Table:
    """The figures both reports have, side by side with their difference."""
    fa, fb = flatten(a), flatten(b)
    keys = [k for k in fa if k in fb and any(c in k.rsplit(".", 1)[-1] for c in COMPARED)]
    table = Table(title=f"{name_a} → {name_b}", title_justify="left")
    for col in ("figure", name_a, name_b, "difference"):
        table.add_column(col, justify="left" if col == "figure" else "right")
    for k in keys:
        d = fb[k] - fa[k]
        table.add_row(k, f"{fa[k]:.4g}", f"{fb[k]:.4g}", f"{d:+.4g}")
    return table
