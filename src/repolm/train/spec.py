"""What one model's training needs, resolved once from the config and the build's outputs: the
run spec, its fingerprint (which checkpoints it may resume), and the checks that need no model
loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repolm.config.schema import BuildConfig, Config, ModelConfig
from repolm.errors import RepolmError
from repolm.fsutil import file_digest, json_digest
from repolm.layout import RunLayout
from repolm.train.models import new_token_ids
from repolm.train.samples import SamplePrompt, sample_prompts

# TrainConfig keys that change how a run is watched or stopped, not what it computes: a
# checkpoint made with other values of these is still resumed.
NOT_IN_FINGERPRINT = (
    "max_minutes",
    "checkpoint_every",
    "checkpoint_minutes",
    "keep_checkpoints",
    "log_every",
    "hardware_every_s",
    "save",
    "sample_prompts",
    "sample_tokens",
)


@dataclass
class RunSpec:
    """Everything one model's training needs, resolved by the stage."""

    name: str
    model: ModelConfig
    build: BuildConfig
    layout: RunLayout  # the run: its tokenizer, and where this model's files go
    train_dir: Path  # the packed sequences of the model's mix
    val_dir: Path | None  # None: no validation data (a repository with no future held out)
    plan: dict[str, Any]  # the build stage's plan for this data
    fingerprint: str  # config + data; a checkpoint from another fingerprint is not resumed
    resume: str = "auto"  # auto | require | never
    added_tokens: list[int] = field(default_factory=list)
    sample_prompts: list[SamplePrompt] = field(default_factory=list)

    @property
    def source(self) -> str:
        """What the model starts from: its base model, or scratch:<architecture>."""
        return self.model.base or f"scratch:{self.model.architecture}"

    @property
    def fim(self) -> bool:
        """Whether the model's data holds fill-in-the-middle samples (file samples, FIM rate)."""
        mix = self.build.mixes.get(self.model.mix, self.build.mix)
        return self.build.fim_rate > 0 and mix.files > 0

    @property
    def tokenizer_dir(self) -> Path:
        return self.layout.tokenizer_dir

    @property
    def work_dir(self) -> Path:
        """OUT/train/<name>: checkpoints, best weights, tensorboard, report.json."""
        return self.layout.train_work_dir(self.name)

    @property
    def model_dir(self) -> Path:
        """OUT/models/<name>: the Hugging Face model."""
        return self.layout.model_dir(self.name)

    @property
    def tensorboard_dir(self) -> Path:
        return self.layout.tensorboard_dir(self.name)

    @property
    def checkpoints_dir(self) -> Path:
        return self.layout.checkpoints_dir(self.name)

    @property
    def best_dir(self) -> Path:
        return self.layout.best_dir(self.name)

    @property
    def report_path(self) -> Path:
        return self.layout.model_train_report(self.name)

    def set_micro_batch(self, micro: int) -> None:
        """Fix `micro_batch: auto` to the size chosen for this run."""
        train = self.model.train.model_copy(update={"micro_batch": micro})
        self.model = self.model.model_copy(update={"train": train})


def check_model(config: Config, name: str, mc: ModelConfig, stats: dict[str, Any]) -> None:
    """Errors that need no model loaded: a base model the run's tokenizer doesn't come from,
    a mix the build didn't make."""
    tk = config.tokenize
    if mc.base is not None and (tk.kind != "base" or tk.base_model != mc.base):
        made = (
            f"trained from scratch ({tk.kind})"
            if tk.kind != "base"
            else f"that of {tk.base_model!r}"
        )
        raise RepolmError(
            f"model '{name}' fine-tunes {mc.base!r}, but the run's tokenizer is {made}",
            f"set tokenize.kind: base and tokenize.base_model: {mc.base} (models of one run "
            "share its tokenizer; fine-tune a base with another tokenizer in another run)",
        )
    if mc.mix != "default" and mc.mix not in (stats.get("mixes") or {}):
        known = ", ".join(["default", *(stats.get("mixes") or {})])
        raise RepolmError(
            f"model '{name}' trains on mix '{mc.mix}', which the build did not make",
            f"declare it under build.mixes, or choose one of: {known}",
        )


def mix_stats(stats: dict[str, Any], mix: str) -> dict[str, Any]:
    """The build's numbers for one mix's training split: `plan`, `shards`, `sequences`."""
    if mix == "default":
        return {
            "plan": stats["plan"],
            "shards": stats["shards"]["train"],
            "sequences": stats["sequences"]["train"],
        }
    return stats["mixes"][mix]


def run_spec(
    layout: RunLayout,
    config: Config,
    name: str,
    mc: ModelConfig,
    stats: dict[str, Any],
    resume: str,
) -> RunSpec:
    """The spec of model `name` of the run at `layout`, after `check_model`."""
    check_model(config, name, mc, stats)
    data = mix_stats(stats, mc.mix)
    tok_dir = layout.tokenizer_dir
    pinned = mc.model_dump(mode="json")
    for key in NOT_IN_FINGERPRINT:
        pinned["train"].pop(key, None)
    fingerprint = json_digest(
        {
            "model": pinned,
            "train": data["shards"],
            "val": stats["shards"]["val"],
            "tokenizer": file_digest(tok_dir / "tokenizer.json"),
        }
    )
    added: list[int] = []
    if mc.base is not None and mc.method != "full":
        from transformers import AutoTokenizer

        added = new_token_ids(mc.base, AutoTokenizer.from_pretrained(tok_dir), mc.trust_remote_code)
    return RunSpec(
        name=name,
        model=mc,
        build=config.build,
        layout=layout,
        train_dir=layout.shards_dir("train", mc.mix),
        val_dir=layout.shards_dir("val") if stats["sequences"]["val"] else None,
        plan=data["plan"],
        fingerprint=fingerprint,
        resume=resume,
        added_tokens=added,
        sample_prompts=sample_prompts(layout.filter_dir, mc.train.sample_prompts),
    )
