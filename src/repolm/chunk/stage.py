"""The chunk stage: the snapshot at the cutoff cut into code units, and every commit's changed
units labelled (new_function, modified_test, docs, ...), into OUT/chunk/chunks.parquet.

Each file version (blob) is parsed once per worker and its units cached by blob sha, so the
old side of a change is usually already parsed. Batches of commits go to worker processes,
at most a few in flight, so memory stays bounded; results are written in submission order
(the workers: `repolm.chunk.workers`; the table's schema: `repolm.chunk.rows`).
"""

from __future__ import annotations

import os
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from repolm.chunk.rows import SCHEMA
from repolm.chunk.workers import Pool, history_batch, snapshot_batch
from repolm.config.schema import ChunkConfig
from repolm.fsutil import atomic_path
from repolm.gitrepo import Repo
from repolm.layout import RunLayout
from repolm.logs import log, progress
from repolm.mine.languages import detect_language
from repolm.mine.model import MODE_SYMLINK
from repolm.split import Split, run_split
from repolm.stage import StageContext, StageResult

BATCH_CHANGES = 400
CHANGE_COLUMNS = [
    "sha",
    "path",
    "old_path",
    "status",
    "old_mode",
    "new_mode",
    "old_blob",
    "new_blob",
    "is_binary",
    "is_large",
    "is_submodule",
    "language",
    "patch",
    "patch_truncated",
]


def run_stage(ctx: StageContext) -> StageResult:
    split = run_split(ctx.out, ctx.repo.head, ctx.config.split)
    if not split.has_future:  # said once, here: the first stage that splits
        log.warning(split.warning())
    stats = chunk(ctx.repo, ctx.layout, ctx.config.chunk, split)
    summary = (
        f"{stats['snapshot_units']} units in {stats['snapshot_files']} files at the cutoff, "
        f"{stats['change_rows']} labelled changes"
    )
    return StageResult(stats=stats, summary=summary, manifest={"split": split.summary()})


def chunk(repo: Repo, layout: RunLayout, cfg: ChunkConfig, split: Split) -> dict[str, Any]:
    """OUT/chunk/chunks.parquet from the mine stage's tables; the stage's stats."""
    t0 = time.monotonic()
    layout.chunk_dir.mkdir(parents=True, exist_ok=True)
    jobs = cfg.jobs or (os.cpu_count() or 1)
    commits = pq.read_table(layout.mined_commits, columns=["sha", "commit_time", "is_merge"])
    meta = {
        s: (t, m)
        for s, t, m in zip(
            commits.column("sha").to_pylist(),
            commits.column("commit_time").cast(pa.int64()).to_pylist(),  # ms since the epoch
            commits.column("is_merge").to_pylist(),
            strict=True,
        )
    }
    counts: Counter[str] = Counter()
    with atomic_path(layout.chunks) as tmp, Pool(str(repo.path), cfg, jobs) as pool:
        writer = pq.ParquetWriter(
            tmp,
            SCHEMA,
            compression="zstd",
            use_dictionary=["sha", "path", "language", "kind", "change_type", "source", "split"],
        )
        try:
            files = _snapshot_files(repo, split.cutoff_sha, cfg, counts)
            cutoff = (split.cutoff_sha, meta[split.cutoff_sha][0], "train")
            with progress("chunk snapshot", total=len(files), unit="files") as bar:
                for rows, c in pool.run(snapshot_batch, _snapshot_batches(cutoff, files, jobs)):
                    writer.write_table(rows)
                    counts.update(c)
                    bar.advance(
                        c["snapshot_files"]
                        + c["skipped_binary"]
                        + c["skipped_missing"]
                        + c["skipped_large"]
                    )
            if cfg.history:
                counts["commits"] = sum(1 for _, merge in meta.values() if cfg.merges or not merge)
                changes = pq.ParquetFile(layout.mined_changes).metadata.num_rows
                with progress("chunk history", total=changes, unit="file changes") as bar:
                    work = _history_batches(layout.mined_changes, meta, split, cfg, jobs)
                    for rows, c in pool.run(history_batch, work):
                        writer.write_table(rows)
                        counts.update(c)
                        bar.advance(c["file_changes"])
        finally:
            writer.close()
    stats: dict[str, Any] = {
        "cutoff_sha": split.cutoff_sha,
        "snapshot_files": counts["snapshot_files"],
        "snapshot_units": counts["snapshot_units"],
        "change_rows": counts["change_rows"],
        "commits": counts["commits"],
        "skipped": {
            k.removeprefix("skipped_"): v
            for k, v in sorted(counts.items())
            if k.startswith("skipped_")
        },
        "units_by_kind": {
            k.removeprefix("kind:"): v for k, v in sorted(counts.items()) if k.startswith("kind:")
        },
        "changes_by_type": {
            k.removeprefix("change:"): v
            for k, v in sorted(counts.items())
            if k.startswith("change:")
        },
        "parses": {"full": counts["parses_full"], "incremental": counts["parses_incremental"]},
        "jobs": jobs,
        "seconds": round(time.monotonic() - t0, 3),
    }
    log.info(
        f"chunk: {stats['snapshot_units']} snapshot units, {stats['change_rows']} labelled "
        f"changes over {stats['commits']} commits"
    )
    return stats


def _snapshot_files(
    repo: Repo, sha: str, cfg: ChunkConfig, counts: Counter[str]
) -> list[tuple[str, str, str | None]]:
    files = []
    for path, mode, blob, size in repo.tree_files(sha):
        if mode == MODE_SYMLINK:
            counts["skipped_symlink"] += 1
        elif size > cfg.max_file_bytes:
            counts["skipped_large"] += 1
        else:
            files.append((path, blob, detect_language(path)))
    return files


def _shard(path: str, jobs: int) -> int:
    """Every version of a file goes to the same worker: its cache then holds the neighbouring
    version, so each version is parsed once, nearly always incrementally."""
    return zlib.crc32(path.encode("utf-8", "replace")) % jobs


def _snapshot_batches(
    cutoff: tuple[str, Any, str], files: list[tuple[str, str, str | None]], jobs: int
) -> Iterator[tuple[int, tuple[tuple[str, Any, str], list]]]:
    shards: list[list[tuple[str, str, str | None]]] = [[] for _ in range(jobs)]
    for f in files:
        shards[_shard(f[0], jobs)].append(f)
    for k, part in enumerate(shards):
        for i in range(0, len(part), 200):
            yield k, (cutoff, part[i : i + 200])


def _history_batches(
    changes: Path, meta: dict[str, tuple[Any, bool]], split: Split, cfg: ChunkConfig, jobs: int
) -> Iterator[tuple[int, list]]:
    """File changes with their commit's (sha, time, split part), a few hundred per batch, each
    batch holding one worker's share (by path); read row group by row group."""
    pf = pq.ParquetFile(changes)
    shards: list[list[tuple[tuple[str, Any, str], dict]]] = [[] for _ in range(jobs)]
    for rg in range(pf.num_row_groups):
        for row in pf.read_row_group(rg, columns=CHANGE_COLUMNS).to_pylist():
            sha = row["sha"]
            when, merge = meta[sha]
            if merge and not cfg.merges:
                continue
            k = _shard(row["old_path"] or row["path"], jobs)
            shards[k].append(((sha, when, split.part(sha)), row))
            if len(shards[k]) >= BATCH_CHANGES:
                yield k, shards[k]
                shards[k] = []
    for k, part in enumerate(shards):
        if part:
            yield k, part
