"""Figures read out of an eval report (OUT/eval/report.json's dict): each held-out commit's
bits per byte, a fine-tuned model against its base, how much text bits per byte were measured
on. Pure; the terminal table (`eval.table`) and report.html (`report.evaluation`) both show
them, so both say the same thing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def delta(value: Any, base: Any, scale: float = 1.0, digits: int = 3) -> str:
    """A figure's difference from its base model's, signed; — when either is missing."""
    if not (is_num(value) and is_num(base)):
        return "—"
    return f"{(value - base) * scale:+.{digits}f}"


def bits_of(m: Mapping[str, Any], split: str) -> float | None:
    return ((m.get("bits_per_byte") or {}).get(split) or {}).get("bits_per_byte")


def base_verdict(name: str, m: Mapping[str, Any], splits: list[str]) -> str | None:
    """One line: on which splits a fine-tuned model needs fewer bits than its base, e.g.
    `main: fewer bits than its base on test (1.236 vs 1.257)`; None without a base."""
    base = m.get("base")
    if not base:
        return None
    clauses = []
    for s in splits:
        a, b = bits_of(m, s), bits_of(base, s)
        if not (is_num(a) and is_num(b)):
            continue
        word = "fewer" if a < b else "more" if a > b else "as many"
        than = "as" if a == b else "than"
        clauses.append(f"{word} bits {than} its base on {s} ({a:.3f} vs {b:.3f})")
    return f"{name}: " + "; ".join(clauses) if clauses else None


def _kb(n: float) -> str:
    return f"{n / 1000:,.0f} KB" if n >= 10_000 else f"{n / 1000:,.1f} KB"


def sample_size(entry: Mapping[str, Any]) -> str:
    """How much text a split's figures were measured on (a `text[split]` entry of the
    report): `20 commits, 58,793 bytes`, or `on a sample of 265 KB of 4,012 KB (120 of 606
    commits)` where eval.max_bytes chose whole records from a larger split (`full`)."""
    n, commits = entry.get("bytes"), entry.get("commits")
    full = entry.get("full") or {}
    if is_num(n) and is_num(full.get("bytes")) and n < full["bytes"]:
        text = f"on a sample of {_kb(n)} of {_kb(full['bytes'])}"
        if is_num(commits) and is_num(full.get("commits")):
            text += f" ({commits:,} of {full['commits']:,} commits)"
        return text
    parts = [
        f"{commits:,} commits" if is_num(commits) else "",
        f"{n:,} bytes" if is_num(n) else "",
    ]
    return ", ".join(p for p in parts if p)


def split_sizes(report: Mapping[str, Any], splits: list[str]) -> str:
    """Each split's measured text, and the longest sequence a model was given (`window`
    tokens: the build's seq_len unless eval.window says otherwise)."""
    text = report.get("text") or {}
    sizes = [f"{s}: {sample_size(text[s])}" if text.get(s) else s for s in splits]
    window = report.get("window")
    if is_num(window):
        sizes.append(f"in windows of {window:,} tokens")
    return "; ".join(sizes)


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
