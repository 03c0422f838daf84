"""Completion for a user: of a prompt, or at a cursor in a file (`--file PATH --line N
[--column C]`), streamed as it is generated.

At a cursor the prompt is the completion evaluation's (`repolm.lm.cursor_prompt`): fill-in-the-
middle with the code after the cursor for a model that learned repolm's FIM tokens, the file
document up to the cursor for any other. Generation stops where the unit the cursor is in
ends, by the rule the evaluation cuts with (`syntax.boundaries.unit_stop`, from the start of
the innermost function, method or class around the cursor as tree-sitter finds it), or at EOS,
a stop string or the token budget. A plain prompt (no file) stops where the unit ends only
when its language is given.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from repolm.errors import RepolmError
from repolm.layout import RunLayout
from repolm.lm import LoadedModel, StopRule, cursor_prompt, special_stops
from repolm.mine.languages import detect_language
from repolm.serve.engine import Engine, Request, Runner, Sampling
from repolm.syntax.boundaries import unit_stop
from repolm.syntax.parsers import unit_start


@dataclass(frozen=True)
class Cursor:
    """A place in a file: the text before and after it."""

    path: str  # as the prompt's file header names it
    language: str | None
    before: str
    after: str


def at_cursor(file: Path, line: int, column: int | None = None, name: str | None = None) -> Cursor:
    """The cursor at `line` (1-based) and `column` (1-based; default: the end of the line) of
    `file`; `name` is the path the prompt shows (default: the file's name as given)."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RepolmError(f"no such file: {file}", "give the path of a source file") from None
    except UnicodeDecodeError:
        raise RepolmError(f"{file} is not UTF-8 text", "complete in a source file") from None
    lines = text.splitlines(keepends=True)
    if not 1 <= line <= len(lines) + 1:
        raise RepolmError(
            f"line {line} is outside {file} ({len(lines)} lines)", "give --line 1 to the last"
        )
    start = sum(len(x) for x in lines[: line - 1])
    width = len((lines[line - 1] if line <= len(lines) else "").rstrip("\r\n"))
    col = width if column is None else column - 1
    if not 0 <= col <= width:
        raise RepolmError(
            f"column {column} is outside line {line} ({width} characters)",
            f"give --column 1 to {width + 1}, or leave it out for the end of the line",
        )
    shown = name or file.as_posix()
    at = start + col
    return Cursor(shown, detect_language(shown), text[:at], text[at:])


def resolve_model(
    model: str | None, out: Path | None, default_out: Path | None = None
) -> tuple[str, str]:
    """(label, what to load) for `--model` and `--out`. With `--out`, `--model` names one of
    that run's models (default: its first). Without, `--model` is a path (a model directory or
    GGUF), else a model of the repository's default run `default_out`, else a built-in base or
    a cached hub id; no `--model` means the default run's first model."""
    run = out or default_out
    has_run = run is not None and RunLayout(run).run_config.is_file()
    named = model is not None and (has_run and model in RunLayout(run).models())
    if out is None and model is not None and (Path(model).exists() or not named):
        return model, model
    if not has_run:
        raise RepolmError(
            "no model to complete with" + (f": no run in {run}" if run else ""),
            "give --out DIR (a run) or --model PATH (a model directory, GGUF or smollm2-135m)",
        )
    name, path = RunLayout(run).trained_model(model)
    return name, str(path)


def model_for(
    model: str | None, out: Path | None, default_out: Path | None, context: int
) -> LoadedModel:
    """The model `--model` and `--out` name (`resolve_model`), loaded with a window of at
    most `context` tokens."""
    from repolm.lm import load_model

    _, source = resolve_model(model, out, default_out)
    return load_model(source, max_len=context)


def complete(
    lm: LoadedModel,
    prompt: str | Cursor,
    max_tokens: int = 128,
    stop: Sequence[str] = (),
    temperature: float = 0.0,
    top_p: float = 1.0,
    language: str | None = None,
    seed: int | None = None,
    runner: Runner | None = None,
) -> Iterator[str]:
    """The completion of a prompt or at a cursor, in pieces as it is generated: text to insert
    at the cursor (a plain prompt's trailing whitespace, which the model rewrites, is not
    repeated). Closing the iterator early stops the generation. The model runs on `runner`'s
    thread, or on a thread of its own."""
    budget = max(1, min(max_tokens, lm.max_len // 2))
    if isinstance(prompt, Cursor):
        ids = cursor_prompt(lm, prompt.path, prompt.language, prompt.before, prompt.after, budget)
        before, language = prompt.before, prompt.language
        start = unit_start(prompt.before + prompt.after, len(before), language, prompt.path)
        given = before if lm.fim else before.rstrip()  # what the generation follows
    else:
        ids, before, start = lm.encode(prompt), prompt, prompt.rfind("\n") + 1
        given = before
    rule = _unit_or_next(given[start:], language) if language else None
    ids = ids[-(lm.max_len - budget) :] or [lm.pad_id]
    request = Request(
        ids,
        budget,
        Sampling(temperature, top_p, seed),
        stop_strings=stop,
        stop_rule=rule,
        stop_ids=special_stops(lm),
    )
    with Engine(lm, max_batch=1, window_s=0, runner=runner) as engine:
        yield from _after(engine.submit(request).pieces(), before[len(given) :])


def _unit_or_next(head: str, language: str) -> StopRule:
    """Stop where the unit `head` starts ends; when it ended already (the cursor is after a
    complete line outside any function), where the next unit the model writes ends."""
    this, following = unit_stop(head, language), unit_stop("", language)

    def rule(generated: str) -> int | None:
        at = this(generated)
        if at is None or generated[:at].strip():
            return at
        rest = following(generated[at:])
        return None if rest is None else at + rest

    return rule


def _after(pieces: Iterator[str], rewritten: str) -> Iterator[str]:
    """The pieces without the leading `rewritten` text (already in the file) when the model
    writes it again."""
    text = ""
    for piece in pieces:
        if rewritten:
            text += piece
            if len(text) < len(rewritten) and rewritten.startswith(text):
                continue  # it may yet be the rewritten text
            piece = text[len(rewritten) :] if text.startswith(rewritten) else text
            rewritten = ""
        if piece:
            yield piece
