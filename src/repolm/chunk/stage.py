"""The chunk stage: the snapshot at the cutoff cut into code units, and every commit's changed
units labelled (new_function, modified_test, docs, ...), into OUT/chunk/chunks.parquet.

Each file version (blob) is parsed once per worker and its units cached by blob sha, so the
old side of a change is usually already parsed. Batches of commits go to worker processes,
at most a few in flight, so memory stays bounded; results are written in submission order.
"""

from __future__ import annotations

import functools
import gc
import os
import time
import zlib
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from repolm.chunk.labels import (
    file_category,
    label_code_changes,
    read_patch,
    touched,
    uncovered,
)
from repolm.chunk.units import LANGUAGES, Unit
from repolm.chunk.versions import Version, VersionCache
from repolm.config.schema import ChunkConfig
from repolm.fsutil import atomic_path
from repolm.gitrepo import Repo
from repolm.logs import log, progress
from repolm.mine.languages import detect_language
from repolm.mine.model import MODE_SYMLINK
from repolm.mine.tables import utf8_array
from repolm.split import Split, run_split
from repolm.stage import StageContext, StageResult

CHUNKS = "chunks.parquet"
TS = pa.timestamp("ms", tz="UTC")
SCHEMA = pa.schema(
    [
        ("sha", pa.string()),  # the commit: the cutoff commit for snapshot rows
        ("path", pa.string()),
        ("language", pa.string()),
        (
            "kind",
            pa.string(),
        ),  # function | method | type | module | test | section | window | lines
        ("name", pa.string()),
        ("qualified_name", pa.string()),
        ("parent", pa.string()),
        ("start_line", pa.int32()),
        ("end_line", pa.int32()),
        ("change_type", pa.string()),  # null for snapshot rows
        ("text", pa.string()),
        ("source", pa.string()),  # snapshot | change
        ("blob", pa.string()),  # the file version the text comes from
        ("commit_time", TS),
        ("split", pa.string()),  # train | val | test
    ]
)
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
    stats = chunk(ctx.repo, ctx.out / "mine", ctx.stage_dir("chunk"), ctx.config.chunk, split)
    summary = (
        f"{stats['snapshot_units']} units in {stats['snapshot_files']} files at the cutoff, "
        f"{stats['change_rows']} labelled changes"
    )
    return StageResult(stats=stats, summary=summary, manifest={"split": split.summary()})


def chunk(
    repo: Repo, mine_dir: Path, stage_dir: Path, cfg: ChunkConfig, split: Split
) -> dict[str, Any]:
    t0 = time.monotonic()
    stage_dir.mkdir(parents=True, exist_ok=True)
    jobs = cfg.jobs or (os.cpu_count() or 1)
    commits = pq.read_table(
        mine_dir / "commits.parquet", columns=["sha", "commit_time", "is_merge"]
    )
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
    with atomic_path(stage_dir / CHUNKS) as tmp, _Pool(str(repo.path), cfg, jobs) as pool:
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
                for rows, c in pool.run(_snapshot_batch, _snapshot_batches(cutoff, files, jobs)):
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
                changes = pq.ParquetFile(mine_dir / "changes.parquet").metadata.num_rows
                with progress("chunk history", total=changes, unit="file changes") as bar:
                    work = _history_batches(mine_dir, meta, split, cfg, jobs)
                    for rows, c in pool.run(_history_batch, work):
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
    mine_dir: Path, meta: dict[str, tuple[Any, bool]], split: Split, cfg: ChunkConfig, jobs: int
) -> Iterator[tuple[int, list]]:
    """File changes with their commit's (sha, time, split part), a few hundred per batch, each
    batch holding one worker's share (by path); read row group by row group."""
    pf = pq.ParquetFile(mine_dir / "changes.parquet")
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


# -- workers -----------------------------------------------------------------------------------


_worker: VersionCache | None = None


# The caches hold millions of small objects (units, parse memos) and nearly none are in
# cycles: the default collector thresholds rescan them thousands of times (about a tenth of the
# stage's time), so a worker collects rarely.
GC_THRESHOLD = (100_000, 50, 100)


def _init(repo_path: str, cfg: ChunkConfig) -> None:
    global _worker
    _worker = VersionCache(repo_path, cfg)
    gc.set_threshold(*GC_THRESHOLD)


def _snapshot_batch(
    job: tuple[tuple[str, int, str], list[tuple[str, str, str | None]]],
) -> tuple[pa.Table, Counter[str]]:
    assert _worker is not None
    (sha, when, part), files = job
    counts: Counter[str] = Counter()
    rows = _Rows()
    _worker.prefetch((blob, path, language) for path, blob, language in files)
    for path, blob, language in files:
        units = _worker.version(blob, path, language, counts).units
        if units is None:
            continue
        counts["snapshot_files"] += 1
        for u in units:
            counts["snapshot_units"] += 1
            counts[f"kind:{u.kind}"] += 1
            rows.add(sha, path, language, u, None, "snapshot", blob, when, part)
    return rows.table(), counts


def _history_batch(batch: list[tuple[tuple[str, int, str], dict]]) -> tuple[pa.Table, Counter[str]]:
    assert _worker is not None
    counts: Counter[str] = Counter()
    rows = _Rows()
    _worker.prefetch(
        side for _, ch in batch if (sides := _sides(ch)) for side in sides if side[0] is not None
    )
    for (sha, when, part), ch in batch:
        counts["file_changes"] += 1
        for unit, label, blob in _label_change(ch, counts):
            counts["change_rows"] += 1
            counts[f"change:{label}"] += 1
            rows.add(sha, ch["path"], ch["language"], unit, label, "change", blob, when, part)
    return rows.table(), counts


def _sides(ch: dict) -> tuple[tuple[str | None, str, str | None], ...] | None:
    """(blob, path, language) of a change's old and new versions (blob None: the side does not
    exist); None for a change that is not text."""
    if (
        ch["is_binary"]
        or ch["is_large"]
        or ch["is_submodule"]
        or MODE_SYMLINK in (ch["old_mode"], ch["new_mode"])
    ):
        return None
    path, language, status = ch["path"], ch["language"], ch["status"]
    old_blob = ch["old_blob"] if status not in ("added", "copied") else None
    new_blob = ch["new_blob"] if status != "deleted" else None
    return (old_blob, ch["old_path"] or path, language), (new_blob, path, language)


def _label_change(ch: dict, counts: Counter[str]) -> list[tuple[Unit, str, str | None]]:
    """(unit, change type, blob of the unit's text) for one file change."""
    assert _worker is not None
    sides = _sides(ch)
    if sides is None:
        counts["skipped_not_text"] += 1
        return []
    (old_blob, old_path, _), (new_blob, path, language) = sides
    patch = read_patch(ch["patch"])
    hunks = None if ch["patch_truncated"] else patch.hunks
    old, new = _worker.pair((old_blob, old_path), (new_blob, path), language, hunks, counts)
    if new.units is None or old.units is None:
        return []
    added, removed = patch.added, patch.removed
    category = _category(path, language)
    out: list[tuple[Unit, str, str | None]] = []
    if category == "code" and language in LANGUAGES:
        for unit, label in label_code_changes(old.index, new.index):
            out.append((unit, label, old_blob if label.startswith("deleted_") else new_blob))
        docs = [u for u in touched(new.index, added) if u.kind == "module"]
        out += [(u, "docs", new_blob) for u in docs]
        rest = uncovered(new.index, added)
        if rest:
            out.append((_lines_unit(new, rest), "other", new_blob))
        return out
    # Docs, config, build and other files (and code without a grammar): the sections or
    # windows that hold changed lines; all of them for an added or deleted file.
    label = category if category != "code" else "other"
    if ch["status"] == "deleted":
        return [(u, label, old_blob) for u in old.units]
    if ch["status"] == "added":
        return [(u, label, new_blob) for u in new.units]
    if added:
        return [(u, label, new_blob) for u in touched(new.index, added)]
    return [(u, label, old_blob) for u in touched(old.index, removed)]


@functools.lru_cache(maxsize=65536)
def _category(path: str, language: str | None) -> str:
    return file_category(path, language)


def _lines_unit(version: Version, lines: list[int]) -> Unit:
    """Changed lines of a code file that no unit holds (imports, top-level statements): lines
    `a`..`b` as `data.split(b"\\n")` cuts them, joined by newlines (none after the last)."""
    data, starts = version.data, version.starts
    a, b = lines[0], lines[-1]
    name = f"lines {a}-{b}"
    pieces = data.count(b"\n") + 1
    if starts is None or not 1 <= a <= b or a > pieces:  # not from this file's lines
        text = "\n".join(data.decode("utf-8", "replace").split("\n")[a - 1 : b]).encode()
        return Unit("lines", name, name, a, b, None, text, 0, len(text))
    end = int(starts[b]) - 1 if b < pieces else len(data)
    return Unit("lines", name, name, a, b, None, data, int(starts[a - 1]), end)


class _Rows:
    """Output rows, turned into a table at the end of a batch; texts are kept as UTF-8 bytes,
    decoded (with replacement, as `Unit.text` does) only where they are not plain ASCII."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(
        self,
        sha: str,
        path: str,
        language: str | None,
        u: Unit,
        change_type: str | None,
        source: str,
        blob: str | None,
        when: int,
        part: str,
    ) -> None:
        raw = u.source[u.start_byte : u.end_byte]
        text = raw if raw.isascii() else raw.decode("utf-8", "replace").encode()
        self.rows.append(
            (
                sha,
                path,
                language,
                u.kind,
                u.name,
                u.qualified_name,
                u.parent,
                u.start_line,
                u.end_line,
                change_type,
                text,
                source,
                blob,
                when,
                part,
            )
        )

    def table(self) -> pa.Table:
        columns = list(zip(*self.rows, strict=True)) if self.rows else [[] for _ in SCHEMA]
        arrays = [
            utf8_array(values)
            if field.name == "text"  # type: ignore[arg-type]
            else pa.array(values, pa.int64()).cast(TS)
            if field.name == "commit_time"
            else pa.array(values, field.type)
            for values, field in zip(columns, SCHEMA, strict=True)
        ]
        return pa.Table.from_arrays(arrays, schema=SCHEMA)


class _Pool:
    """Batches to worker processes, one process per shard so that a shard's batches always
    meet the same cache; a bounded number in flight; results in submission order. In-process
    when one job is asked for (simpler to debug, no start-up cost on small repositories)."""

    def __init__(self, repo_path: str, cfg: ChunkConfig, jobs: int) -> None:
        self.jobs = jobs
        self._args = (repo_path, cfg)
        self._workers: list[ProcessPoolExecutor] = []
        self._gc = gc.get_threshold()

    def __enter__(self) -> _Pool:
        if self.jobs > 1:
            self._workers = [
                ProcessPoolExecutor(1, initializer=_init, initargs=self._args)
                for _ in range(self.jobs)
            ]
        else:
            _init(*self._args)
        return self

    def __exit__(self, *exc: object) -> None:
        global _worker
        for ex in self._workers:
            ex.shutdown(cancel_futures=True)
        if _worker is not None:
            _worker.reader.close()
            _worker = None
        gc.set_threshold(*self._gc)

    def run(self, fn: Any, jobs: Iterator[tuple[int, Any]]) -> Iterator[Any]:
        if not self._workers:
            yield from (fn(job) for _, job in jobs)
            return
        pending: deque[Future] = deque()
        for shard, job in jobs:
            pending.append(self._workers[shard].submit(fn, job))
            if len(pending) >= 2 * self.jobs:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
