"""What the report reads from a run directory, and what a section says when it is missing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repolm.layout import RunLayout
from repolm.report.markup import missing_note

Scalars = dict[str, list[tuple[float, float]]]  # TensorBoard tag -> (step, value)


@dataclass(frozen=True)
class ReportInputs:
    """What the report shows; None where the run has not produced it."""

    run_dir: str
    manifest: dict[str, Any] = field(default_factory=dict)
    filter_stats: dict[str, Any] | None = None  # OUT/filter/stats.json
    dataset_stats: dict[str, Any] | None = None  # OUT/dataset/stats.json
    train: dict[str, Any] | None = None  # OUT/train/report.json
    eval: dict[str, Any] | None = None  # OUT/eval/report.json
    commits: dict[str, list[Any]] | None = None  # {"time": [epoch s], "split": [str | None]}
    scalars: dict[str, Scalars] = field(default_factory=dict)  # per model, from TensorBoard
    unreadable: tuple[str, ...] = ()  # inputs that exist but could not be read


RUN = RunLayout(Path())  # paths relative to the run directory, as the page names them

INPUTS = {  # field -> (file, the stage that writes it)
    "manifest": (RUN.manifest.as_posix(), "mine"),  # every stage updates it; mine is the first
    "filter_stats": (RUN.filter_stats.as_posix(), "filter"),
    "dataset_stats": (RUN.dataset_stats.as_posix(), "build"),
    "train": (RUN.train_report.as_posix(), "train"),
    "eval": (RUN.eval_report.as_posix(), "eval"),
}


def missing_inputs(inputs: ReportInputs) -> list[str]:
    """The run's outputs the report would show but that are not there."""
    return [file for name, (file, _) in INPUTS.items() if not getattr(inputs, name)]


def missing_section(name: str) -> str:
    """What a section says when the run lacks its input."""
    return missing_note(*INPUTS[name])
