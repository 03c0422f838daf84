"""The terminal tables of `repolm eval` / `repolm run` / `eval compare`, from report dicts built
by hand (no model): each fine-tuned model next to its base on every figure, the bits-per-byte
sample's size, and a run without a base unchanged."""

from __future__ import annotations

import copy
import io
from typing import Any

from rich.console import Console

from repolm.eval.figures import base_verdict, sample_size, split_sizes
from repolm.eval.table import print_report
from test_report import eval_report


def rendered(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    print_report(report, Console(file=buf, width=240, color_system=None))
    return buf.getvalue()


def with_base_everywhere() -> dict[str, Any]:
    """The hand-built report, its model main fine-tuned from a base measured on every figure."""
    report = eval_report()
    main = report["models"]["main"]
    base = copy.deepcopy({k: main[k] for k in ("bits_per_byte", "tasks", "suites", "code", "qa")})
    base["bits_per_byte"]["test"]["bits_per_byte"] = 1.257
    base["tasks"]["completion"]["metrics"]["next_line_em"] = 0.5
    base["tasks"]["next_change"]["metrics"]["recall@5"] = 0.25
    base["suites"]["core"]["overall"] = 40.5
    base["code"]["humaneval"]["pass@1"] = 0.4
    base["qa"]["f1"] = 0.125
    main["base"] = {"model": "smollm2-135m", **base}
    main["bits_per_byte"]["test"]["bits_per_byte"] = 1.236
    return report


def row(text: str, start: str, *having: str) -> list[str]:
    """The cells of the one table row that starts with `start` and has the cells `having`."""
    (line,) = [
        ln
        for ln in text.splitlines()
        if ln[:1] == "│" and cells(ln)[0] == start and set(having) <= set(cells(ln))
    ]
    return cells(line)


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("│┃").replace("┃", "│").split("│")]


def test_each_fine_tuned_model_stands_next_to_its_base_on_every_figure() -> None:
    text = rendered(with_base_everywhere())
    # bits per byte: the base's row and the difference under the model's, and the verdict
    assert row(text, "model main") == ["model main", "1.236", "1.432"]
    assert row(text, "its base smollm2-135m") == ["its base smollm2-135m", "1.257", "1.432"]
    assert row(text, "main − base") == ["main − base", "-0.021", "+0.000"]
    assert (
        "main: fewer bits than its base on test (1.236 vs 1.257); as many bits as its base" in text
    )
    assert row(text, "its base tiny/base")[1:] == ["1.988", "2.012"]  # ft, bits only
    assert row(text, "ft − base")[1:] == ["-0.877", "-0.679"]
    assert "ft: fewer bits than its base on test (1.111 vs 1.988)" in text
    # every task metric: the model, its base, the difference, then the baselines
    (head,) = [ln for ln in text.splitlines() if ln.startswith("┃ task")]
    assert cells(head) == ["task", "metric", "model", "its base", "− base", "baselines"]
    exact = row(text, "main: completion (n=4)", "next line exact %")
    assert exact == [
        "main: completion (n=4)",
        "next line exact %",
        "25.0",
        "50.0",
        "-25.0",
        "retrieval: 12.5",
    ]
    (recall,) = [ln for ln in text.splitlines() if "recall@5 %" in ln]
    assert "100.0 │     25.0 │  +75.0" in recall
    assert "main: above its base on 1 of 6 figures, below on 1" in text
    # suites, code benchmarks and QA too
    assert row(text, "main: suite core (5 tests)")[2:5] == ["0.6", "40.5", "-40.0"]
    assert row(text, "main: humaneval (5 problems)")[2:5] == ["20.0", "40.0", "-20.0"]
    (f1,) = [ln for ln in text.splitlines() if "F1 %" in ln and "QA" in ln]
    assert "62.5 │     12.5 │  +50.0" in f1
    assert "main: above its base on 1 of 4 figures, below on 2" in text


def test_without_a_base_the_tables_are_unchanged() -> None:
    report = eval_report()
    del report["models"]["ft"]
    text = rendered(report)
    assert "base" not in text.replace("baselines", "")
    (head,) = [ln for ln in text.splitlines() if ln.startswith("┃ task")]
    assert [c.strip() for c in head.strip("┃").split("┃")] == [
        "task",
        "metric",
        "model",
        "baselines",
    ]
    assert row(text, "model main") == ["model main", "1.234", "1.432"]


def test_the_table_says_how_much_text_bits_per_byte_were_measured_on() -> None:
    report = eval_report()
    title = "bits per byte on the future (lower is better): test: 3 commits, 4,000 bytes; val: 2"
    assert title in rendered(report)
    # a sample of whole records (eval.max_bytes): its size next to the split's
    report["text"]["test"].update(bytes=265_000, commits=20)
    report["text"]["test"]["full"] = {"documents": 606, "bytes": 4_012_000, "commits": 606}
    report["window"] = 512
    sample = "test: on a sample of 265 KB of 4,012 KB (20 of 606 commits)"
    sizes = f"{sample}; val: 2 commits, 3,000 bytes; in windows of 512 tokens"
    assert split_sizes(report, ["test", "val"]) == sizes
    assert sizes in rendered(report)
    whole = {"bytes": 900, "commits": 2, "full": {"bytes": 900, "commits": 2}}
    assert sample_size(whole) == "2 commits, 900 bytes"
    assert sample_size({"bytes": 5_000, "full": {"bytes": 9_000}}) == (
        "on a sample of 5.0 KB of 9.0 KB"
    )
    assert sample_size({}) == ""


def test_the_verdict_needs_both_figures() -> None:
    model = {"bits_per_byte": {"test": {"bits_per_byte": 1.5}}}
    assert base_verdict("m", model, ["test"]) is None
    model["base"] = {"model": "b", "bits_per_byte": {"test": {"bits_per_byte": 1.25}}}
    assert base_verdict("m", model, ["test", "val"]) == (
        "m: more bits than its base on test (1.500 vs 1.250)"
    )
    model["base"]["bits_per_byte"] = {}
    assert base_verdict("m", model, ["test"]) is None
