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
from repolm.cli.common import (
    ConfigOpt,
    ForceOpt,
    OutOpt,
    PresetOpt,
    RepoOpt,
    SetOpt,
    default_out,
    resolve_config,
    run_stages,
)
from repolm.cli.evals import eval_app
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
    run_stages(
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
        run_stages(repo, out, config, preset, set_, name, only=[name], force=force)

    command.__doc__ = f"The {name} stage: {describe}."
    app.command(name=name)(command)


for _stage in REGISTRY.values():
    if _stage.name not in ("train", "eval"):
        _stage_command(_stage.name, _stage.describe)
app.add_typer(eval_app, name="eval")


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
    run_stages(
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

    resolved = resolve_config(preset, config, set_)
    _, out_dir = default_out(repo, out)
    print_plan(out_dir, resolved.config, measure=measure)


@app.command()
def export(
    repo: RepoOpt = Path("."),
    out: OutOpt = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model to export [default: the first].")
    ] = None,
    format_: Annotated[
        str,
        typer.Option("--format", "-f", help="merged: a Hugging Face directory; gguf: GGUF."),
    ] = "gguf",
    dtype: Annotated[
        str, typer.Option("--dtype", help="GGUF precision: f32, f16 or q8_0.")
    ] = "f16",
) -> None:
    """Export a trained model to OUT/export/<model>/: merged safetensors, or a GGUF file with an
    Ollama Modelfile."""
    from repolm.export.model import export_model

    out_dir = out if out is not None else default_out(repo, None)[1]
    done = export_model(out_dir, model, format_, dtype)
    typer.echo(f"{done.format}: {done.path}" + (f" ({done.modelfile})" if done.modelfile else ""))
    typer.echo("serve it with:\n" + "\n".join(f"  {c}" for c in done.commands()))


@app.command()
def complete(
    prompt: Annotated[str | None, typer.Argument(help="Text to continue (or --file).")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Complete at a cursor in this file.")
    ] = None,
    line: Annotated[
        int | None, typer.Option("--line", "-l", help="The cursor's line (1-).")
    ] = None,
    column: Annotated[
        int | None, typer.Option("--column", help="The cursor's column (1-) [default: line end].")
    ] = None,
    repo: RepoOpt = Path("."),
    out: OutOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="A model of the run, or a model directory, GGUF or base name."
        ),
    ] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Most new tokens.")] = 128,
    temperature: Annotated[
        float, typer.Option("--temperature", "-t", min=0.0, help="0: greedy.")
    ] = 0.0,
    top_p: Annotated[
        float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass.")
    ] = 1.0,
    stop: Annotated[
        list[str] | None, typer.Option("--stop", help="Stop before this text (repeatable).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for sampling.")] = None,
    language: Annotated[
        str | None, typer.Option("--language", help="A prompt's language: stop at its unit's end.")
    ] = None,
    context: Annotated[
        int, typer.Option("--context", min=16, help="Most tokens of prompt and completion.")
    ] = 2048,
) -> None:
    """Complete a prompt, or the code at a cursor (fill-in-the-middle where the model learned
    it), streaming the text as it is generated; it stops where the unit of code ends."""
    from repolm.serve.complete import at_cursor, complete, model_for
    from repolm.serve.engine import Runner

    if (prompt is None) == (file is None):
        raise RepolmError("give a prompt or --file (not both)", "repolm complete --help")
    if file is not None and line is None:
        raise RepolmError("--file needs --line", "give the cursor's line, e.g. --line 12")
    where = at_cursor(file, line or 1, column) if file is not None else prompt or ""
    try:  # without --out, the repository's default run (when in one)
        default = default_out(repo, None)[1] if out is None else None
    except RepolmError:
        default = None
    lm = model_for(model, out, default, context)
    runner = Runner()  # the model runs here, on the thread that loaded it; printing on another

    def show() -> None:
        text = ""
        args = (max_tokens, stop or (), temperature, top_p, language, seed, runner)
        for piece in complete(lm, where, *args):
            text += piece
            sys.stdout.write(piece)
            sys.stdout.flush()
        if sys.stdout.isatty() and not text.endswith("\n"):
            sys.stdout.write("\n")

    runner.run_while(show)


@app.command()
def serve(
    repo: RepoOpt = Path("."),
    out: OutOpt = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Serve this model directory too (repeatable)."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535)] = 8000,
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="Allow a non-loopback --host (needs a key).")
    ] = False,
    api_key: Annotated[
        list[str] | None, typer.Option("--api-key", help="A key clients must send (repeatable).")
    ] = None,
    api_key_file: Annotated[
        Path | None, typer.Option("--api-key-file", help="A file of keys, one per line.")
    ] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option("--cors-origin", help="Allow this browser origin.")
    ] = None,
    context: Annotated[
        int, typer.Option("--context", min=16, help="Most tokens of prompt and completion.")
    ] = 2048,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Rows per batch.")] = 16,
    max_queue: Annotated[
        int, typer.Option("--max-queue", min=1, help="Waiting requests before 503.")
    ] = 64,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Seconds a request may take.")
    ] = 300.0,
) -> None:
    """Serve the run's models with an OpenAI-compatible API (completions with FIM, chat,
    responses, streaming), batching concurrent requests; loopback only unless asked."""
    from repolm.serve.app import Settings
    from repolm.serve.server import api_keys, check_address, serve, served_models

    run_dir = out
    if run_dir is None and not model:
        run_dir = default_out(repo, None)[1]
    settings = Settings(
        api_keys=api_keys(api_key, api_key_file),
        cors_origins=tuple(cors_origin or ()),
        timeout_s=timeout,
    )
    check_address(host, settings, allow_remote)  # before minutes of loading models
    models = served_models(run_dir, model, context, max_batch, max_queue)
    serve(models, host, port, settings, allow_remote)


@app.command()
def stages(repo: RepoOpt = Path("."), out: OutOpt = None) -> None:
    """Show each stage's state (done / cached / stale / failed / not run), time and figures."""
    from repolm.pipeline.display import print_stages

    out_dir = out if out is not None else default_out(repo, None)[1]
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
    typer.echo(resolve_config(preset, config, set_).to_yaml(), nl=False)


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
