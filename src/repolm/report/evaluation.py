"""The evaluation's part of the report: bits per byte next to the compressors, the tasks next to
their baselines, suites, code benchmarks, QA; each fine-tuned model next to its base model on
every figure, in the tables and in a plot of its own. Pure: OUT/eval/report.json's dict (None
when the eval stage has not run) in, HTML out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from repolm.eval.figures import (
    base_verdict,
    beats_xz,
    bits_of,
    commit_rows,
    delta,
    is_num,
    split_sizes,
)
from repolm.eval.table import PERCENT_SCALE, TASK_METRICS
from repolm.report import plots
from repolm.report.markup import (
    bpb,
    esc,
    facts,
    fmt,
    missing_note,
    note,
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
        parts = [_bits(e), _versus(e), _commits(e), _tasks(models)]
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
            rows.append(
                (
                    f"{esc(name)} − its base",
                    *(delta(bits_of(m, s), bits_of(b, s)) for s in splits),
                )
            )
            classes += ["base", "base"]
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
    sizes = split_sizes(e, splits)
    verdicts = [base_verdict(n, m, splits) for n, m in (e.get("models") or {}).items()]
    parts = [
        "<h3>Bits per byte on the future (lower is better)</h3>",
        f"<p class=sub>measured on {esc(sizes)}</p>" if sizes else "",
        table(("", *map(esc, splits)), rows, classes=classes),
        "".join(f"<p>{esc(v)}</p>" for v in verdicts if v),
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


def _base_columns(
    name: str, base: Mapping[str, Any], values: Mapping[str, Any], before: Mapping[str, Any]
) -> list[tuple[str, Mapping[str, Any]]]:
    """The columns a fine-tuned model's base adds next to it: the base's figures, and the
    model's difference from them (signed)."""
    diff = {
        k: f"{v - before[k]:+.4g}" for k, v in values.items() if is_num(v) and is_num(before.get(k))
    }
    return [(f"its base {esc(base.get('model'))}", before), (f"{esc(name)} − base", diff)]


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
                metrics = result.get("metrics") or {}
                rows.append((f"model <b>{esc(name)}</b>", metrics))
                before = ((m.get("base") or {}).get("tasks") or {}).get(task)
                if before is not None:
                    rows += _base_columns(name, m["base"], metrics, before.get("metrics") or {})
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
        columns: list[tuple[str, Mapping[str, Any]]] = []
        for n, r in results.items():
            scores = _suite_scores(r)
            columns.append((f"model {esc(n)}", scores))
            before = ((models[n].get("base") or {}).get("suites") or {}).get(suite)
            if before is not None:
                columns += _base_columns(n, models[n]["base"], scores, _suite_scores(before))
        rows = [
            (
                esc(c),
                *(fmt(v.get(c)) for _, v in columns),
                fmt(
                    max(
                        (((r.get("categories") or {}).get(c) or {}).get("tests") or 0)
                        for r in results.values()
                    )
                ),
            )
            for c in cats
        ]
        rows.append(("<b>overall</b>", *(f"<b>{fmt(v.get(OVERALL))}</b>" for _, v in columns), ""))
        parts.append(
            f"<h3>Suite: {esc(suite)}</h3><p class=sub>scores 0-100 by rubric, higher is better</p>"
            + table(("category", *(label for label, _ in columns), "tests"), rows)
        )
    return "".join(parts)


OVERALL = "\0overall"  # a key no category has


def _suite_scores(r: Mapping[str, Any]) -> dict[str, Any]:
    """A suite result as {category: score, OVERALL: overall}."""
    scores = {c: (v or {}).get("score") for c, v in (r.get("categories") or {}).items()}
    return {**scores, OVERALL: r.get("overall")}


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
        base = m.get("base") or {}
        for bench, r in (base.get("code") or {}).items():
            passes = ", ".join(
                f"{k} {100 * v:.1f}%" for k, v in r.items() if k.startswith("pass@") and is_num(v)
            )
            label = f"{esc(name)}'s base {esc(base.get('model'))}"
            rows.append((label, esc(bench), fmt(r.get("problems")), passes or "—", ""))
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


def _versus(e: Mapping[str, Any]) -> str:
    """A plot for each fine-tuned model next to its base model on every figure."""
    parts = []
    for name, m in (e.get("models") or {}).items():
        base = m.get("base")
        if not base:
            continue
        model, before = f"model {name}", f"base {base.get('model')}"
        panels = [_bits_panel(e, m, model, before), *_task_panels(m, model, before)]
        suites = [
            (s, _bars((model, r.get("overall")), (before, _get(base, "suites", s, "overall"))))
            for s, r in (m.get("suites") or {}).items()
        ]
        panels.append(("suites, 0-100 (higher is better)", suites))
        panels = [p for p in panels if any(bars for _, bars in p[1])]
        if panels:
            parts.append(
                f"<h3>Model {esc(name)} next to its base {esc(base.get('model'))}</h3>"
                + plots.versus_plot(f"{name} vs its base", model, before, panels)
            )
    return "".join(parts)


def _get(d: Any, *keys: str) -> Any:
    """d[k1][k2]…, None where a level is missing."""
    for k in keys:
        d = d.get(k) if isinstance(d, Mapping) else None
    return d


def _bars(*pairs: tuple[str, Any]) -> list[tuple[str, float]]:
    return [(label, float(v)) for label, v in pairs if is_num(v)]


def _bits_panel(e: Mapping[str, Any], m: Mapping[str, Any], model: str, before: str) -> Any:
    compressors = e.get("baselines") or {}
    groups = []
    for split in compressors or m.get("bits_per_byte") or {}:
        pairs = [(model, bits_of(m, split)), (before, bits_of(m["base"], split))]
        for c, v in (compressors.get(split) or {}).items():
            pairs += [
                (c, v.get("bits_per_byte")),
                (f"{c} conditioned", v.get("conditioned_bits_per_byte")),
            ]
        groups.append((split, _bars(*pairs)))
    return ("bits per byte (lower is better)", groups)


def _task_panels(m: Mapping[str, Any], model: str, before: str) -> list[Any]:
    """A panel a task: each metric (in %, BLEU as it is) for the model, its base and the
    baselines."""
    panels = []
    for task, result in (m.get("tasks") or {}).items():
        old = _get(m["base"], "tasks", task, "metrics") or {}
        groups = []
        for key, v in (result.get("metrics") or {}).items():
            scale = PERCENT_SCALE.get(key, 100.0)
            pairs = [(model, v), (before, old.get(key))]
            pairs += [
                (f"baseline {b}", (x or {}).get(key))
                for b, x in (result.get("baselines") or {}).items()
            ]
            name = dict(TASK_METRICS.get(task, ())).get(key, key).removesuffix(" %")
            groups.append((name, [(label, value * scale) for label, value in _bars(*pairs)]))
        panels.append((f"{task.replace('_', ' ')} (higher is better)", groups))
    return panels
