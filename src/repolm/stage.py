"""What a stage is: a name, what it reads and writes, and a lazily imported entry point; what
it is given when it runs (`StageContext`) and what it hands back (`StageResult`).

Every stage's `run_stage` and the pipeline that calls them share these types, so they sit below
the stages and import none of them; the stages themselves are listed in
`repolm.pipeline.registry`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repolm.gitrepo import Repo, open_repo
from repolm.layout import RunLayout

if TYPE_CHECKING:
    from repolm.config import Config


@dataclass(frozen=True)
class PathInput:
    """A local file or directory that a config key names and the stage reads: its contents are
    part of the stage's fingerprint, so replacing the files there re-runs the stage."""

    key: str  # dotted config key, e.g. "tokenize.base_model"; its value may be a list of them
    files: tuple[str, ...] = ("*",)  # in a directory, the glob patterns of the files that count
    resolve: str | None = None  # "module:function": the path a value names (a built-in's name)

    def path(self, value: str) -> str:
        """The file or directory a config value names, as the stage will read it."""
        return str(_load(self.resolve)(value)) if self.resolve else value


def _load(ref: str) -> Callable[..., Any]:
    module, _, func = ref.partition(":")
    return getattr(importlib.import_module(module), func)


@dataclass(frozen=True)
class Stage:
    name: str
    entry: str  # "module:function", imported only when the stage runs (keeps start-up instant)
    inputs: tuple[str, ...] = ()  # upstream stages whose outputs this one reads
    outputs: tuple[str, ...] = ()  # paths relative to the run directory
    config: tuple[str, ...] = ()  # config sections it reads
    reads_repo: bool = False  # its fingerprint includes the repository's refs
    path_inputs: tuple[PathInput, ...] = ()  # local files named in the config (a base model)
    version: int = 1  # bump when a code change alters the outputs
    distributed: bool = False  # runs on every process of a multi-process launch
    describe: str = ""

    def load(self) -> Callable[[StageContext], StageResult]:
        return _load(self.entry)


@dataclass
class StageResult:
    stats: dict[str, Any] = field(default_factory=dict)
    summary: str = ""  # main figures in a few words, for `repolm stages`
    manifest: dict[str, Any] = field(default_factory=dict)  # top-level manifest entries
    outputs: tuple[str, ...] = ()  # outputs known only after running (a model's weights)


@dataclass
class StageContext:
    out: Path
    config: Config
    repo_path: Path
    force: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # a stage's own CLI flags

    @cached_property
    def layout(self) -> RunLayout:
        return RunLayout(self.out)

    @cached_property
    def repo(self) -> Repo:
        return open_repo(self.repo_path)
