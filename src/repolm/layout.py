"""Where a run keeps everything: one object that knows every path under `OUT/`.

Stages ask it for their own directories and for the files of the stages before them, so no
module joins run paths by hand and a renamed file is renamed in one place. It only names
paths; reading a stage's outputs is that stage's own code (`repolm.dataset.plan.read_stats`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repolm.errors import RepolmError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetLayout:
    """OUT/dataset/, or the build stage's temporary directory while it writes one."""

    root: Path

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    def shards_dir(self, split: str, mix: str = "default") -> Path:
        """A split's packed sequences, as `shard-NNNNN.parquet` files; a mix other than the
        default has only a train split of its own (validation and test are the default's)."""
        return self.root / split if mix == "default" else self.root / "mixes" / mix / split

    @property
    def instructions_dir(self) -> Path:
        return self.root / "instructions"

    def instructions(self, split: str) -> Path:
        return self.instructions_dir / f"{split}.parquet"

    @property
    def eval_dir(self) -> Path:
        """The evaluation sets, from the commits after the cutoff."""
        return self.root / "eval"

    def eval_set(self, name: str) -> Path:
        return self.eval_dir / f"{name}.parquet"


@dataclass(frozen=True)
class RunLayout:
    out: Path

    # -- the run as a whole
    @property
    def manifest(self) -> Path:
        return self.out / "manifest.json"

    @property
    def run_config(self) -> Path:
        """The resolved config the run used, as YAML."""
        return self.out / "config.yaml"

    @property
    def logs_dir(self) -> Path:
        return self.out / "logs"

    @property
    def report_html(self) -> Path:
        return self.out / "report.html"

    # -- mine
    @property
    def mine_dir(self) -> Path:
        return self.out / "mine"

    @property
    def mined_commits(self) -> Path:
        return self.mine_dir / "commits.parquet"

    @property
    def mined_changes(self) -> Path:
        return self.mine_dir / "changes.parquet"

    # -- chunk
    @property
    def chunk_dir(self) -> Path:
        return self.out / "chunk"

    @property
    def chunks(self) -> Path:
        return self.chunk_dir / "chunks.parquet"

    # -- filter
    @property
    def filter_dir(self) -> Path:
        return self.out / "filter"

    def filtered(self, table: str) -> Path:
        """One of the filter stage's tables: files, commits, changes, chunks."""
        return self.filter_dir / f"{table}.parquet"

    @property
    def filter_stats(self) -> Path:
        return self.filter_dir / "stats.json"

    # -- tokenize
    @property
    def tokenizer_dir(self) -> Path:
        return self.out / "tokenizer"

    @property
    def tokenizer_file(self) -> Path:
        return self.tokenizer_dir / "tokenizer.json"

    # -- build (the dataset)
    @property
    def dataset_dir(self) -> Path:
        return self.out / "dataset"

    @property
    def dataset(self) -> DatasetLayout:
        return DatasetLayout(self.dataset_dir)

    @property
    def dataset_stats(self) -> Path:
        return self.dataset.stats

    @property
    def eval_sets_dir(self) -> Path:
        """The evaluation sets the build stage writes from the commits after the cutoff."""
        return self.dataset.eval_dir

    def eval_set(self, name: str) -> Path:
        return self.dataset.eval_set(name)

    def shards_dir(self, split: str, mix: str = "default") -> Path:
        return self.dataset.shards_dir(split, mix)

    def instructions(self, split: str) -> Path:
        return self.dataset.instructions(split)

    # -- train
    @property
    def train_dir(self) -> Path:
        return self.out / "train"

    @property
    def train_report(self) -> Path:
        return self.train_dir / "report.json"

    def train_work_dir(self, model: str) -> Path:
        """A model's checkpoints, best weights and curves while it trains."""
        return self.train_dir / model

    def tensorboard_dir(self, model: str) -> Path:
        return self.train_work_dir(model) / "tensorboard"

    def checkpoints_dir(self, model: str) -> Path:
        return self.train_work_dir(model) / "checkpoints"

    def best_dir(self, model: str) -> Path:
        """The best evaluated trainable weights so far."""
        return self.train_work_dir(model) / "best"

    def model_train_report(self, model: str) -> Path:
        return self.train_work_dir(model) / "report.json"

    @property
    def models_dir(self) -> Path:
        return self.out / "models"

    def model_dir(self, model: str) -> Path:
        """A trained model as a plain Hugging Face directory."""
        return self.models_dir / model

    def models(self) -> dict[str, dict[str, Any]]:
        """The run's models by name, in config order, from its `config.yaml`."""
        import yaml

        if not self.run_config.is_file():
            raise RepolmError(f"no {self.run_config.name} in {self.out}", "run 'repolm run' first")
        config = yaml.safe_load(self.run_config.read_text(encoding="utf-8")) or {}
        return dict(config.get("models") or {})

    def trained_model(self, name: str | None = None) -> tuple[str, Path]:
        """A trained model of the run (default: its first) as (name, OUT/models/NAME)."""
        models = self.models()
        name = name or next(iter(models), None)
        if name is None or name not in models:
            raise RepolmError(
                f"the run in {self.out} has no model {name!r}", f"choose from {', '.join(models)}"
            )
        path = self.model_dir(name)
        if not path.is_dir():
            raise RepolmError(f"model {name} is not trained yet ({path})", "run 'repolm train'")
        return name, path

    # -- eval
    @property
    def eval_dir(self) -> Path:
        return self.out / "eval"

    @property
    def eval_report(self) -> Path:
        return self.eval_dir / "report.json"

    # -- export (a command on a trained model, not a stage)
    @property
    def export_dir(self) -> Path:
        return self.out / "export"

    def model_export_dir(self, model: str) -> Path:
        """A model's exports: `merged/` (a Hugging Face directory), `<model>-<dtype>.gguf` and
        an Ollama `Modelfile`."""
        return self.export_dir / model
