"""The build stage: OUT/filter/ + OUT/tokenizer/ -> OUT/dataset/.

Training data comes only from the snapshot at the cutoff commit and the commits up to it;
validation and test data only from the commits after it (merges left out: their first-parent
diff repeats their branch's commits, which may predate the cutoff). A split without a future
(a young repository, or one whose later commits are all filtered out) trains on every commit
and leaves validation and test empty.

1. Encode (streaming): commit headers; every kept file change as a file section (path, module,
   change-type tokens, hunks) spooled to disk as token ids; the snapshot's files cut into pieces
   that fit a sequence, half of them turned fill-in-the-middle; repository Q&A. Instruction
   pairs (prompt/completion text) and the evaluation sets are written on the way.
2. Weigh: each training document gets a recency weight, each kind a share of the tokens; the
   number of copies of a document in one epoch follows from both (`weigh.py`).
3. Pack: commit records in chronological order, the other kinds interleaved at random
   positions, into sequences of `seq_len` tokens; written as Parquet shards per split.
   Each named mix (`build.mixes`) then packs a training split of its own from the same encoded
   documents with its own copies; validation and test are shared.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from repolm.config.schema import BuildConfig, Config
from repolm.dataset.assemble import describe_doc, implement_doc, record_pieces
from repolm.dataset.corpus import Commits, Corpus, Encoder, Section, Spool, render
from repolm.dataset.evalsets import FUTURE, write_eval_set, write_eval_sets
from repolm.dataset.pack import Doc, Packer
from repolm.dataset.plan import training_plan
from repolm.dataset.shards import SPLITS, InstructionWriter, ShardWriter
from repolm.dataset.weigh import KINDS, Copies, draw_copies, measure
from repolm.errors import RepolmError
from repolm.filter.outputs import change_types
from repolm.formats import documents as dm
from repolm.formats import special as sp
from repolm.fsutil import atomic_dir, file_digest
from repolm.logs import log, progress
from repolm.split import Split, run_split
from repolm.stage import StageContext, StageResult

if TYPE_CHECKING:
    from repolm.gitrepo import Repo

_NAMES = {"train": "training", "val": "validation", "test": "test"}
MARGIN = 8  # tokens kept free in a file piece: FIM's three tokens and re-encoding at its cuts


def run_stage(ctx: StageContext) -> StageResult:
    split = run_split(ctx.out, ctx.repo.head, ctx.config.split)
    stats = build(ctx.repo, ctx.out, ctx.stage_dir("dataset"), ctx.config, split)
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


def build(repo: Repo, out: Path, stage_dir: Path, config: Config, split: Split) -> dict[str, Any]:
    """The dataset of `split`; when filtering leaves its validation or test split empty, that
    of the split without a future (every commit trains), with one warning, unless
    split.require_future."""
    try:
        return _build(repo, out, stage_dir, config, split)
    except _EmptyFuture as e:
        split = split.without_future(str(e))
        log.warning(split.warning())
        return _build(repo, out, stage_dir, config, split)


def _build(repo: Repo, out: Path, stage_dir: Path, config: Config, split: Split) -> dict[str, Any]:
    t0 = time.monotonic()
    cfg = config.build
    filter_dir = out / "filter"
    for name in ("files.parquet", "commits.parquet", "changes.parquet", "chunks.parquet"):
        if not (filter_dir / name).exists():
            raise RepolmError(f"missing {filter_dir / name}", "run the filter stage first")
    enc = Encoder(out / "tokenizer")
    commits = Commits.read(filter_dir / "commits.parquet")
    commits.split = [split.part(s) for s in commits.sha]  # the filter's, or all train (above)
    rng = random.Random(cfg.seed)
    with atomic_dir(stage_dir) as tmp:
        for part in SPLITS:
            (tmp / part).mkdir()
        (tmp / "instructions").mkdir()
        spool = Spool(tmp / "sections.tmp")
        corpus = Corpus(commits, spool)
        with InstructionWriter(tmp / "instructions") as instructions:
            _encode_commits(enc, corpus, filter_dir, instructions, cfg.max_diff_bytes)
            _encode_files(enc, corpus, filter_dir, cfg, rng)
            _encode_qa(enc, corpus, filter_dir, cfg, instructions, split)
        spool.seal()
        eval_stats = write_eval_sets(repo, out, tmp / "eval", config, split, commits)
        sizes = measure(corpus, cfg, split, enc)
        copies = draw_copies(sizes, cfg.mix, cfg, "build.mix")
        # every named mix's copies first: a mix without data fails before anything is packed
        named = {n: draw_copies(sizes, m, cfg, f"build.mixes.{n}") for n, m in cfg.mixes.items()}
        seqs, tokens, docs, shards = {}, {}, {}, {}
        for part in SPLITS:
            writer = _pack(corpus, enc, cfg, split, part, copies, tmp / part, corpus.counts)
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
            tmp / "eval", "future_records", future_records(corpus, enc, copies)
        )
        spool.path.unlink()
        stats = _stats(cfg, enc, split, corpus, copies, seqs, tokens, docs, eval_stats)
        stats["shards"] = {
            part: {name: file_digest(tmp / part / name) for name in names}
            for part, names in shards.items()
        }
        stats["mixes"] = mixes
        stats["instructions"] = dict(sorted(instructions.count.items()))
        stats["seconds"] = round(time.monotonic() - t0, 3)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
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
        for doc in _stream(corpus, enc, cfg, part, copies, split, tally):
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
    stage_tmp: Path,
) -> dict[str, Any]:
    """A named mix's training split into `mixes/NAME/train/`, from the encoded corpus; its
    stats. Its counts are its own: the corpus's stay those of the default dataset."""
    out = stage_tmp / "mixes" / name / "train"
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


def _encode_commits(
    enc: Encoder,
    corpus: Corpus,
    filter_dir: Path,
    instructions: InstructionWriter,
    max_diff: int,
) -> None:
    """Commit headers and messages; every kept file change as a spooled section. File diffs over
    `max_diff` bytes (generated files, data dumps: fragments without context when cut into
    sequences) are replaced by their line counts."""
    c = corpus.commits
    heads = [dm.commit_header(a, t, m) for a, t, m in zip(c.author, c.time, c.message, strict=True)]
    corpus.headers = enc.docs(heads)
    corpus.messages = enc.docs([[dm.Tok(sp.MESSAGE), m + "\n"] for m in c.message])
    types = change_types(filter_dir)
    pf = pq.ParquetFile(filter_dir / "changes.parquet")
    columns = ["sha", "path", "old_path", "status", "patch", "language", "additions", "deletions"]
    pending: list[tuple[int, str]] = []  # (commit, rendered section) of the commit being read
    with progress("build: encode history", total=pf.metadata.num_rows, unit="changes") as bar:
        for g in range(pf.num_row_groups):
            rows = pf.read_row_group(g, columns=columns).to_pylist()
            bar.advance(len(rows))
            keep = [r for r in rows if (i := c.index.get(r["sha"])) is not None and not c.merge[i]]
            corpus.counts["merge_changes_skipped"] += len(rows) - len(keep)
            segs = []
            for r in keep:
                patch, omitted = dm.omit_large_diff(
                    r["patch"], r["additions"], r["deletions"], max_diff
                )
                if omitted is not None:
                    corpus.counts["diffs_too_large"] += 1
                head = dm.file_head(
                    r["path"],
                    r["old_path"],
                    r["status"],
                    dm.module_of(r["path"], r["language"]),
                    types.get((r["sha"], r["path"]), []),
                    omitted,
                )
                segs.append(
                    [head, [[dm.Tok(sp.HUNK), h, dm.Tok(sp.HUNK_END)] for h in dm.hunks(patch)]]
                )
            flat = [d for head, hs in segs for d in (head, *hs)]
            ids = iter(enc.docs(flat))
            for r, (head, hs) in zip(keep, segs, strict=True):
                i = c.index[r["sha"]]
                head_ids = next(ids)
                hunk_ids = [next(ids) for _ in hs]
                offset = corpus.spool.add(np.concatenate([head_ids, *hunk_ids]))
                key = hashlib.blake2b(
                    b"".join(h.tobytes() for h in hunk_ids), digest_size=12
                ).digest()
                corpus.sections[i].append(
                    Section(offset, len(head_ids), [len(h) for h in hunk_ids], key)
                )
                text = render([*head, *(s for h in hs for s in h)])
                if pending and pending[-1][0] != i:
                    _flush_commit(corpus, pending, instructions)
                pending.append((i, text))
    _flush_commit(corpus, pending, instructions)


def _flush_commit(
    corpus: Corpus, pending: list[tuple[int, str]], instructions: InstructionWriter
) -> None:
    """A commit's rows are contiguous in changes.parquet: write its instruction pairs."""
    if not pending:
        return
    i = pending[0][0]
    c = corpus.commits
    diff = "".join(text for _, text in pending)
    msg = c.message[i]
    instructions.add(
        c.split[i], "implement", c.sha[i], c.time[i], dm.IMPLEMENT_PROMPT + msg + "\n", diff
    )
    instructions.add(c.split[i], "describe", c.sha[i], c.time[i], dm.DESCRIBE_PROMPT + diff, msg)
    pending.clear()


def _encode_files(
    enc: Encoder, corpus: Corpus, filter_dir: Path, cfg: BuildConfig, rng: random.Random
) -> None:
    """The snapshot's files, cut at line ends into pieces that fit a sequence with their
    header; each piece becomes fill-in-the-middle with probability `fim_rate`."""
    pf = pq.ParquetFile(filter_dir / "files.parquet")
    with progress("build: encode files", total=pf.metadata.num_rows, unit="files") as bar:
        for g in range(pf.num_row_groups):
            rows = pf.read_row_group(g, columns=["path", "language", "text"]).to_pylist()
            bar.advance(len(rows))
            rows = [r for r in rows if r["text"]]
            headers = enc.docs([dm.file_document_header(r["path"], r["language"]) for r in rows])
            # with offsets, to cut long files at line ends (most of the bytes are in long files,
            # so one pass with offsets beats a fast pass and a second one for the long files)
            bodies = enc.tok.encode_batch([r["text"] for r in rows], add_special_tokens=False)
            budgets = [cfg.seq_len - 1 - len(h) - MARGIN for h in headers]
            plain: list[tuple[np.ndarray, np.ndarray]] = []
            fims: list[tuple[np.ndarray, list[dm.Segment], str, np.ndarray]] = []
            for r, header, body, budget in zip(rows, headers, bodies, budgets, strict=True):
                if budget < 16:
                    corpus.counts["files_path_too_long"] += 1
                    continue
                for a, b, ids in _line_pieces(r["text"], body, budget):
                    if rng.random() < cfg.fim_rate and b > a:
                        segs, mode = dm.fim(r["text"][a:b], rng, cfg.fim_spm_rate)
                        fims.append((header, segs, mode, ids))
                    else:
                        plain.append((header, ids))
            for header, ids in plain:
                corpus.files.append((np.concatenate([header, ids]), "plain"))
            encoded = enc.docs([f[1] for f in fims])
            for (header, _, mode, whole), ids in zip(fims, encoded, strict=True):
                if len(header) + len(ids) >= cfg.seq_len:  # re-encoding at the cuts grew it
                    corpus.counts["fim_too_long"] += 1
                    ids, mode = whole, "plain"
                corpus.files.append((np.concatenate([header, ids]), mode))


def _line_pieces(text: str, encoding: Any, budget: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(char start, char end, ids) of consecutive pieces of at most `budget` tokens, cut after
    a token that ends a line when there is one in the piece."""
    ids = np.asarray(encoding.ids, dtype=np.int32)
    if len(ids) <= budget:
        yield 0, len(text), ids
        return
    ends = np.asarray([e for _, e in encoding.offsets], dtype=np.int64)
    newline = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) == 10
    line_end = np.flatnonzero(newline[np.maximum(ends - 1, 0)]) + 1  # token counts ending a line
    start = 0
    while start < len(ids):
        stop = min(start + budget, len(ids))
        if stop < len(ids):
            k = np.searchsorted(line_end, stop, side="right") - 1
            if k >= 0 and line_end[k] > start:
                stop = int(line_end[k])
        a = int(ends[start - 1]) if start else 0
        b = int(ends[stop - 1]) if stop < len(ids) else len(text)
        yield a, b, ids[start:stop]
        start = stop


def _encode_qa(
    enc: Encoder,
    corpus: Corpus,
    filter_dir: Path,
    cfg: BuildConfig,
    instructions: InstructionWriter,
    split: Split,
) -> None:
    cols = ["kind", "name", "qualified_name", "path", "language", "start_line", "end_line", "text"]
    t = pq.read_table(
        filter_dir / "chunks.parquet", columns=cols, filters=[("source", "=", "snapshot")]
    )
    pairs: list[dm.QA] = []
    for row in t.to_pylist():
        pairs += dm.qa_pairs(**row)
    when = split.cutoff_time
    prompts = enc.texts([f"Question: {q.question}\nAnswer: " for q in pairs])
    answers = enc.texts([q.answer for q in pairs])
    budget = cfg.seq_len - 1
    for q, p, a in zip(pairs, prompts, answers, strict=True):
        instructions.add("train", "qa", None, when, f"Question: {q.question}\nAnswer: ", q.answer)
        if len(p) + len(a) > budget:
            corpus.counts["qa_too_long"] += 1
            continue
        corpus.qa.append((np.concatenate([p, a]), len(p)))


# -- pass 3: stream and pack ----------------------------------------------------------------


def training_diffs(corpus: Corpus, copies: Copies) -> set[bytes]:
    """The keys of every file diff in the training commits' records."""
    return {s.key for i in copies.records for s in corpus.sections[i] if s.hunks}


def held_out_sections(corpus: Corpus, i: int, seen: set[bytes]) -> list[Section]:
    """A future commit's file sections less the diffs that also occur in training."""
    return [s for s in corpus.sections[i] if not (s.hunks and s.key in seen)]


def future_records(corpus: Corpus, enc: Encoder, copies: Copies) -> list[tuple[Any, ...]]:
    """Each validation and test commit's whole record as text (header once, every kept file,
    end), oldest first: the text the eval stage measures bits per byte on. Unlike the packed
    pieces it repeats no header, so it doesn't depend on `seq_len`."""
    c = corpus.commits
    seen = training_diffs(corpus, copies)
    end = np.asarray([enc.ids[sp.COMMIT_END]], dtype=np.int32)
    rows, ids = [], []
    for i in c.chronological():
        if c.split[i] not in FUTURE or not corpus.sections.get(i):
            continue
        sections = [corpus.section_ids(s) for s in held_out_sections(corpus, i, seen)]
        if sections:
            files = [np.concatenate([head, *hunks]) for head, hunks in sections]
            ids.append(np.concatenate([corpus.headers[i], *files, end]))
            rows.append((c.sha[i], c.time[i], c.split[i]))
    return [(*r, text) for r, text in zip(rows, enc.decode(ids), strict=True)]


def _stream(
    corpus: Corpus,
    enc: Encoder,
    cfg: BuildConfig,
    part: str,
    copies: Copies,
    split: Split,
    tally: Counter[str],
) -> Iterator[Doc]:
    """The documents of one split in packing order. Training: round r holds the documents with
    at least r copies; in each round commit records run oldest to newest and the other kinds
    sit at random positions among them. Validation and test: each commit once, in order, with
    file diffs that also occur in training left out. FIM modes and documents left out are
    counted in `tally` (the corpus's for the default mix, one of its own for a named one)."""
    c = corpus.commits
    order = [i for i in c.chronological() if c.split[i] == part and corpus.sections.get(i)]
    budget = cfg.seq_len - 1
    implement = enc.texts([dm.IMPLEMENT_PROMPT])[0]
    describe = enc.texts([dm.DESCRIBE_PROMPT])[0]
    end = np.asarray([enc.ids[sp.COMMIT_END]], dtype=np.int32)
    train_keys = training_diffs(corpus, copies)
    gen = np.random.default_rng([cfg.seed, SPLITS.index(part)])
    dropped: set[tuple[str, int]] = set()

    def commit_docs(i: int, what: str) -> Iterator[Doc]:
        sections = corpus.sections[i]
        if part != "train":
            kept = held_out_sections(corpus, i, train_keys)
            if what == "record":
                tally[f"{part}_diffs_seen_in_train"] += len(sections) - len(kept)
            sections = kept
            if not sections:
                return
        ids = [corpus.section_ids(s) for s in sections]
        meta = lambda kind: (kind, c.sha[i], c.time[i])  # noqa: E731
        if what == "record":
            for piece in record_pieces(corpus.headers[i], ids, end, budget):
                yield Doc(piece, 0, meta("commit"))
            return
        whole = [np.concatenate([h, *hs]) for h, hs in ids]
        msg = corpus.messages[i]
        if what == "implement":
            doc = implement_doc(np.concatenate([implement, msg]), whole, budget, meta(what))
        else:
            doc = describe_doc(describe, whole, msg, budget, meta(what))
        if doc is None:
            if (what, i) not in dropped:  # counted once, not once per copy
                dropped.add((what, i))
                tally[f"{what}_too_long"] += 1
        else:
            yield doc

    if part != "train":
        for i in order:
            yield from commit_docs(i, "record")
        for i in order:
            yield from commit_docs(i, "implement")
            yield from commit_docs(i, "describe")
        return
    rank = {i: (n + 0.5) / len(order) for n, i in enumerate(order)}
    cutoff = (split.cutoff_sha, split.cutoff_time)
    for r in range(1, cfg.max_repeats + 1):
        refs: list[tuple[float, str, int]] = []
        refs += [(rank[i], "record", i) for i in order if copies.records[i] >= r]
        for kind, counts in (("implement", copies.instructions), ("describe", copies.instructions)):
            refs += [(-1.0, kind, i) for i in order if counts[i] >= r]
        refs += [(-1.0, "file", k) for k, n in enumerate(copies.files) if n >= r]
        refs += [(-1.0, "qa", k) for k, n in enumerate(copies.qa) if n >= r]
        if not refs:
            break
        keys = np.asarray([k for k, _, _ in refs])
        keys = np.where(keys < 0, gen.random(len(keys)), keys)
        for n in np.argsort(keys, kind="stable"):
            _, what, i = refs[n]
            if what == "file":
                ids, mode = corpus.files[i]
                tally[f"fim_{mode}"] += 1
                yield Doc(ids, 0, ("file", *cutoff))
            elif what == "qa":
                ids, prompt = corpus.qa[i]
                yield Doc(ids, prompt, ("qa", *cutoff))
            else:
                yield from commit_docs(i, what)


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
