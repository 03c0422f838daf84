"""What the commands share: their options, the config resolved once at the edge, the run
directory, and running stages through the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

RepoOpt = Annotated[Path, typer.Option("--repo", "-r", help="Repository to read (bare or not).")]
OutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="Run directory [default: runs/<repo name>].")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (over the preset).")
]
PresetOpt = Annotated[
    str | None, typer.Option("--preset", "-p", help="Preset [default: tiny-cpu].")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one key, e.g. --set mine.jobs=2 (repeatable)."),
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Run the stage(s) even if cached; upstream stages run only if stale "
        "(mine: re-mine all history).",
    ),
]


def resolve_config(preset: str | None, config: Path | None, overrides: list[str] | None):
    from repolm.config import load_config

    return load_config(preset=preset, config_file=config, overrides=overrides)


def default_out(repo: Path, out: Path | None) -> tuple[Path, Path]:
    """The repository's top-level path and the run directory."""
    from repolm.gitrepo import open_repo

    opened = open_repo(repo)
    return opened.path, (out if out is not None else Path("runs") / opened.name)


def run_stages(
    repo: Path,
    out: Path | None,
    config: Path | None,
    preset: str | None,
    overrides: list[str] | None,
    command: str,
    **kwargs,
) -> None:
    from repolm.logs import launch_rank, log_to_file
    from repolm.pipeline.display import print_outcomes
    from repolm.pipeline.runner import run_pipeline, select_stages

    select_stages(kwargs.get("only"), kwargs.get("until"))  # bad names fail before any work
    resolved = resolve_config(preset, config, overrides)
    repo_path, out_dir = default_out(repo, out)
    with log_to_file(out_dir, command):
        outcomes = run_pipeline(out_dir, repo_path, resolved, **kwargs)
    if launch_rank() == 0:  # one table, not one per process of a multi-process launch
        print_outcomes(out_dir, outcomes)
        if any(o.stage == "eval" and o.status in ("done", "cached") for o in outcomes):
            from repolm.eval.table import load_report, print_report

            print_report(load_report(out_dir))
