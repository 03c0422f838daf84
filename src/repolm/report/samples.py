"""The report's Samples and Timings sections: each generation task's kept examples, the
model's output beside the real future and the baselines'; each evaluation's seconds and peak
memory. Pure: OUT/eval/report.json's dict (None when the eval stage has not run) in, HTML
out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from repolm.report.markup import duration, esc, note, pre, size, table

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
