"""The build stage: OUT/filter/ + OUT/tokenizer/ -> OUT/dataset/.

Training data comes only from the snapshot at the cutoff commit and the commits up to it;
validation and test data only from the commits after it (merges left out: their first-parent
diff repeats their branch's commits, which may predate the cutoff). A split without a future
(a young repository, or one whose later commits are all filtered out) trains on every commit
and leaves validation and test empty.

1. Encode (streaming): commit headers; every kept file change as a file section (path, module,
   change-type tokens, hunks) spooled to disk as token ids; the snapshot's files cut into pieces
   that fit a sequence, half of them turned fill-in-the-middle; repository Q&A. Instruction
   pairs (prompt/completion text) and the evaluation sets are written on the way (`encode.py`,
   `evalsets.py`).
2. Weigh: each training document gets a recency weight, each kind a share of the tokens; the
   number of copies of a document in one epoch follows from both (`weigh.py`).
3. Pack: commit records in chronological order, the other kinds interleaved at random
   positions, into sequences of `seq_len` tokens; written as Parquet shards per split.
   Each named mix (`build.mixes`) then packs a training split of its own from the same encoded
   documents with its own copies; validation and test are shared (`stream.py` orders the
   documents, `pack.py` packs them).

This module is the stage's entry and the order of the passes; the passes are their own modules.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repolm.config.schema import BuildConfig, Config
from repolm.dataset.corpus import Commits, Corpus, Encoder, Spool
from repolm.dataset.encode import encode_commits, encode_files, encode_qa
from repolm.dataset.evalsets import FUTURE, write_eval_set, write_eval_sets
from repolm.dataset.pack import Packer
from repolm.dataset.plan import training_plan
from repolm.dataset.shards import SPLITS, InstructionWriter, ShardWriter
from repolm.dataset.stream import future_records, stream_docs
from repolm.dataset.weigh import KINDS, Copies, draw_copies, measure
from repolm.errors import RepolmError
from repolm.fsutil import atomic_dir, file_digest
from repolm.layout import DatasetLayout, RunLayout
from repolm.logs import log, progress
from repolm.split import Split, run_split
from repolm.stage import StageContext, StageResult

if TYPE_CHECKING:
    from repolm.gitrepo import Repo

_NAMES = {"train": "training", "val": "validation", "test": "test"}


def run_stage(ctx: StageContext) -> StageResult:
    split = run_split(ctx.out, ctx.repo.head, ctx.config.split)
    stats = build(ctx.repo, ctx.layout, ctx.config, split)
    seqs = stats["sequences"]
    plan = stats["plan"]
    summary = (
        f"{seqs['train']:,}/{seqs['val']:,}/{seqs['test']:,} sequences of {stats['seq_len']} "
        f"(train/val/test); {stats['tokens']['train']['total']:,} training tokens, "
        f"plan {plan['epochs']} epochs, {plan['total_steps']:,} steps"
    )
    if stats["mixes"]:
        summary += "; mixes " + ", ".join(
            f"{name} {m['sequences']:,}" for name, m in stats["mixes"].items()
        )
    return StageResult(stats=stats, summary=summary)


class _EmptyFuture(Exception):
    """A validation or test split with commits but nothing left of them after filtering."""


def build(repo: Repo, layout: RunLayout, config: Config, split: Split) -> dict[str, Any]:
    """The dataset of `split`; when filtering leaves its validation or test split empty, that
    of the split without a future (every commit trains), with one warning, unless
    split.require_future."""
    try:
        return _build(repo, layout, config, split)
    except _EmptyFuture as e:
        split = split.without_future(str(e))
        log.warning(split.warning())
        return _build(repo, layout, config, split)


def _build(repo: Repo, layout: RunLayout, config: Config, split: Split) -> dict[str, Any]:
    t0 = time.monotonic()
    cfg = config.build
    for table in ("files", "commits", "changes", "chunks"):
        if not layout.filtered(table).exists():
            raise RepolmError(f"missing {layout.filtered(table)}", "run the filter stage first")
    enc = Encoder(layout.tokenizer_dir)
    commits = Commits.read(layout.filtered("commits"))
    commits.split = [split.part(s) for s in commits.sha]  # the filter's, or all train (above)
    rng = random.Random(cfg.seed)
    with atomic_dir(layout.dataset_dir) as tmp_dir:
        tmp = DatasetLayout(tmp_dir)
        for part in SPLITS:
            tmp.shards_dir(part).mkdir()
        tmp.instructions_dir.mkdir()
        spool = Spool(tmp_dir / "sections.tmp")
        corpus = Corpus(commits, spool)
        with InstructionWriter(tmp.instructions_dir) as instructions:
            encode_commits(enc, corpus, layout, instructions, cfg.max_diff_bytes)
            encode_files(enc, corpus, layout, cfg, rng)
            encode_qa(enc, corpus, layout, cfg, instructions, split)
        spool.seal()
        eval_stats = write_eval_sets(repo, layout, tmp, config, split, commits)
        sizes = measure(corpus, cfg, split, enc)
        copies = draw_copies(sizes, cfg.mix, cfg, "build.mix")
        # every named mix's copies first: a mix without data fails before anything is packed
        named = {n: draw_copies(sizes, m, cfg, f"build.mixes.{n}") for n, m in cfg.mixes.items()}
        seqs, tokens, docs, shards = {}, {}, {}, {}
        for part in SPLITS:
            writer = _pack(
                corpus, enc, cfg, split, part, copies, tmp.shards_dir(part), corpus.counts
            )
            seqs[part], tokens[part], docs[part] = writer.sequences, writer.tokens, writer.docs
            shards[part] = writer.shards
            if not writer.sequences and (part == "train" or getattr(split, part)):
                message = (
                    f"the {_NAMES[part]} split of the dataset is empty after filtering "
                    f"({len(split.train)} train, {len(split.val)} validation, "
                    f"{len(split.test)} test commits)"
                )
                if part in FUTURE and not config.split.require_future:
                    raise _EmptyFuture(message)
                raise RepolmError(
                    message,
                    "move split.cutoff or change split.test_fraction / split.val_fraction so "
                    "that non-merge commits with kept changes fall on each side",
                )
        mixes = {n: _pack_mix(corpus, enc, cfg, split, n, c, tmp) for n, c in named.items()}
        eval_stats["future_records"] = write_eval_set(
            tmp, "future_records", future_records(corpus, enc, copies)
        )
        spool.path.unlink()
        stats = _stats(cfg, enc, split, corpus, copies, seqs, tokens, docs, eval_stats)
        stats["shards"] = {
            part: {name: file_digest(tmp.shards_dir(part) / name) for name in names}
            for part, names in shards.items()
        }
        stats["mixes"] = mixes
        stats["instructions"] = dict(sorted(instructions.count.items()))
        stats["seconds"] = round(time.monotonic() - t0, 3)
        tmp.stats.write_text(json.dumps(stats, indent=2) + "\n")
    log.info(
        f"build: {seqs['train']:,} training sequences of {cfg.seq_len} tokens "
        f"({sum(tokens['train'].values()):,} tokens), {seqs['val']:,} validation, "
        f"{seqs['test']:,} test"
    )
    for name, m in mixes.items():
        log.info(
            f"build: mix {name}: {m['sequences']:,} training sequences "
            f"({m['tokens']['total']:,} tokens)"
        )
    return stats


def _pack(
    corpus: Corpus,
    enc: Encoder,
    cfg: BuildConfig,
    split: Split,
    part: str,
    copies: Copies,
    out: Path,
    tally: Counter[str],
    label: str = "",
) -> ShardWriter:
    """One split's documents, packed and written as shards into `out`; FIM modes and documents
    left out are counted in `tally`."""
    with (
        ShardWriter(out, enc, cfg.shard_sequences) as writer,
        progress(f"build: pack {label or part}", unit="documents") as bar,
    ):
        packer = Packer(cfg.seq_len, enc.eos_id, enc.pad_id, cfg.pack_window)
        for doc in stream_docs(corpus, enc, cfg, part, copies, split, tally):
            bar.advance()
            for seq in packer.add(doc):
                writer.add(seq)
        for seq in packer.flush():
            writer.add(seq)
    return writer


def _pack_mix(
    corpus: Corpus,
    enc: Encoder,
    cfg: BuildConfig,
    split: Split,
    name: str,
    copies: Copies,
    stage_tmp: DatasetLayout,
) -> dict[str, Any]:
    """A named mix's training split into `mixes/NAME/train/`, from the encoded corpus; its
    stats. Its counts are its own: the corpus's stay those of the default dataset."""
    out = stage_tmp.shards_dir("train", name)
    out.mkdir(parents=True)
    counts: Counter[str] = Counter()
    writer = _pack(corpus, enc, cfg, split, "train", copies, out, counts, f"train (mix {name})")
    if not writer.sequences:
        raise RepolmError(
            f"the training split of build.mixes.{name} is empty",
            f"give build.mixes.{name} more weight on files / commits / instructions / qa that "
            "this repository has, or remove the mix",
        )
    total = sum(writer.tokens.values())
    copies.shares["realised"] = _realised(writer.tokens)
    return {
        "sequences": writer.sequences,
        "tokens": {"total": total, **dict(sorted(writer.tokens.items()))},
        "documents": dict(sorted(writer.docs.items())),
        "padding": round(1 - total / max(writer.sequences * cfg.seq_len, 1), 4),
        "mix": copies.shares,
        "counts": dict(sorted(counts.items())),
        "plan": training_plan(cfg, total, writer.sequences),
        "shards": {n: file_digest(out / n) for n in writer.shards},
    }


# -- stats and the training plan ------------------------------------------------------------


def _realised(tokens: Counter[str]) -> dict[str, float]:
    """Each mix kind's share of a training split's tokens (document kinds -> mix kinds)."""
    kind_of = {
        "file": "files",
        "commit": "commits",
        "implement": "instructions",
        "describe": "instructions",
        "qa": "qa",
    }
    realised: Counter[str] = Counter()
    for kind, n in tokens.items():
        realised[kind_of[kind]] += n
    total = max(sum(tokens.values()), 1)
    return {k: round(realised[k] / total, 4) for k in KINDS}


def _stats(
    cfg: BuildConfig,
    enc: Encoder,
    split: Split,
    corpus: Corpus,
    copies: Copies,
    seqs: dict[str, int],
    tokens: dict[str, Counter[str]],
    docs: dict[str, Counter[str]],
    eval_stats: dict[str, Any],
) -> dict[str, Any]:
    train_tokens = sum(tokens["train"].values())
    copies.shares["realised"] = _realised(tokens["train"])
    return {
        "cutoff": split.summary(),
        "seq_len": cfg.seq_len,
        "vocab_size": enc.vocab_size,
        "sequences": seqs,
        "tokens": {
            p: {"total": sum(tokens[p].values()), **dict(sorted(tokens[p].items()))} for p in SPLITS
        },
        "documents": {p: dict(sorted(docs[p].items())) for p in SPLITS},
        "padding": {
            p: round(1 - sum(tokens[p].values()) / max(seqs[p] * cfg.seq_len, 1), 4) for p in SPLITS
        },
        "mix": copies.shares,
        "recency": {
            "half_life_days": cfg.recency_half_life_days,
            "floor": cfg.recency_floor,
            "weight_min": round(copies.weights["min"], 4),
            "weight_mean": round(copies.weights["mean"], 4),
        },
        "unique": {
            "commits": len(copies.records),
            "file_pieces": len(corpus.files),
            "qa_pairs": len(corpus.qa),
        },
        "counts": dict(sorted(corpus.counts.items())),
        "eval": eval_stats,
        "plan": training_plan(cfg, train_tokens, seqs["train"]),
    }
