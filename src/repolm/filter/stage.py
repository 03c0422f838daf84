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
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from repolm.config.schema import FilterConfig
from repolm.errors import RepolmError
from repolm.filter.dedup import Deduper
from repolm.filter.exclude import ExcludeRules, content_reason, path_reason
from repolm.filter.licenses import detect_license, is_denied, license_files, spdx_header
from repolm.filter.secrets import Scrubber
from repolm.fsutil import atomic_path, write_json_atomic
from repolm.logs import log, progress
from repolm.mine.git import BlobReader, Repo
from repolm.mine.languages import detect_language
from repolm.mine.model import MODE_SUBMODULE, MODE_SYMLINK
from repolm.mine.tables import rows_table
from repolm.pipeline.stage import StageContext, StageResult
from repolm.split import Split, run_split

FILES = "files.parquet"
COMMITS = "commits.parquet"
CHANGES = "changes.parquet"
CHUNKS = "chunks.parquet"
STATS = "stats.json"
FILES_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("language", pa.string()),
    ("blob", pa.string()),
    ("bytes", pa.int64()),  # size before scrubbing
    ("license", pa.string()),  # the file's SPDX header, else the repository's license
    ("text", pa.string()),  # scrubbed
])  # fmt: skip


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
    rules = ExcludeRules(include=tuple(cfg.include), exclude=tuple(cfg.exclude),
                         languages=tuple(cfg.languages), max_file_bytes=cfg.max_file_bytes,
                         max_line_length=cfg.max_line_length)  # fmt: skip
    jobs = cfg.jobs or (os.cpu_count() or 1)
    with _BatchScrubber(cfg.emails, cfg.ips, jobs) as scrub:
        files, content_excluded, repo_license = _snapshot(repo, split, cfg, rules, scrub,
                                                          stage_dir)  # fmt: skip
        commits = _commits(out, stage_dir, cfg, split, scrub)
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


def _snapshot(repo: Repo, split: Split, cfg: FilterConfig, rules: ExcludeRules,
              scrub: _BatchScrubber, stage_dir: Path
              ) -> tuple[dict[str, Any], set[str], str | None]:  # fmt: skip
    """The snapshot's files: license, exclusions, scrubbing, de-duplication."""
    tree = repo.tree_files(split.cutoff_sha)
    excluded: Counter[str] = Counter()
    content_excluded: set[str] = set()
    dedup = Deduper(threshold=cfg.dedup_threshold, shingle=cfg.dedup_shingle)
    rows: list[tuple] = []
    with BlobReader(repo) as reader:
        licenses = sorted({lic for p in license_files(p for p, *_ in tree)
                           if (lic := _license_of(reader, tree, p))})  # fmt: skip
        repo_license = " OR ".join(licenses) if licenses else None
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
                text = scrub.one(data.decode("utf-8", "replace"))
                verdict, _ = dedup.check(path, text or "")
                if verdict != "unique":
                    excluded[f"duplicate_{verdict}"] += 1
                    content_excluded.add(path)
                    continue
                rows.append((path, language, blob, len(data), license, text))
    with atomic_path(stage_dir / FILES) as tmp:
        pq.write_table(rows_table(rows, FILES_SCHEMA), tmp, compression="zstd")
    stats = {"total": len(tree), "kept": len(rows), "excluded": dict(sorted(excluded.items()))}
    return stats, content_excluded, repo_license


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
    scrub: _BatchScrubber,
) -> dict[str, Any]:
    """Commit metadata with messages scrubbed and author fields hashed or dropped."""
    table = pq.read_table(out / "mine" / "commits.parquet")
    key = _hash_key(table)
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    cols["message"] = scrub.many(cols["message"])
    for field in ("author_email", "committer_email"):
        cols[field] = [_identity(v, cfg.author_emails, key) for v in cols[field]]
    for field in ("author_name", "committer_name"):
        cols[field] = [_identity(v, cfg.author_names, key) for v in cols[field]]
    cols["split"] = [split.part(s) for s in cols["sha"]]
    schema = table.schema.append(pa.field("split", pa.string()))
    with atomic_path(stage_dir / COMMITS) as tmp:
        pq.write_table(pa.Table.from_pydict(cols, schema=schema), tmp, compression="zstd")
    return {"total": table.num_rows, "author_emails": cfg.author_emails,
            "author_names": cfg.author_names}  # fmt: skip


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
    return "h:" + hashlib.blake2b(value.strip().lower().encode(), key=key[:32],
                                  digest_size=8).hexdigest()  # fmt: skip


def _changes(
    out: Path,
    stage_dir: Path,
    rules: ExcludeRules,
    content_excluded: set[str],
    split: Split,
    scrub: _BatchScrubber,
) -> dict[str, Any]:
    """Every file change whose path is kept; patches scrubbed (deleted secrets included)."""
    pf = pq.ParquetFile(out / "mine" / "changes.parquet")
    excluded: Counter[str] = Counter()
    kept = 0
    schema = pf.schema_arrow.append(pa.field("split", pa.string()))
    with (
        atomic_path(stage_dir / CHANGES) as tmp,
        pq.ParquetWriter(tmp, schema, compression="zstd") as writer,
        progress("filter history", total=pf.metadata.num_rows, unit="changes") as bar,
    ):
        for rows in _row_groups(pf):
            keep = []
            for r in rows:
                reason = _change_reason(r, rules, content_excluded)
                if reason is not None:
                    excluded[reason] += 1
                    continue
                r["split"] = split.part(r["sha"])
                keep.append(r)
            for r, patch in zip(keep, scrub.many([r["patch"] for r in keep]), strict=True):
                r["patch"] = patch
            kept += len(keep)
            writer.write_table(pa.Table.from_pylist(keep, schema=schema))
            bar.advance(len(rows))
    return {"total": pf.metadata.num_rows, "kept": kept, "excluded": dict(sorted(excluded.items()))}


def _change_reason(
    r: dict[str, Any], rules: ExcludeRules, content_excluded: set[str]
) -> str | None:
    if r["is_submodule"]:
        return "submodule"
    if r["is_symlink"]:
        return "symlink"
    if r["is_large"]:
        return "too_large"
    if r["is_binary"]:
        return "binary"
    for path in {r["path"], r["old_path"]} - {None}:
        reason = path_reason(path, r["language"], rules)
        if reason is not None:
            return reason
        if path in content_excluded:
            return "excluded_in_snapshot"
    return None


def _chunks(
    out: Path,
    stage_dir: Path,
    rules: ExcludeRules,
    content_excluded: set[str],
    cfg: FilterConfig,
    scrub: _BatchScrubber,
) -> dict[str, Any]:
    """The chunk stage's units, scrubbed; snapshot units de-duplicated exactly and nearly."""
    path = out / "chunk" / "chunks.parquet"
    pf = pq.ParquetFile(path)
    excluded: Counter[str] = Counter()
    dedup = Deduper(threshold=cfg.dedup_threshold, shingle=cfg.dedup_shingle)
    kept = 0
    with (
        atomic_path(stage_dir / CHUNKS) as tmp,
        pq.ParquetWriter(tmp, pf.schema_arrow, compression="zstd") as writer,
        progress("filter units", total=pf.metadata.num_rows, unit="units") as bar,
    ):
        for rows in _row_groups(pf):
            keep = []
            candidates = []
            for r in rows:
                reason = path_reason(r["path"], r["language"], rules)
                if reason is None and r["path"] in content_excluded:
                    reason = "excluded_in_snapshot"
                if reason is not None:
                    excluded[reason] += 1
                else:
                    candidates.append(r)
            for r, text in zip(candidates, scrub.many([r["text"] for r in candidates]),
                               strict=True):  # fmt: skip
                r["text"] = text
            for r in candidates:
                if r["source"] == "snapshot":
                    verdict, _ = dedup.check(f"{r['path']}:{r['start_line']}", r["text"] or "")
                    if verdict != "unique":
                        excluded[f"duplicate_{verdict}"] += 1
                        continue
                keep.append(r)
            kept += len(keep)
            writer.write_table(pa.Table.from_pylist(keep, schema=pf.schema_arrow))
            bar.advance(len(rows))
    return {"total": pf.metadata.num_rows, "kept": kept, "excluded": dict(sorted(excluded.items()))}


class _BatchScrubber:
    """Scrub many short texts in few passes: the scrubber's cost is mostly per call (one regex
    pass per pattern), so texts are joined with a separator no pattern can match across,
    scrubbed once and split again (if a finding ever spans a separator, that batch is scrubbed
    text by text instead). Batches are spread over `jobs` processes. Use as a context manager."""

    SEP = "\n\x00\x1e\x00\n"

    def __init__(self, emails: bool, ips: bool, jobs: int) -> None:
        self._options = {"emails": emails, "ips": ips}
        self._scrubber = Scrubber(**self._options)
        self._pool: ProcessPoolExecutor | None = None
        if jobs > 1:
            self._pool = ProcessPoolExecutor(
                jobs, initializer=_init_scrubber, initargs=(self._options,)
            )
        self.found: Counter[str] = Counter()

    def __enter__(self) -> _BatchScrubber:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def one(self, text: str | None) -> str | None:
        if not text:
            return text
        clean, found = self._scrubber.scrub(text)
        self.found.update(found)
        return clean

    def many(self, texts: list[str | None], batch_chars: int = 1_000_000) -> list[str | None]:
        out: list[str | None] = list(texts)
        groups: list[list[int]] = [[]]
        size = 0
        for i, t in enumerate(texts):
            if not t:
                continue
            if size >= batch_chars:
                groups.append([])
                size = 0
            groups[-1].append(i)
            size += len(t)
        joined = [self.SEP.join(texts[i] or "" for i in g) for g in groups if g]
        results = (self._pool.map(_scrub, joined) if self._pool is not None
                   else map(self._scrubber.scrub, joined))  # fmt: skip
        for group, (clean, found) in zip([g for g in groups if g], results, strict=True):
            parts = clean.split(self.SEP)
            if len(parts) == len(group):
                self.found.update(found)
                for i, part in zip(group, parts, strict=True):
                    out[i] = part
            else:
                for i in group:
                    out[i] = self.one(texts[i])
        return out


_scrubber: Scrubber | None = None


def _init_scrubber(options: dict[str, bool]) -> None:
    global _scrubber
    _scrubber = Scrubber(**options)


def _scrub(text: str) -> tuple[str, Counter[str]]:
    assert _scrubber is not None, "called outside a worker process"
    return _scrubber.scrub(text)


def _row_groups(pf: pq.ParquetFile) -> Iterator[list[dict[str, Any]]]:
    for i in range(pf.num_row_groups):
        yield pf.read_row_group(i).to_pylist()
