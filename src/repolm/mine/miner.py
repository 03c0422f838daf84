"""The mine stage: every commit reachable from the selected refs, exactly once, to Parquet.

Incremental: commits already mined with the same row-shaping settings are kept as they are and
only new ones are read; commits that are no longer reachable (a force-push rewrote history) are
dropped, and commits that were read incompletely (missing objects) are tried again. Ref-dependent
columns (`refs`, `branches`) are recomputed on every run, as they are cheap.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from repolm.config import MineConfig
from repolm.errors import GitError
from repolm.fsutil import atomic_path, json_digest, write_json_atomic
from repolm.gitrepo import Ref, Repo
from repolm.logs import log, progress
from repolm.mine.gitlog import iter_commits
from repolm.mine.languages import detect_language
from repolm.mine.records import LogOptions, LogReport
from repolm.mine.tables import COMMITS_SCHEMA, SCHEMA_VERSION, ChangesWriter, CommitColumns
from repolm.stage import StageContext, StageResult

COMMITS = "commits.parquet"
CHANGES = "changes.parquet"
STATE = "state.json"
# Settings that shape the rows of a commit; changing one of them means mining again from scratch.
ROW_SETTINGS = {
    "merge_diff",
    "detect_renames",
    "detect_copies",
    "max_patch_bytes",
    "max_blob_bytes",
}


def mine(repo: Repo, stage_dir: Path, cfg: MineConfig, full: bool = False) -> dict[str, Any]:
    """Mine `repo` into `stage_dir`; return the stage's stats."""
    t0 = time.monotonic()
    stage_dir.mkdir(parents=True, exist_ok=True)
    tips = repo.tips(cfg.refs)
    if not tips:
        raise GitError(
            f"{repo.path} has no commits",
            "commit something first, or pass --repo with a repository that has history",
        )
    shallow = repo.shallow_boundary()
    if repo.shallow:
        log.warning(
            f"{repo.path} is a shallow clone: history is cut at {len(shallow)} commit(s); "
            "run 'git fetch --unshallow' to mine all of it"
        )
    graph = repo.commit_graph(sorted({r.commit for r in tips}))
    order = {sha: i for i, (sha, _) in enumerate(graph)}

    state_key = _state_key(cfg)
    old = None if full else _load_previous(stage_dir, state_key)
    keep: set[str] = set()
    dropped = retried = 0
    if old is not None:
        shas = old.column("sha").to_pylist()
        levels = old.column("read_level").to_pylist()
        cut = old.column("shallow_boundary").to_pylist()
        # Read again: commits read incompletely, and shallow cuts that a deepening moved.
        rows = zip(shas, levels, cut, strict=True)
        complete = {s for s, lvl, b in rows if lvl == "full" and b == (s in shallow)}
        keep = {s for s in shas if s in order and s in complete}
        dropped = sum(1 for s in shas if s not in order)
        retried = sum(1 for s in shas if s in order and s not in complete)
        if dropped:
            log.warning(
                f"history was rewritten: {dropped} mined commit(s) are no longer reachable "
                "from any ref and were dropped"
            )
        old = old.filter(pc.is_in(old.column("sha"), pa.array(sorted(keep), pa.string())))
    new = [sha for sha, _ in graph if sha not in keep]
    log.info(
        f"mine: {len(graph)} commits reachable from {len(tips)} refs; "
        f"{len(keep)} already mined, {len(new)} to read"
    )

    report = LogReport()
    columns = CommitColumns(shallow)
    opts = LogOptions(
        cfg.merge_diff,
        cfg.detect_renames,
        cfg.detect_copies,
        cfg.max_patch_bytes,
        cfg.max_blob_bytes,
    )
    jobs = cfg.jobs or min(4, os.cpu_count() or 1)
    commits_path, changes_path = stage_dir / COMMITS, stage_dir / CHANGES
    with atomic_path(changes_path) as tmp_changes:
        writer = ChangesWriter(tmp_changes, repo, cfg.max_blob_bytes)
        try:
            if keep:
                _copy_kept_changes(changes_path, keep, writer)
            with progress("mine", total=len(new), unit="commits") as bar:
                # Newest first: packs store the newest version of a file whole and older ones
                # as deltas, so git reads blobs ~30% faster in this order than oldest first.
                for commit in iter_commits(
                    repo, new[::-1], opts, jobs=jobs, report=report, tmp_dir=stage_dir
                ):
                    writer.add(commit)
                    columns.add(commit)
                    bar.advance()
        finally:
            writer.close()
        table = columns.table()
        if old is not None and old.num_rows:
            table = pa.concat_tables([old.select(COMMITS_SCHEMA.names).cast(COMMITS_SCHEMA), table])
        table = _with_refs(table, order, tips, dict(graph), cfg, repo)
        if table.num_rows != len(graph) - len(report.unreadable_commits):
            raise RuntimeError(f"mined {table.num_rows} commits, expected {len(graph)}")
        with atomic_path(commits_path) as tmp_commits:
            pq.write_table(table, tmp_commits, compression="zstd")
    write_json_atomic(
        stage_dir / STATE,
        {
            "key": state_key,
            "commits_bytes": commits_path.stat().st_size,
            "changes_bytes": changes_path.stat().st_size,
        },
    )
    missing = len(report.missing_objects)
    if report.degraded["files"] or report.degraded["meta"] or repo.is_partial_clone:
        # git names only the first missing object of each failure: count them all, fetching none.
        missing = max(missing, repo.count_missing_objects(sorted({r.commit for r in tips})))
    _warn_missing(report, missing)

    seconds = time.monotonic() - t0
    stats = {
        "commits": table.num_rows,
        "new_commits": len(new) - len(report.unreadable_commits),
        "kept_commits": len(keep),
        "dropped_commits": dropped,
        "retried_commits": retried,
        "file_changes": writer.rows,
        "new_file_changes": writer.stats["rows"],
        "patch_bytes": writer.stats["patch_bytes"],
        "truncated_patches": writer.stats["patch_truncated"],
        "binary_changes": writer.stats["is_binary"],
        "large_changes": writer.stats["is_large"],
        "submodule_changes": writer.stats["is_submodule"],
        "symlink_changes": writer.stats["is_symlink"],
        "shallow": repo.shallow,
        "partial_clone": repo.is_partial_clone,
        "missing_objects": missing,
        "commits_without_patches": report.degraded["files"],
        "commits_without_files": report.degraded["meta"],
        "unreadable_commits": len(report.unreadable_commits),
        "seconds": round(seconds, 3),
        "commits_per_second": round(len(new) / seconds, 1) if seconds else None,
        "jobs": jobs,
    }
    stats["repository"] = repository_stats(repo, table, tips)
    return stats


def _state_key(cfg: MineConfig) -> str:
    settings = cfg.model_dump(include=ROW_SETTINGS)
    return json_digest({"schema": SCHEMA_VERSION, "settings": settings})


def _load_previous(stage_dir: Path, key: str) -> pa.Table | None:
    """The previous run's commits, if they were written completely with the same settings."""
    try:
        state = json.loads((stage_dir / STATE).read_text())
        commits, changes = stage_dir / COMMITS, stage_dir / CHANGES
        if (
            state.get("key") != key
            or commits.stat().st_size != state.get("commits_bytes")
            or changes.stat().st_size != state.get("changes_bytes")
        ):
            return None
        return pq.read_table(commits, columns=list(COMMITS_SCHEMA.names))
    except (OSError, ValueError, pa.ArrowException):
        return None


def _copy_kept_changes(path: Path, keep: set[str], writer: ChangesWriter) -> None:
    keep_arr = pa.array(sorted(keep), pa.string())
    pf = pq.ParquetFile(path)
    for i in range(pf.num_row_groups):
        rg = pf.read_row_group(i)
        writer.write_table(rg.filter(pc.is_in(rg.column("sha"), keep_arr)))


def _with_refs(
    table: pa.Table,
    order: dict[str, int],
    tips: list[Ref],
    parents: dict[str, tuple[str, ...]],
    cfg: MineConfig,
    repo: Repo,
) -> pa.Table:
    """Sort oldest first (parents before children) and fill `refs` and `branches`."""
    shas = table.column("sha").to_pylist()
    table = table.take(pa.array(sorted(range(len(shas)), key=lambda i: order[shas[i]])))
    shas = table.column("sha").to_pylist()

    refs_at: dict[str, list[str]] = defaultdict(list)
    for ref in tips:
        refs_at[ref.commit].append(ref.name)
    branches_of: dict[str, list[str]] = defaultdict(list)
    branch_refs = [r for r in tips if _is_branch(r.name)]
    if cfg.branch_lineage and len(branch_refs) <= cfg.max_lineage_branches:
        for ref in sorted(branch_refs, key=lambda r: r.name):
            sha: str | None = ref.commit
            while sha is not None:
                branches_of[sha].append(ref.name)
                ps = parents.get(sha)
                sha = ps[0] if ps else None
    elif cfg.branch_lineage:
        log.info(
            f"mine: {len(branch_refs)} branches exceed mine.max_lineage_branches="
            f"{cfg.max_lineage_branches}; branch lineages not recorded"
        )
    refs_col = pa.array([sorted(refs_at.get(s, [])) for s in shas], pa.list_(pa.string()))
    br_col = pa.array([branches_of.get(s, []) for s in shas], pa.list_(pa.string()))
    table = table.set_column(table.schema.get_field_index("refs"), "refs", refs_col)
    return table.set_column(table.schema.get_field_index("branches"), "branches", br_col)


def _is_branch(name: str) -> bool:
    if name == "HEAD":
        return False
    return name.startswith("refs/heads/") or (
        name.startswith("refs/remotes/") and not name.endswith("/HEAD")
    )


def _warn_missing(report: LogReport, missing: int) -> None:
    partial = report.degraded["files"] + report.degraded["meta"] + len(report.unreadable_commits)
    if missing or partial:
        log.warning(
            f"{missing} git object(s) could not be read (partial clone or "
            f"damaged store): {report.degraded['files']} commit(s) kept without patches, "
            f"{report.degraded['meta']} without file lists, "
            f"{len(report.unreadable_commits)} skipped"
        )
    if report.patch_mismatches:
        log.warning(
            f"{report.patch_mismatches} commit(s) had patches that could not be matched to "
            "their files; their patches were left out"
        )
    for line in report.git_warnings:
        log.debug(f"git: {line}")


def repository_stats(repo: Repo, commits: pa.Table, tips: list[Ref]) -> dict[str, Any]:
    """Figures for the manifest: history size, people, time span, languages at HEAD."""
    times = commits.column("author_time")
    first, last = pc.min(times).as_py(), pc.max(times).as_py()
    emails = pc.count_distinct(pc.utf8_lower(commits.column("author_email"))).as_py()
    return {
        "path": str(repo.path),
        "bare": repo.bare,
        "commits": commits.num_rows,
        "merges": pc.sum(commits.column("is_merge")).as_py() or 0,
        "branches": sum(1 for r in tips if _is_branch(r.name)),
        "tags": sum(1 for r in tips if r.name.startswith("refs/tags/")),
        "authors": emails,
        "first_commit_time": _iso(first),
        "last_commit_time": _iso(last),
        "head": repo.head,
        "head_ref": repo.head_branch or ("HEAD (detached)" if repo.head else None),
        "languages_at_head": languages_at_head(repo),
    }


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(timezone.utc).isoformat() if ts is not None else None


def languages_at_head(repo: Repo) -> dict[str, int]:
    """Bytes per language in HEAD's tree, largest first (from tree entries; no blob is read)."""
    if repo.head is None:
        return {}
    sizes: Counter[str] = Counter()
    for path, _mode, _blob, size in repo.tree_files(repo.head):
        lang = detect_language(path)
        if lang:
            sizes[lang] += size
    return dict(sizes.most_common())


def run_stage(ctx: StageContext) -> StageResult:
    stats = mine(ctx.repo, ctx.layout.mine_dir, ctx.config.mine, full=ctx.force)
    repository = stats.pop("repository")
    summary = (
        f"{_plural(stats['commits'], 'commit')} ({stats['new_commits']} new), "
        f"{_plural(stats['file_changes'], 'file change')}"
    )
    return StageResult(stats=stats, summary=summary, manifest={"repository": repository})


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
