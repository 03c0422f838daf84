"""The run as one self-contained HTML page: the inputs a run directory holds in, a string out.

Pure: no file or network access. Everything that comes from the repository (paths, code,
commit messages, model output) is escaped; figures are inline SVG; the style sheet is inline;
the page loads nothing. A missing input (a run stopped before train or eval) leaves its
section with a line saying so. Secrets appear only as the types and counts the filter stage
recorded: the page never reads a text that was not scrubbed. The sections are their own
modules (overview, data, training, evaluation, samples); this one puts them on the page.
"""

from __future__ import annotations

from repolm.report import evaluation as ev
from repolm.report.data import data
from repolm.report.inputs import ReportInputs, missing_inputs
from repolm.report.markup import CSS, esc, note, when
from repolm.report.overview import overview
from repolm.report.samples import samples, timings
from repolm.report.training import training

__all__ = ["ReportInputs", "render_report"]

SECTIONS = {
    "overview": "Overview",
    "data": "Data",
    "training": "Training",
    "evaluation": "Evaluation",
    "samples": "Samples",
    "timings": "Timings",
}


def render_report(inputs: ReportInputs) -> str:
    """The whole page."""
    repo = (inputs.manifest.get("repository") or {}).get("path") or inputs.manifest.get(
        "repo_path", ""
    )
    nav = "".join(f'<a href="#{k}">{v}</a>' for k, v in SECTIONS.items())
    missing = missing_inputs(inputs)
    head = [
        f"<h1>repolm report: {esc(repo or inputs.run_dir)}</h1>",
        f'<p class="sub">run directory {esc(inputs.run_dir)}; updated '
        f"{when(inputs.manifest.get('updated', '—'))}</p><nav>{nav}</nav>",
    ]
    if missing:
        head.append(
            note(
                "Not in this run yet: "
                + ", ".join(esc(m) for m in missing)
                + ". Their sections say what is missing."
            )
        )
    if inputs.unreadable:
        head.append(note("Could not read: " + ", ".join(esc(u) for u in inputs.unreadable)))
    body = [
        _section("overview", overview(inputs)),
        _section("data", data(inputs)),
        _section("training", training(inputs)),
        _section("evaluation", ev.evaluation(inputs.eval)),
        _section("samples", samples(inputs.eval)),
        _section("timings", timings(inputs.eval)),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>repolm report: {esc(repo or inputs.run_dir)}</title>"
        f"<style>{CSS}</style></head><body><main>{''.join(head)}{''.join(body)}"
        "</main></body></html>\n"
    )


def _section(key: str, content: str) -> str:
    return f'<section id="{key}"><h2>{SECTIONS[key]}</h2>{content}</section>'
