"""What the terminal shows at the end of a command: outcomes of a run, states of a run dir."""

from __future__ import annotations

import contextlib
from pathlib import Path

from rich.console import Console
from rich.table import Table

from repolm.errors import RepolmError
from repolm.layout import RunLayout
from repolm.pipeline import manifest as mf
from repolm.pipeline.registry import PLANNED, REGISTRY
from repolm.pipeline.runner import Outcome, fingerprint, refs_digest, stage_state

STATE_STYLE = {
    "done": "green",
    "cached": "cyan",
    "stale": "yellow",
    "failed": "red",
    "not run": "dim",
    "skipped": "yellow",
    "not built": "dim",
}


def print_outcomes(out: Path, outcomes: list[Outcome]) -> None:
    table = Table(title=f"repolm run: {out}", title_justify="left")
    for col in ("stage", "status", "seconds", "figures"):
        table.add_column(col)
    for o in outcomes:
        style = STATE_STYLE.get(o.status, "")
        table.add_row(o.stage, f"[{style}]{o.status}[/]", f"{o.seconds:.1f}", o.summary)
    console = Console()
    console.print(table)
    console.print(f"results: {out}  (manifest: {RunLayout(out).manifest})")


def print_stages(out: Path) -> None:
    manifest = mf.load(out)
    if not manifest:
        name = RunLayout(out).manifest.name
        raise RepolmError(f"no run in {out} (no {name})", "run 'repolm run' first, or pass --out")
    states = manifest.get("stages", {})
    config = _run_config(out)
    refs = None
    # If the repository moved or is gone, show recorded states, staleness from outputs only.
    with contextlib.suppress(RepolmError, KeyError):
        refs = refs_digest(Path(manifest["repo_path"]))
    table = Table(title=f"stages of {out}", title_justify="left")
    for col in ("stage", "state", "last run", "seconds", "figures"):
        table.add_column(col)
    for name in PLANNED:
        stage = REGISTRY.get(name)
        if stage is None:
            table.add_row(name, "[dim]not built[/]", "", "", "")
            continue
        entry = states.get(name)
        fp = None
        if config is not None and (refs is not None or not stage.reads_repo):
            fp = fingerprint(stage, config, states, refs)
        state = stage_state(stage, entry, fp, out)
        entry = entry or {}
        figures = entry.get("summary") or entry.get("error", "")
        table.add_row(
            name,
            f"[{STATE_STYLE[state]}]{state}[/]",
            entry.get("started", ""),
            f"{entry['seconds']:.1f}" if "seconds" in entry else "",
            figures,
        )
    Console().print(table)


def _run_config(out: Path) -> dict | None:
    import yaml

    try:
        return yaml.safe_load(RunLayout(out).run_config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
