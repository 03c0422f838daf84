"""The stages of the product, in data-flow order: what each reads and writes, and its entry.

The registry is the pipeline's: it names each stage's entry point as a string, imported only
when the stage runs, so listing the stages (the CLI, `repolm stages`) imports none of them.
"""

from __future__ import annotations

from repolm.stage import PathInput, Stage

# Every stage of the product in data-flow order; a stage is registered once it is built, in
# this order. `repolm stages` lists them all, and naming a planned one says it is not built
# yet. The index comes before eval, which will measure completion with retrieval. `export`
# (a trained model as a merged directory or a GGUF), `serve` and `complete` are commands on a
# run's outputs, not stages.
PLANNED = (
    "mine",
    "chunk",
    "filter",
    "tokenize",
    "build",
    "train",
    "index",
    "eval",
    "report",
)

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
    "*.gguf",  # a directory holding a GGUF base
)

# A base model's files that count in a fingerprint: the tokenizer's, config.json, and a GGUF
# (a Hugging Face directory's weights are not hashed: gigabytes, read on every `repolm stages`).
# A value may be a built-in base's name, which stands for the GGUF its package installed.
BASE_RESOLVE = "repolm.hub:base_path"


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
            path_inputs=(PathInput("tokenize.base_model", TOKENIZER_FILES, BASE_RESOLVE),),
            version=2,  # 2: a GGUF base's tokenizer splits as llama.cpp does (SmolLM's digits)
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
            path_inputs=(PathInput("models.*.base", TOKENIZER_FILES, BASE_RESOLVE),),
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
