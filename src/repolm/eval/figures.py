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


SAMPLE_KEYS = ("of_bytes", "of_records", "records")  # set when bits per byte ran on a sample


def _kb(n: float) -> str:
    return f"{n / 1000:,.0f} KB" if n >= 10_000 else f"{n / 1000:,.1f} KB"


def sample_size(entry: Mapping[str, Any]) -> str:
    """How much text a split's bits per byte were measured on: `20 commits, 58,793 bytes`,
    or `on a sample of 265 KB of 4,012 KB (120 of 606 commits)` when eval.max_bytes chose
    whole records from a larger split."""
    n = entry.get("bytes")
    records = entry.get("records", entry.get("commits", entry.get("documents")))
    of_bytes, of_records = entry.get("of_bytes"), entry.get("of_records")
    if is_num(of_bytes) and is_num(n) and n < of_bytes:
        text = f"on a sample of {_kb(n)} of {_kb(of_bytes)}"
        if is_num(records) and is_num(of_records):
            text += f" ({records:,} of {of_records:,} commits)"
        elif is_num(records):
            text += f" ({records:,} commits)"
        return text
    parts = [
        f"{records:,} commits" if is_num(records) else "",
        f"{n:,} bytes" if is_num(n) else "",
    ]
    return ", ".join(p for p in parts if p)


def split_sizes(report: Mapping[str, Any], splits: list[str]) -> str:
    """Each split's measured text: the report's `text` entry, or a model's bits-per-byte
    entry where that says it was a sample (every model scores the same bytes)."""
    out = []
    for s in splits:
        entry = (report.get("text") or {}).get(s) or {}
        for m in (report.get("models") or {}).values():
            bits = (m.get("bits_per_byte") or {}).get(s) or {}
            if any(k in bits for k in SAMPLE_KEYS):
                entry = {**entry, **{k: v for k, v in bits.items() if k in SAMPLE_KEYS}}
                entry["bytes"] = bits.get("bytes", entry.get("bytes"))
                break
        size = sample_size(entry)
        out.append(f"{s}: {size}" if size else s)
    return "; ".join(out)


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
