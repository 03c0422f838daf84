"""The snapshot at the cutoff, filtered: license, exclusions by path and content, scrubbing and
de-duplication, into OUT/filter/files.parquet."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from repolm.config.schema import FilterConfig
from repolm.filter.batch import BatchScrubber, Pending
from repolm.filter.dedup import Deduper
from repolm.filter.exclude import ExcludeRules, content_reason, path_reason
from repolm.filter.licenses import detect_license, is_denied, license_files, spdx_header
from repolm.filter.streams import ahead
from repolm.fsutil import atomic_path
from repolm.gitrepo import BlobReader, Repo
from repolm.logs import progress
from repolm.mine.languages import detect_language
from repolm.mine.model import MODE_SUBMODULE, MODE_SYMLINK
from repolm.mine.tables import rows_table
from repolm.split import Split

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


def filter_snapshot(
    repo: Repo,
    split: Split,
    cfg: FilterConfig,
    rules: ExcludeRules,
    scrub: BatchScrubber,
    dest: Path,
) -> tuple[dict[str, Any], set[str], str | None]:
    """The snapshot's files: license, exclusions, scrubbing, de-duplication; written to `dest`."""
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
        for batch, pending in ahead(_batches(files, _SNAPSHOT_BATCH_CHARS), start):
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
    with atomic_path(dest) as tmp:
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
