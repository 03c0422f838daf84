"""The filter stage: everything that can reach a dataset, scrubbed and sifted, into OUT/filter/.

- `files.parquet`: the snapshot at the cutoff, one row per kept file, secrets scrubbed;
- `commits.parquet`: commit metadata, messages scrubbed, author emails hashed (by default);
- `changes.parquet`: every kept file change, patches scrubbed (history's deleted secrets too);
- `chunks.parquet`: the chunk stage's units, text scrubbed, snapshot units de-duplicated;
- `stats.json`: kept and excluded by reason, secrets found by type, duplicates removed.

Files are excluded by path (vendored, generated, lockfiles, minified, binary, globs, language
allow-list), by content (generated markers, minified lines, binary bytes, size) and by license;
paths excluded from the snapshot for their content stay excluded in history too. Counts only:
no value found by the scrubber is logged or stored anywhere.

Row groups are read as Arrow tables and only the columns the rules need become Python values;
texts are scrubbed in `filter.jobs` processes (`batch.BatchScrubber`, which scans each distinct
line once), the next row group while this one is de-duplicated and written.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from repolm.config.schema import FilterConfig
from repolm.errors import RepolmError
from repolm.filter.batch import BatchScrubber, Pending
from repolm.filter.dedup import Deduper
from repolm.filter.exclude import ExcludeRules, content_reason, path_reason
from repolm.filter.licenses import detect_license, is_denied, license_files, spdx_header
from repolm.fsutil import atomic_path, write_json_atomic
from repolm.gitrepo import BlobReader, Repo
from repolm.logs import log, progress
from repolm.mine.languages import detect_language
from repolm.mine.model import MODE_SUBMODULE, MODE_SYMLINK
from repolm.mine.tables import rows_table
from repolm.split import Split, run_split
from repolm.stage import StageContext, StageResult

FILES = "files.parquet"
COMMITS = "commits.parquet"
CHANGES = "changes.parquet"
CHUNKS = "chunks.parquet"
STATS = "stats.json"
T = TypeVar("T")
R = TypeVar("R")
_SNAPSHOT_BATCH_CHARS = 2_000_000  # snapshot text scrubbed at once
FILES_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("language", pa.string()),
        ("blob", pa.string()),
        ("bytes", pa.int64()),  # size before scrubbing
        ("license", pa.string()),  # the file's SPDX header, else the repository's license
        ("text", pa.string()),  # scrubbed
    ]
)


def run_stage(ctx: StageContext) -> StageResult:
    split = run_split(ctx.out, ctx.repo.head, ctx.config.split)
    stats = filter_run(ctx.repo, ctx.out, ctx.stage_dir("filter"), ctx.config.filter, split)
    kept = stats["files"]["kept"]
    secrets = sum(stats["secrets"].values())
    summary = (
        f"{kept} snapshot files kept, {stats['changes']['kept']} changes; "
        f"{secrets} secrets/PII scrubbed"
    )
    return StageResult(stats=stats, summary=summary)


def filter_run(
    repo: Repo, out: Path, stage_dir: Path, cfg: FilterConfig, split: Split
) -> dict[str, Any]:
    t0 = time.monotonic()
    stage_dir.mkdir(parents=True, exist_ok=True)
    rules = ExcludeRules(
        include=tuple(cfg.include),
        exclude=tuple(cfg.exclude),
        languages=tuple(cfg.languages),
        max_file_bytes=cfg.max_file_bytes,
        max_line_length=cfg.max_line_length,
    )
    jobs = cfg.jobs or (os.cpu_count() or 1)
    with BatchScrubber(cfg.emails, cfg.ips, jobs) as scrub:
        finish_commits = _commits(out, stage_dir, cfg, split, scrub)  # scrubbed meanwhile
        files, content_excluded, repo_license = _snapshot(repo, split, cfg, rules, scrub, stage_dir)
        commits = finish_commits()
        changes = _changes(out, stage_dir, rules, content_excluded, split, scrub)
        chunks = _chunks(out, stage_dir, rules, content_excluded, cfg, scrub)
    secrets = scrub.found
    if not files["kept"] and not changes["kept"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(files["excluded"].items()))
        raise RepolmError(
            f"nothing is left after filtering ({files['total']} snapshot files; excluded by "
            f"rule: {reasons or 'none'})",
            "loosen filter.include / filter.exclude / filter.languages / filter.license_deny",
        )
    stats = {
        "repository_license": repo_license,
        "files": files,
        "commits": commits,
        "changes": changes,
        "chunks": chunks,
        "secrets": dict(sorted(secrets.items())),
        "seconds": round(time.monotonic() - t0, 3),
    }
    write_json_atomic(stage_dir / STATS, stats)
    log.info(
        f"filter: {files['kept']}/{files['total']} snapshot files kept, "
        f"{sum(secrets.values())} secrets/PII scrubbed"
    )
    return stats


def _snapshot(
    repo: Repo,
    split: Split,
    cfg: FilterConfig,
    rules: ExcludeRules,
    scrub: BatchScrubber,
    stage_dir: Path,
) -> tuple[dict[str, Any], set[str], str | None]:
    """The snapshot's files: license, exclusions, scrubbing, de-duplication."""
    tree = repo.tree_files(split.cutoff_sha)
    excluded: Counter[str] = Counter()
    content_excluded: set[str] = set()
    dedup = Deduper(threshold=cfg.dedup_threshold, shingle=cfg.dedup_shingle)
    rows: list[tuple] = []

    def start(batch: list[tuple]) -> Pending:
        return scrub.submit(pa.array([f[-1] for f in batch], pa.string()), [f[0] for f in batch])

    with BlobReader(repo) as reader:
        licenses = sorted(
            {
                lic
                for p in license_files(p for p, *_ in tree)
                if (lic := _license_of(reader, tree, p))
            }
        )
        repo_license = " OR ".join(licenses) if licenses else None
        files = _kept_files(reader, tree, cfg, rules, repo_license, excluded, content_excluded)
        # Files are scrubbed a batch ahead of their de-duplication, which keeps tree order.
        for batch, pending in _ahead(_batches(files, _SNAPSHOT_BATCH_CHARS), start):
            texts = pending.result().to_pylist()
            docs = [(f[0], text or "") for f, text in zip(batch, texts, strict=True)]
            for (path, *fields, _), text, (verdict, _) in zip(
                batch, texts, dedup.check_many(docs), strict=True
            ):
                if verdict != "unique":
                    excluded[f"duplicate_{verdict}"] += 1
                    content_excluded.add(path)
                else:
                    rows.append((path, *fields, text))
    with atomic_path(stage_dir / FILES) as tmp:
        pq.write_table(rows_table(rows, FILES_SCHEMA), tmp, compression="zstd")
    stats = {"total": len(tree), "kept": len(rows), "excluded": dict(sorted(excluded.items()))}
    return stats, content_excluded, repo_license


def _kept_files(
    reader: BlobReader,
    tree: list[tuple[str, int, str, int]],
    cfg: FilterConfig,
    rules: ExcludeRules,
    repo_license: str | None,
    excluded: Counter[str],
    content_excluded: set[str],
) -> Iterator[tuple]:
    """(path, language, blob, bytes, license, text) of each snapshot file no rule excludes;
    the others are counted in `excluded` (and in `content_excluded` if not for their path)."""
    with progress("filter snapshot", total=len(tree), unit="files") as bar:
        for path, mode, blob, size in tree:
            bar.advance()
            language = detect_language(path)
            reason = _mode_reason(mode) or path_reason(path, language, rules)
            data = None
            if reason is None and size > cfg.max_file_bytes:
                reason = "too_large"
            if reason is None:
                data = reader.read(blob)
                reason = "missing" if data is None else content_reason(path, data, rules)
                if reason is not None:
                    content_excluded.add(path)
            if reason is None and data is not None:
                license = spdx_header(data) or repo_license
                if is_denied(license, cfg.license_deny):
                    reason = "license"
                    content_excluded.add(path)
            if reason is not None:
                excluded[reason] += 1
                continue
            assert data is not None
            yield path, language, blob, len(data), license, data.decode("utf-8", "replace")


def _batches(files: Iterator[tuple], chars: int) -> Iterator[list[tuple]]:
    """`files` in lists of about `chars` characters of text (their last field)."""
    batch: list[tuple] = []
    size = 0
    for f in files:
        batch.append(f)
        size += len(f[-1])
        if size >= chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _license_of(reader: BlobReader, tree: list[tuple[str, int, str, int]], path: str) -> str | None:
    blob = next((b for p, _, b, _ in tree if p == path), None)
    data = reader.read(blob) if blob else None
    return detect_license(data.decode("utf-8", "replace")) if data else None


def _mode_reason(mode: int) -> str | None:
    if mode == MODE_SYMLINK:
        return "symlink"
    if mode == MODE_SUBMODULE:
        return "submodule"
    return None


def _commits(
    out: Path,
    stage_dir: Path,
    cfg: FilterConfig,
    split: Split,
    scrub: BatchScrubber,
) -> Callable[[], dict[str, Any]]:
    """Commit metadata with messages scrubbed and author fields hashed or dropped. Starts
    scrubbing the messages; the function returned writes the table once they are done."""
    table = pq.read_table(out / "mine" / "commits.parquet")
    messages = scrub.submit(
        table.column("message").combine_chunks(), table.column("sha").to_pylist()
    )

    def finish() -> dict[str, Any]:
        key = _hash_key(table)
        cols = {name: table.column(name).to_pylist() for name in table.column_names}
        cols["message"] = messages.result().to_pylist()
        for field in ("author_email", "committer_email"):
            cols[field] = [_identity(v, cfg.author_emails, key) for v in cols[field]]
        for field in ("author_name", "committer_name"):
            cols[field] = [_identity(v, cfg.author_names, key) for v in cols[field]]
        cols["split"] = [split.part(s) for s in cols["sha"]]
        schema = table.schema.append(pa.field("split", pa.string()))
        with atomic_path(stage_dir / COMMITS) as tmp:
            pq.write_table(pa.Table.from_pydict(cols, schema=schema), tmp, compression="zstd")
        return {
            "total": table.num_rows,
            "author_emails": cfg.author_emails,
            "author_names": cfg.author_names,
        }

    return finish


def _hash_key(commits: pa.Table) -> bytes:
    """A key for hashing identities: stable for a repository (its root commits), so an author
    keeps one hash across runs; not a secret, so hashes hide addresses from casual reading
    rather than from someone holding the repository."""
    roots = sorted(
        s
        for s, p in zip(
            commits.column("sha").to_pylist(), commits.column("parents").to_pylist(), strict=True
        )
        if not p
    )
    return hashlib.sha256("".join(roots).encode()).digest()


def _identity(value: str | None, policy: str, key: bytes) -> str | None:
    if value is None or policy == "keep":
        return value
    if policy == "drop":
        return None
    return (
        "h:"
        + hashlib.blake2b(value.strip().lower().encode(), key=key[:32], digest_size=8).hexdigest()
    )


def _changes(
    out: Path,
    stage_dir: Path,
    rules: ExcludeRules,
    content_excluded: set[str],
    split: Split,
    scrub: BatchScrubber,
) -> dict[str, Any]:
    """Every file change whose path is kept; patches scrubbed (deleted secrets included)."""
    pf = pq.ParquetFile(out / "mine" / "changes.parquet")
    excluded: Counter[str] = Counter()
    reasons = _PathReasons(rules)
    schema = pf.schema_arrow.append(pa.field("split", pa.string()))

    def start(table: pa.Table) -> tuple[pa.Table, Pending]:
        """Drop excluded changes, add the split, start scrubbing the patches."""
        cols = _columns(
            table,
            "is_submodule",
            "is_symlink",
            "is_large",
            "is_binary",
            "path",
            "old_path",
            "language",
            "sha",
        )
        keep = []
        for i, row in enumerate(zip(*cols[:7], strict=True)):
            reason = _change_reason(*row, reasons, content_excluded)
            if reason is not None:
                excluded[reason] += 1
            else:
                keep.append(i)
        parts = pa.array([split.part(cols[7][i]) for i in keep], pa.string())
        kept = _rows(table, keep).append_column(schema.field("split"), parts)
        paths = [cols[4][i] for i in keep]
        return kept, scrub.submit(kept.column("patch").combine_chunks(), paths)

    kept = 0
    with (
        atomic_path(stage_dir / CHANGES) as tmp,
        pq.ParquetWriter(tmp, schema, compression="zstd") as writer,
        progress("filter history", total=pf.metadata.num_rows, unit="changes") as bar,
    ):
        for table, (kept_table, patches) in _ahead(_row_groups(pf), start):
            writer.write_table(_replace(kept_table, "patch", patches.result()))
            kept += kept_table.num_rows
            bar.advance(table.num_rows)
    return {"total": pf.metadata.num_rows, "kept": kept, "excluded": dict(sorted(excluded.items()))}


def _change_reason(
    is_submodule: bool,
    is_symlink: bool,
    is_large: bool,
    is_binary: bool,
    path: str,
    old_path: str | None,
    language: str | None,
    reasons: _PathReasons,
    content_excluded: set[str],
) -> str | None:
    if is_submodule:
        return "submodule"
    if is_symlink:
        return "symlink"
    if is_large:
        return "too_large"
    if is_binary:
        return "binary"
    for p in (path,) if old_path in (None, path) else (path, old_path):
        reason = reasons[p, language]
        if reason is not None:
            return reason
        if p in content_excluded:
            return "excluded_in_snapshot"
    return None


def _chunks(
    out: Path,
    stage_dir: Path,
    rules: ExcludeRules,
    content_excluded: set[str],
    cfg: FilterConfig,
    scrub: BatchScrubber,
) -> dict[str, Any]:
    """The chunk stage's units, scrubbed; snapshot units de-duplicated exactly and nearly."""
    pf = pq.ParquetFile(out / "chunk" / "chunks.parquet")
    excluded: Counter[str] = Counter()
    reasons = _PathReasons(rules)
    dedup = Deduper(threshold=cfg.dedup_threshold, shingle=cfg.dedup_shingle)

    def start(table: pa.Table) -> tuple[pa.Table, Pending]:
        """Drop units of excluded files, start scrubbing the others' text."""
        keep = []
        paths, languages = _columns(table, "path", "language")
        for i, (path, language) in enumerate(zip(paths, languages, strict=True)):
            reason = reasons[path, language]
            if reason is None and path in content_excluded:
                reason = "excluded_in_snapshot"
            if reason is not None:
                excluded[reason] += 1
            else:
                keep.append(i)
        kept = _rows(table, keep)
        return kept, scrub.submit(kept.column("text").combine_chunks(), [paths[i] for i in keep])

    def deduplicate(table: pa.Table) -> pa.Table:
        """Drop snapshot units that repeat an earlier one, in order."""
        paths, sources, starts = _columns(table, "path", "source", "start_line")
        snapshot = [i for i, source in enumerate(sources) if source == "snapshot"]
        if not snapshot:
            return table
        keep = np.ones(table.num_rows, dtype=bool)
        texts = table.column("text").take(snapshot).to_pylist()
        docs = [
            (f"{paths[i]}:{starts[i]}", text or "") for i, text in zip(snapshot, texts, strict=True)
        ]
        for i, (verdict, _) in zip(snapshot, dedup.check_many(docs), strict=True):
            if verdict != "unique":
                excluded[f"duplicate_{verdict}"] += 1
                keep[i] = False
        return table.filter(pa.array(keep))

    kept = 0
    with (
        atomic_path(stage_dir / CHUNKS) as tmp,
        pq.ParquetWriter(tmp, pf.schema_arrow, compression="zstd") as writer,
        progress("filter units", total=pf.metadata.num_rows, unit="units") as bar,
    ):
        for table, (kept_table, texts) in _ahead(_row_groups(pf), start):
            kept_table = deduplicate(_replace(kept_table, "text", texts.result()))
            writer.write_table(kept_table)
            kept += kept_table.num_rows
            bar.advance(table.num_rows)
    return {"total": pf.metadata.num_rows, "kept": kept, "excluded": dict(sorted(excluded.items()))}


class _PathReasons(dict[tuple[str, str | None], str | None]):
    """`path_reason` memoised by (path, language): history repeats a few thousand paths."""

    def __init__(self, rules: ExcludeRules) -> None:
        super().__init__()
        self._rules = rules

    def __missing__(self, key: tuple[str, str | None]) -> str | None:
        value = self[key] = path_reason(*key, self._rules)
        return value


def _row_groups(pf: pq.ParquetFile) -> Iterator[pa.Table]:
    for i in range(pf.num_row_groups):
        yield pf.read_row_group(i)


def _columns(table: pa.Table, *names: str) -> list[list[Any]]:
    return [table.column(name).to_pylist() for name in names]


def _rows(table: pa.Table, indices: list[int]) -> pa.Table:
    """The rows at `indices` (ascending): the table itself when that is all of them."""
    if len(indices) == table.num_rows:
        return table
    return table.take(pa.array(indices, pa.int64()))


def _replace(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), values)


def _ahead(items: Iterator[T], start: Callable[[T], R]) -> Iterator[tuple[T, R]]:
    """(item, start(item)) for each item, `start` called one item ahead: the next row group's
    texts are being scrubbed while the caller finishes this one."""
    started: deque[tuple[T, R]] = deque()
    for item in items:
        started.append((item, start(item)))
        if len(started) > 1:
            yield started.popleft()
    yield from started
