"""The evaluation's part of the report: bits per byte next to the compressors, the tasks next to
their baselines, suites, code benchmarks, QA; the samples beside the real future; the timings.
Pure: OUT/eval/report.json's dict (None when the eval stage has not run) in, HTML out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from repolm.eval.figures import beats_xz, commit_rows
from repolm.report import plots
from repolm.report.markup import (
    bpb,
    duration,
    esc,
    facts,
    fmt,
    missing_note,
    note,
    pre,
    size,
    table,
)

EVAL_FILE = "eval/report.json"
RESULT_KEYS = {"split", "n", "metrics", "baselines", "samples", "seconds"}  # the rest: extras


def evaluation(e: Mapping[str, Any] | None) -> str:
    """Every figure of the eval report, each next to its baselines."""
    if not e:
        return missing_note(EVAL_FILE, "eval")
    models = e.get("models") or {}
    future = e.get("future")
    if future:  # nothing held out: what the repository lacks instead of the future's figures
        parts = [
            note(
                f"No evaluation on the future: {esc(future.get('reason'))}. Bits per byte "
                "and the generation tasks need commits after the cutoff; the model "
                "trained on all of them."
            )
        ]
    else:
        parts = [_bits(e), _commits(e), _tasks(models)]
    parts += [_suites(models), _code(models), _qa(models)]
    return "".join(parts)


def _bits(e: Mapping[str, Any]) -> str:
    """Bits per byte of each model, its base and the compressors on each future split."""
    base = e.get("baselines") or {}
    text = e.get("text") or {}
    splits = list(base) or list(
        dict.fromkeys(
            s for m in (e.get("models") or {}).values() for s in m.get("bits_per_byte") or {}
        )
    )
    rows, classes = [], []
    bars: dict[str, dict[str, float]] = {s: {} for s in splits}
    for name, m in (e.get("models") or {}).items():
        values = [
            ((m.get("bits_per_byte") or {}).get(s) or {}).get("bits_per_byte") for s in splits
        ]
        rows.append((f"model <b>{esc(name)}</b>", *map(bpb, values)))
        classes.append("")
        for s, v in zip(splits, values, strict=True):
            if v is not None:
                bars[s][name] = v
        if m.get("base"):
            b = m["base"]
            values = [
                ((b.get("bits_per_byte") or {}).get(s) or {}).get("bits_per_byte") for s in splits
            ]
            rows.append((f"its base {esc(b.get('model'))}", *map(bpb, values)))
            classes.append("base")
            for s, v in zip(splits, values, strict=True):
                if v is not None:
                    bars[s][f"{name} base"] = v
    conditioning = (text.get("train") or {}).get("conditioning_bytes")
    compressors = list(dict.fromkeys(c for s in splits for c in base.get(s) or {}))
    lines: dict[str, dict[str, tuple[float, float | None]]] = {s: {} for s in splits}
    for c in compressors:
        cells = [(base.get(s) or {}).get(c) or {} for s in splits]
        rows.append((esc(c), *(bpb(x.get("bits_per_byte")) for x in cells)))
        classes.append("base")
        if any("conditioned_bits_per_byte" in x for x in cells):
            rows.append(
                (
                    f"{esc(c)} after {size(conditioning)} of training text",
                    *(bpb(x.get("conditioned_bits_per_byte")) for x in cells),
                )
            )
            classes.append("base")
        for s, x in zip(splits, cells, strict=True):
            if x.get("bits_per_byte") is not None:
                lines[s][c] = (x["bits_per_byte"], x.get("conditioned_bits_per_byte"))
    sizes = "; ".join(
        f"{esc(s)}: {fmt((text.get(s) or {}).get('commits'))} commits, "
        f"{size((text.get(s) or {}).get('bytes'))}"
        for s in splits
        if s in text
    )
    parts = [
        "<h3>Bits per byte on the future (lower is better)</h3>",
        f"<p class=sub>{sizes}</p>" if sizes else "",
        table(("", *map(esc, splits)), rows, classes=classes),
    ]
    if any(bars.values()) or any(lines.values()):
        parts.append(plots.bits_plot(bars, lines))
    return "".join(parts)


HARDEST = 20  # commits listed, hardest first


def _commits(e: Mapping[str, Any]) -> str:
    """Each future commit's bits per byte, for each model and for xz on that commit alone:
    which commits surprised the model (new code, a new subsystem) and where a compressor,
    finding the commit's own repetitions, does better."""
    models = list(e.get("models") or {})
    rows = commit_rows(e)
    if not rows or not models:
        return ""
    head = ("commit", "split", "subject", "size", *(f"model {esc(n)}" for n in models), "xz -9e")
    body, classes = [], []
    for split, c, scores in rows[:HARDEST]:
        xz = c.get("xz -9e")
        body.append(
            (
                f"<code>{esc(str(c.get('sha'))[:10])}</code>",
                esc(split),
                esc(c.get("subject")),
                size(c.get("bytes")),
                *(bpb(scores.get(n)) for n in models),
                bpb(xz),
            )
        )
        behind = xz is not None and any(v > xz for v in scores.values())
        classes.append("worse" if behind else "")
    wins = "; ".join(
        f"model {esc(n)} beats xz on {beats_xz(rows, n)} of {len(rows)}" for n in models
    )
    shown = f"the {HARDEST} hardest of {len(rows)}" if len(rows) > HARDEST else "all"
    return (
        "<h3>Each future commit, hardest for the model first</h3>"
        f"<p class=sub>bits per byte of each commit record ({shown}); xz -9e compresses "
        f"each commit alone, without the rest of the split, so its figures are higher than "
        f"in the table above; rows where a model is behind xz are marked. {wins}.</p>"
        + table(head, body, numeric=3, classes=classes)
    )


def _metric_table(columns: list[tuple[str, Mapping[str, Any]]]) -> str:
    """A metric a row, the model(s) and the baselines a column each (metrics outnumber them)."""
    keys = list(
        dict.fromkeys(
            k
            for _, v in columns
            for k, x in v.items()
            if isinstance(x, (int, float)) and not isinstance(x, bool)
        )
    )
    body = [(esc(k), *(fmt(v.get(k)) for _, v in columns)) for k in keys]
    return table(("metric", *(label for label, _ in columns)), body)


def _tasks(models: Mapping[str, Any]) -> str:
    names = list(dict.fromkeys(t for m in models.values() for t in m.get("tasks") or {}))
    if not names:
        return "<h3>Tasks</h3>" + note("No generation task was evaluated (eval.tasks).")
    parts = []
    for task in names:
        rows: list[tuple[str, Mapping[str, Any]]] = []
        first: Mapping[str, Any] = {}
        for name, m in models.items():
            result = (m.get("tasks") or {}).get(task)
            if result:
                first = first or result
                rows.append((f"model <b>{esc(name)}</b>", result.get("metrics") or {}))
        for b, v in (first.get("baselines") or {}).items():
            rows.append((f"baseline {esc(b)}", v or {}))
        extra = ", ".join(
            f"{esc(k.replace('_', ' '))} {fmt(v)}"
            for k, v in first.items()
            if k not in RESULT_KEYS and not isinstance(v, (dict, list))
        )
        parts.append(
            f"<h3>Task: {esc(task.replace('_', ' '))}</h3><p class=sub>"
            f"{esc(first.get('split'))} split, {fmt(first.get('n'))} items"
            f"{'; ' + extra if extra else ''}; higher is better</p>" + _metric_table(rows)
        )
    return "".join(parts)


def _suites(models: Mapping[str, Any]) -> str:
    names = list(dict.fromkeys(s for m in models.values() for s in m.get("suites") or {}))
    parts = []
    for suite in names:
        results = {n: (m.get("suites") or {}).get(suite) or {} for n, m in models.items()}
        cats = list(dict.fromkeys(c for r in results.values() for c in r.get("categories") or {}))
        rows = [
            (
                esc(c),
                *(
                    fmt(((r.get("categories") or {}).get(c) or {}).get("score"))
                    for r in results.values()
                ),
                fmt(
                    max(
                        (((r.get("categories") or {}).get(c) or {}).get("tests") or 0)
                        for r in results.values()
                    )
                ),
            )
            for c in cats
        ]
        rows.append(
            ("<b>overall</b>", *(f"<b>{fmt(r.get('overall'))}</b>" for r in results.values()), "")
        )
        parts.append(
            f"<h3>Suite: {esc(suite)}</h3><p class=sub>scores 0-100 by rubric, higher is better</p>"
            + table(("category", *(f"model {esc(n)}" for n in results), "tests"), rows)
        )
    return "".join(parts)


def _code(models: Mapping[str, Any]) -> str:
    rows = []
    for name, m in models.items():
        for bench, r in (m.get("code") or {}).items():
            passes = ", ".join(
                f"{k} {100 * v:.1f}%"
                for k, v in r.items()
                if k.startswith("pass@") and isinstance(v, (int, float))
            )
            statuses = ", ".join(
                f"{esc(k)} {fmt(v)}" for k, v in (r.get("statuses") or {}).items() if v
            )
            rows.append((esc(name), esc(bench), fmt(r.get("problems")), passes or "—", statuses))
    if not rows:
        return ""
    return "<h3>Code benchmarks</h3>" + table(
        ("model", "benchmark", "problems", "pass", "runs ended"), rows, numeric=(2, 3)
    )


def _qa(models: Mapping[str, Any]) -> str:
    parts = []
    for name, m in models.items():
        qa = m.get("qa")
        if not qa:
            continue
        parts.append(
            f"<h3>Questions and answers: model {esc(name)}</h3>"
            + facts(
                [
                    (k.replace("_", " "), fmt(qa.get(k)))
                    for k in ("n", "exact_match", "f1", "citation_coverage")
                ]
            )
        )
        rows = [
            (
                esc(s.get("question")),
                esc(s.get("answer")),
                esc("; ".join(map(str, s.get("reference") or []))),
            )
            for s in qa.get("samples") or []
        ]
        parts.append(table(("question", "model's answer", "reference"), rows, numeric=9))
    return "".join(parts)


# -- samples and timings ------------------------------------------------------------------------

SAMPLE_TITLES = {
    "completion": "Completion of functions written after the cutoff",
    "next_change": "Which files a commit changes, from its message",
    "commit_messages": "Commit messages from diffs",
}


def _text(value: Any, hits: Sequence[Any] = ()) -> str:
    """A text, or a list one item a line; items also in `hits` (the files a commit really
    changed, in a ranking) marked with a check."""
    if not isinstance(value, (list, tuple)):
        return str(value or "")
    if not hits:
        return "\n".join(map(str, value))
    return "\n".join(f"{'✓' if v in hits else ' '} {v}" for v in value)


def sample_card(s: Mapping[str, Any], task: str) -> str:
    """One example: its input, then the model's output next to the real future and the
    baselines' outputs."""
    head = [
        f"<b>{esc(s.get('path'))}</b> {esc(s.get('name'))}" if s.get("path") else "",
        f"commit <code>{esc(str(s.get('sha'))[:12])}</code>" if s.get("sha") else "",
        esc(s.get("change_type")) if s.get("change_type") else "",
        ("seen in training" if s["seen_in_train"] else "not seen in training")
        if "seen_in_train" in s
        else "",
    ]
    label = {
        "completion": "context before the cursor",
        "next_change": "commit message",
        "commit_messages": "files changed",
    }.get(task, "input")
    cols = [("model", s["model"])] if "model" in s else []
    cols.append(("the real future", s.get("reference")))
    cols += [(f"baseline: {b}", v) for b, v in (s.get("baselines") or {}).items()]
    real = s.get("reference")
    hits = real if isinstance(real, (list, tuple)) else ()
    grid = "".join(
        f"<div><h4>{esc(t)}</h4>{pre(_text(v, hits if v is not real else ()))}</div>"
        for t, v in cols
    )
    return (
        f'<div class="sample">{" · ".join(h for h in head if h)}'
        f"<h4>{label}</h4>{pre(_text(s.get('input')))}<div class=grid>{grid}</div></div>"
    )


def samples(e: Mapping[str, Any] | None) -> str:
    """The examples each generation task kept, per model."""
    if not e:
        return note("No evaluation in this run yet (see Evaluation).")
    parts = []
    for name, m in (e.get("models") or {}).items():
        for task, result in (m.get("tasks") or {}).items():
            shown = result.get("samples") or []
            if shown:
                parts.append(
                    f"<h3>{esc(SAMPLE_TITLES.get(task, task))}: model {esc(name)}</h3>"
                    + "".join(sample_card(s, task) for s in shown)
                )
    return "".join(parts) or note("The evaluation kept no samples (no generation task ran).")


def timings(e: Mapping[str, Any] | None) -> str:
    """Each evaluation's seconds and peak memory."""
    if not e:
        return note("No evaluation in this run yet (see Evaluation).")
    rows = [
        (
            esc(k),
            duration(v.get("seconds")),
            size(v.get("peak_rss_bytes")),
            size(v.get("peak_gpu_memory_bytes")) if "peak_gpu_memory_bytes" in v else "—",
        )
        for k, v in (e.get("timings") or {}).items()
    ]
    total = f"<p class=sub>The evaluation took {duration(e.get('seconds'))} in all.</p>"
    return total + table(("evaluation", "time", "peak memory (process)", "peak GPU memory"), rows)
