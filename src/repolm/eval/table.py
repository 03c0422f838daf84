"""The evaluation as tables for the terminal: the end of `repolm eval` / `repolm run`, and
`repolm eval compare`. Pure: a report dict in, rich tables out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from repolm.errors import RepolmError
from repolm.eval.figures import (
    base_verdict,
    beats_xz,
    bits_of,
    commit_rows,
    delta,
    is_num,
    split_sizes,
)
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
    if not is_num(value):
        return "—"
    return f"{value * scale:.{digits}f}"


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


def _titled(title: str, table: Table, caption: str | None = None) -> Group:
    """A table under its title and over its caption, both as wide as the terminal (a rich
    table's own title and caption wrap at the table's width, a few words a line)."""
    parts = [Text(title, style="italic"), table]
    return Group(*parts, Text(caption)) if caption else Group(*parts)


def bits_table(report: dict[str, Any]) -> Group:
    """Each model's bits per byte, its base's and the difference, then the compressors; the
    caption says which model beats its base and xz."""
    splits = list(report["baselines"])
    text = report["text"]
    title = "bits per byte on the future (lower is better): " + split_sizes(report, splits)
    verdicts = [base_verdict(n, m, splits) for n, m in report["models"].items()]
    caption = "\n".join(c for c in (*(v for v in verdicts if v), _commits_caption(report)) if c)
    table = Table()
    table.add_column("")
    for s in splits:
        table.add_column(s, justify="right")
    for name, m in report["models"].items():
        table.add_row(f"model {name}", *(_num(bits_of(m, s)) for s in splits))
        if m.get("base"):
            base = m["base"]
            table.add_row(
                f"  its base {base.get('model')}", *(_num(bits_of(base, s)) for s in splits)
            )
            table.add_row(
                f"  {name} − base", *(delta(bits_of(m, s), bits_of(base, s)) for s in splits)
            )
    train_mb = text["train"]["conditioning_bytes"] / 2**20
    for c in report["baselines"][splits[0]]:
        table.add_row(c, *(_num(report["baselines"][s][c]["bits_per_byte"]) for s in splits))
        if "conditioned_bits_per_byte" in report["baselines"][splits[0]][c]:
            table.add_row(
                f"{c} after {train_mb:.1f} MiB of training text",
                *(_num(report["baselines"][s][c]["conditioned_bits_per_byte"]) for s in splits),
            )
    return _titled(title, table, caption or None)


class Row(NamedTuple):
    """A row of the task and suite tables: its cells (what, metric, the model's figure, its
    base's, the difference, detail such as the baselines), and whose figures they are."""

    cells: tuple[str, str, str, str, str, str]
    model: str
    value: Any
    base: Any


def _figure_row(
    model: str,
    what: str,
    label: str,
    value: Any,
    base: Any,
    scale: float,
    detail: str,
    has_base: bool,
) -> Row:
    cells = (
        f"{model}: {what}",
        label,
        _num(value, scale, 1),
        _num(base, scale, 1) if has_base else "",
        delta(value, base, scale, 1) if has_base else "",
        detail,
    )
    return Row(cells, model, value, base if has_base else None)


def task_table(report: dict[str, Any]) -> Group | None:
    """Each model's generation tasks, next to its base model's and the tasks' baselines."""
    rows: list[Row] = []
    for name, m in report["models"].items():
        base_tasks = (m.get("base") or {}).get("tasks") or {}
        for task, labels in TASK_METRICS.items():
            result = m.get("tasks", {}).get(task)
            if not result:
                continue
            before = base_tasks.get(task)
            for key, label in labels:
                scale = PERCENT_SCALE.get(key, 100.0)
                baselines = "; ".join(
                    f"{b}: {_num(v.get(key), scale, 1)}" for b, v in result["baselines"].items()
                )
                rows.append(
                    _figure_row(
                        name,
                        f"{task} (n={result['n']})",
                        label,
                        result.get("metrics", {}).get(key),
                        ((before or {}).get("metrics") or {}).get(key),
                        scale,
                        baselines,
                        before is not None,
                    )
                )
    return _rows_table(
        "tasks on the future commits (higher is better)",
        ("task", "metric", "model", "its base", "− base", "baselines"),
        rows,
    )


def _wins_caption(rows: list[Row]) -> str | None:
    """Per fine-tuned model: on how many of the table's figures it is above its base (every
    figure here is higher-is-better)."""
    lines = []
    for name in dict.fromkeys(r.model for r in rows):
        pairs = [(r.value, r.base) for r in rows if r.model == name]
        pairs = [(v, b) for v, b in pairs if is_num(v) and is_num(b)]
        if pairs:
            above = sum(1 for v, b in pairs if v > b)
            below = sum(1 for v, b in pairs if v < b)
            lines.append(
                f"{name}: above its base on {above} of {len(pairs)} figures, below on {below}"
            )
    return "\n".join(lines) or None


def _rows_table(title: str, columns: tuple[str, ...], rows: list[Row]) -> Group | None:
    """A table of `Row`s, captioned with each fine-tuned model's wins over its base; None
    without rows. The base columns only where a row has a base: a run without fine-tuned
    models gets the table it always had."""
    if not rows:
        return None
    keep = [i for i in range(len(columns)) if i not in (3, 4) or any(r.cells[i] for r in rows)]
    table = Table()
    for i in keep:
        table.add_column(columns[i], justify="right" if i in (2, 3, 4) else "left")
    for r in rows:
        table.add_row(*(r.cells[i] for i in keep))
    return _titled(title, table, _wins_caption(rows))


def console() -> Console:
    """The terminal, or a wide page when output goes to a file or pipe (rich would wrap the
    figures' names at 80 columns)."""
    c = Console()
    return c if c.is_terminal else Console(width=160)


def other_table(report: dict[str, Any]) -> Group | None:
    """Suites (0-100), code benchmarks (pass@k %) and QA (%), per model, next to its base
    model's where that was measured too."""
    rows: list[Row] = []
    for name, m in report["models"].items():
        base = m.get("base") or {}
        for suite, r in m.get("suites", {}).items():
            before = (base.get("suites") or {}).get(suite)
            cats = ", ".join(f"{c} {v['score']:.1f}" for c, v in r["categories"].items())
            rows.append(
                _figure_row(
                    name,
                    f"suite {suite} ({r['counts']['tests']} tests)",
                    "score 0-100",
                    r["overall"],
                    (before or {}).get("overall"),
                    1,
                    cats,
                    before is not None,
                )
            )
        for bench, r in m.get("code", {}).items():
            before = (base.get("code") or {}).get(bench)
            for k in (k for k in r if k.startswith("pass@")):
                rows.append(
                    _figure_row(
                        name,
                        f"{bench} ({r['problems']} problems)",
                        f"{k} %",
                        r[k],
                        (before or {}).get(k),
                        100,
                        "",
                        before is not None,
                    )
                )
        if m.get("qa"):
            r, before = m["qa"], base.get("qa")
            cited = f"citation coverage {_num(r.get('citation_coverage'), 100, 1)} %"
            for key, label in (("exact_match", "exact match %"), ("f1", "F1 %")):
                rows.append(
                    _figure_row(
                        name,
                        f"QA (n={r['n']})",
                        label,
                        r.get(key),
                        (before or {}).get(key),
                        100,
                        cited,
                        before is not None,
                    )
                )
    return _rows_table(
        "suites and benchmarks",
        ("evaluation", "metric", "model", "its base", "− base", "detail"),
        rows,
    )


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
