"""Pass 1 of the build: the filter stage's tables encoded into the corpus.

Commit headers and messages; every kept file change as a file section (path, module, change-type
tokens, hunks) spooled to disk as token ids; the snapshot's files cut into pieces that fit a
sequence, some of them turned fill-in-the-middle; repository Q&A. Instruction pairs
(prompt/completion text) are written on the way.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from repolm.config.schema import BuildConfig
from repolm.dataset.corpus import Corpus, Encoder, Section, render
from repolm.dataset.shards import InstructionWriter
from repolm.filter.outputs import change_types
from repolm.formats import documents as dm
from repolm.formats import special as sp
from repolm.layout import RunLayout
from repolm.logs import progress
from repolm.split import Split

MARGIN = 8  # tokens kept free in a file piece: FIM's three tokens and re-encoding at its cuts


def encode_commits(
    enc: Encoder,
    corpus: Corpus,
    layout: RunLayout,
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
    types = change_types(layout.filter_dir)
    pf = pq.ParquetFile(layout.filtered("changes"))
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


def encode_files(
    enc: Encoder, corpus: Corpus, layout: RunLayout, cfg: BuildConfig, rng: random.Random
) -> None:
    """The snapshot's files, cut at line ends into pieces that fit a sequence with their
    header; each piece becomes fill-in-the-middle with probability `fim_rate`."""
    pf = pq.ParquetFile(layout.filtered("files"))
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


def encode_qa(
    enc: Encoder,
    corpus: Corpus,
    layout: RunLayout,
    cfg: BuildConfig,
    instructions: InstructionWriter,
    split: Split,
) -> None:
    cols = ["kind", "name", "qualified_name", "path", "language", "start_line", "end_line", "text"]
    t = pq.read_table(
        layout.filtered("chunks"), columns=cols, filters=[("source", "=", "snapshot")]
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
