"""HTML building blocks for the report: escaping, number formats, tables, notes and the
inline style sheet. Pure; every text from outside goes through `esc` (or `pre`)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 color:#111827;background:#f9fafb;margin:0}
main{max-width:1120px;margin:0 auto;padding:16px 28px 48px;background:#fff}
h1{font-size:24px;margin:8px 0 4px}h2{font-size:19px;margin:32px 0 8px;padding-top:8px;
 border-top:2px solid #e5e7eb}h3{font-size:15px;margin:20px 0 6px}
nav a{margin-right:14px;color:#2563eb;text-decoration:none}
.sub{color:#6b7280}.note{color:#92400e;background:#fffbeb;border-left:3px solid #f59e0b;
 padding:6px 10px;margin:8px 0}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{padding:3px 10px;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;
 white-space:nowrap}
tr.base td{color:#4b5563}
tr.worse td{background:#fef2f2}
pre{background:#f6f8fa;border:1px solid #e5e7eb;border-radius:4px;padding:6px 8px;margin:2px 0;
 font:12px/1.4 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;white-space:pre-wrap;
 word-break:break-word;max-height:320px;overflow:auto}
pre.empty{color:#9ca3af;font-style:italic}
svg.plot{max-width:100%;height:auto;display:block;margin:6px 0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:10px}
.sample h4{margin:6px 0 2px;font-size:12px;color:#374151}

.sample{border:1px solid #e5e7eb;border-radius:6px;padding:8px 10px;margin:10px 0}
.yes{color:#15803d;font-weight:600}.no{color:#b91c1c;font-weight:600}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any) -> str:
    """A number for a table: thousands separated, about four significant digits."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return "0" if value == 0 else f"{value:.4g}"
    return esc(value)


def bpb(value: Any) -> str:
    return "—" if not isinstance(value, (int, float)) else f"{value:.3f}"


def size(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return "—"


def duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "—"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def when(iso: Any) -> str:
    """An ISO time as `YYYY-MM-DD HH:MM UTC±hh:mm`, or as given."""
    try:
        t = datetime.fromisoformat(str(iso))
    except ValueError:
        return esc(iso)
    return esc(t.strftime("%Y-%m-%d %H:%M") + (f" {t.strftime('%z')}" if t.tzinfo else ""))


def table(
    head: Sequence[str] | None,
    rows: Iterable[Sequence[Any]],
    numeric: int | Sequence[int] = 1,
    classes: Sequence[str] = (),
) -> str:
    """Cells already rendered as HTML; the `numeric` columns (an int: from that one on) are
    right-aligned; no header row without `head`."""
    right = set(numeric) if not isinstance(numeric, int) else set(range(numeric, 99))
    th = "".join(
        f"<th{' class=n' if i in right else ''}>{h}</th>" for i, h in enumerate(head or ())
    )
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{classes[r]}"' if r < len(classes) and classes[r] else ""
        tds = "".join(f"<td{' class=n' if i in right else ''}>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table>{f'<tr>{th}</tr>' if th else ''}{''.join(body)}</table>" if body else ""


def facts(pairs: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of label / rendered value, rows with None left out."""
    return table(None, [(esc(k), v) for k, v in pairs if v is not None], numeric=9)


def note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def pre(text: Any) -> str:
    """Text as it is, escaped; an empty or blank text says so (a box of newlines says nothing)."""
    value = "" if text is None else str(text)
    if not value.strip():
        return f'<pre class="empty">({"whitespace only" if value else "empty"})</pre>'
    return f"<pre>{esc(value)}</pre>"


def parse_flag(value: Any) -> str:
    if value is None:
        return "blank, not checked"
    return '<span class="yes">parses</span>' if value else '<span class="no">does not parse</span>'


def missing_note(file: str, stage: str) -> str:
    """What a section says when the run has not produced its input."""
    return note(
        f"No {esc(file)} in this run: the {stage} stage has not run "
        f"(run <code>repolm run</code> through {stage})."
    )
