"""What a stage is: a name, what it reads and writes, and a lazily imported entry point."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repolm.layout import RunLayout

if TYPE_CHECKING:
    from repolm.config import Config
    from repolm.mine.git import Repo

# Every stage of the product, in data-flow order; a stage is registered once it is built.
PLANNED = ("mine", "chunk", "filter", "tokenize", "build", "train", "eval", "index", "report")

# A Hugging Face model directory's tokenizer files (not its weights), whichever exist.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "*.model",
    "*.tiktoken",
    "config.json",
)


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

    def stage_dir(self, name: str) -> Path:
        return self.out / name

    @cached_property
    def layout(self) -> RunLayout:
        return RunLayout(self.out)

    @cached_property
    def repo(self) -> Repo:
        from repolm.mine.git import open_repo

        return open_repo(self.repo_path)


REGISTRY: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            name="mine",
            entry="repolm.mine.miner:run_stage",
            outputs=("mine/commits.parquet", "mine/changes.parquet"),
            config=("mine",),
            reads_repo=True,
            describe="every commit on every branch, tag and remote: metadata and diffs",
        ),
        Stage(
            name="chunk",
            entry="repolm.chunk.stage:run_stage",
            inputs=("mine",),
            outputs=("chunk/chunks.parquet",),
            config=("split", "chunk"),
            reads_repo=True,  # blobs, and HEAD's line picks the cutoff commit
            describe="code units of the snapshot at the cutoff; each commit's changes labelled",
        ),
        Stage(
            name="filter",
            entry="repolm.filter.stage:run_stage",
            version=3,  # 2: values below their key, no password in paths; 3: URL query credentials
            inputs=("mine", "chunk"),
            outputs=(
                "filter/files.parquet",
                "filter/commits.parquet",
                "filter/changes.parquet",
                "filter/chunks.parquet",
                "filter/stats.json",
            ),
            config=("split", "filter"),
            reads_repo=True,  # the snapshot's files are read from the object store
            describe="secrets and PII scrubbed; vendored, generated, duplicate files left out",
        ),
        Stage(
            name="tokenize",
            entry="repolm.tokenize.stage:run_stage",
            inputs=("filter",),
            # what save_pretrained always writes (transformers 5 no longer writes
            # special_tokens_map.json; a base model may add files such as tokenizer.model)
            outputs=("tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"),
            config=("tokenize",),
            path_inputs=(PathInput("tokenize.base_model", TOKENIZER_FILES),),
            describe="a tokenizer trained on the training split, with repolm's special tokens",
        ),
        Stage(
            name="build",
            entry="repolm.dataset.stage:run_stage",
            # 2: eval/future_records.parquet; 3: the plan's warm-up is the schedule's (a tenth
            # of a short run at most)
            version=3,
            inputs=("filter", "tokenize"),
            outputs=(
                "dataset/stats.json",
                *(f"dataset/instructions/{p}.parquet" for p in ("train", "val", "test")),
                *(
                    f"dataset/eval/{n}.parquet"
                    for n in (
                        "future_records",
                        "future_patches",
                        "completion",
                        "next_change",
                        "commit_messages",
                    )
                ),
            ),  # the shards are listed with their sha256 in stats.json
            config=("split", "filter", "build"),
            reads_repo=True,  # the completion set's file context comes from the object store
            describe="packed train/val/test sequences (FIM, commit records, instruction pairs, "
            "Q&A) and evaluation sets from the commits after the cutoff",
        ),
        Stage(
            name="train",
            entry="repolm.train.stage:run_stage",
            inputs=("filter", "build", "tokenize"),  # filter: the in-training samples' prompts
            outputs=("train/report.json",),  # each model's files are listed in the report
            config=("tokenize", "build", "models"),  # `train` is merged into each model
            distributed=True,
            describe="train each configured model (from scratch, full, LoRA or QLoRA) with "
            "checkpoints, early stopping and a report; resumes after a crash",
        ),
        Stage(
            name="eval",
            entry="repolm.eval.stage:run_stage",
            inputs=("filter", "tokenize", "build", "train"),  # filter: the suites' facts
            outputs=("eval/report.json",),
            config=("eval", "models"),
            path_inputs=(
                PathInput("eval.mbpp"),
                PathInput("eval.qa"),
                PathInput("eval.suites", resolve="repolm.eval.behaviour:suite_path"),  # or a name
            ),
            describe="each model on the commits after the cutoff: bits per byte next to xz and "
            "zstd, completion, next change, commit messages, suites, code benchmarks",
        ),
        Stage(
            name="report",
            entry="repolm.report.stage:run_stage",
            # every stage whose outputs it shows: a change in any re-renders it
            inputs=("mine", "filter", "tokenize", "build", "train", "eval"),
            outputs=("report.html",),
            describe="one self-contained HTML page: the repository, the data, training curves, "
            "the evaluation next to its baselines, samples beside the real future code",
        ),
    )
}
