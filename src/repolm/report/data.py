"""The report's data section: what the filter kept and scrubbed, the dataset, the tokenizer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from repolm.report.inputs import ReportInputs, missing_section
from repolm.report.markup import esc, facts, fmt, size, table


def _reasons(excluded: Mapping[str, Any]) -> str:
    return (
        ", ".join(f"{esc(k)}: {fmt(v)}" for k, v in sorted(excluded.items(), key=lambda kv: -kv[1]))
        or "—"
    )


def data(inputs: ReportInputs) -> str:
    parts = ["<h3>Filtering</h3>"]
    f = inputs.filter_stats
    if f is None:
        parts.append(missing_section("filter_stats"))
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
        parts.append(missing_section("dataset_stats"))
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
