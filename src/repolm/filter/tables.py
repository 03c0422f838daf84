"""The mine and chunk stages' tables, filtered: commits with messages scrubbed and identities
hashed, file changes and code units of kept paths with their text scrubbed, snapshot units
de-duplicated; into OUT/filter/."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from repolm.config.schema import FilterConfig
from repolm.filter.batch import BatchScrubber, Pending
from repolm.filter.dedup import Deduper
from repolm.filter.exclude import ExcludeRules
from repolm.filter.streams import PathReasons, ahead, columns, replace_column, row_groups, rows
from repolm.fsutil import atomic_path
from repolm.layout import RunLayout
from repolm.logs import progress
from repolm.split import Split


def filter_commits(
    layout: RunLayout,
    cfg: FilterConfig,
    split: Split,
    scrub: BatchScrubber,
) -> Callable[[], dict[str, Any]]:
    """Commit metadata with messages scrubbed and author fields hashed or dropped. Starts
    scrubbing the messages; the function returned writes the table once they are done."""
    table = pq.read_table(layout.mined_commits)
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
        with atomic_path(layout.filtered("commits")) as tmp:
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


def filter_changes(
    layout: RunLayout,
    rules: ExcludeRules,
    content_excluded: set[str],
    split: Split,
    scrub: BatchScrubber,
) -> dict[str, Any]:
    """Every file change whose path is kept; patches scrubbed (deleted secrets included)."""
    pf = pq.ParquetFile(layout.mined_changes)
    excluded: Counter[str] = Counter()
    reasons = PathReasons(rules)
    schema = pf.schema_arrow.append(pa.field("split", pa.string()))

    def start(table: pa.Table) -> tuple[pa.Table, Pending]:
        """Drop excluded changes, add the split, start scrubbing the patches."""
        cols = columns(
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
        kept = rows(table, keep).append_column(schema.field("split"), parts)
        paths = [cols[4][i] for i in keep]
        return kept, scrub.submit(kept.column("patch").combine_chunks(), paths)

    kept = 0
    with (
        atomic_path(layout.filtered("changes")) as tmp,
        pq.ParquetWriter(tmp, schema, compression="zstd") as writer,
        progress("filter history", total=pf.metadata.num_rows, unit="changes") as bar,
    ):
        for table, (kept_table, patches) in ahead(row_groups(pf), start):
            writer.write_table(replace_column(kept_table, "patch", patches.result()))
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
    reasons: PathReasons,
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


def filter_chunks(
    layout: RunLayout,
    rules: ExcludeRules,
    content_excluded: set[str],
    cfg: FilterConfig,
    scrub: BatchScrubber,
) -> dict[str, Any]:
    """The chunk stage's units, scrubbed; snapshot units de-duplicated exactly and nearly."""
    pf = pq.ParquetFile(layout.chunks)
    excluded: Counter[str] = Counter()
    reasons = PathReasons(rules)
    dedup = Deduper(threshold=cfg.dedup_threshold, shingle=cfg.dedup_shingle)

    def start(table: pa.Table) -> tuple[pa.Table, Pending]:
        """Drop units of excluded files, start scrubbing the others' text."""
        keep = []
        paths, languages = columns(table, "path", "language")
        for i, (path, language) in enumerate(zip(paths, languages, strict=True)):
            reason = reasons[path, language]
            if reason is None and path in content_excluded:
                reason = "excluded_in_snapshot"
            if reason is not None:
                excluded[reason] += 1
            else:
                keep.append(i)
        kept = rows(table, keep)
        return kept, scrub.submit(kept.column("text").combine_chunks(), [paths[i] for i in keep])

    def deduplicate(table: pa.Table) -> pa.Table:
        """Drop snapshot units that repeat an earlier one, in order."""
        paths, sources, starts = columns(table, "path", "source", "start_line")
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
        atomic_path(layout.filtered("chunks")) as tmp,
        pq.ParquetWriter(tmp, pf.schema_arrow, compression="zstd") as writer,
        progress("filter units", total=pf.metadata.num_rows, unit="units") as bar,
    ):
        for table, (kept_table, texts) in ahead(row_groups(pf), start):
            kept_table = deduplicate(replace_column(kept_table, "text", texts.result()))
            writer.write_table(kept_table)
            kept += kept_table.num_rows
            bar.advance(table.num_rows)
    return {"total": pf.metadata.num_rows, "kept": kept, "excluded": dict(sorted(excluded.items()))}
