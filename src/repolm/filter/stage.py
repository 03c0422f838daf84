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

import os
import time
from typing import Any

from repolm.config.schema import FilterConfig
from repolm.errors import RepolmError
from repolm.filter.batch import BatchScrubber
from repolm.filter.exclude import ExcludeRules
from repolm.filter.snapshot import filter_snapshot
from repolm.filter.tables import filter_changes, filter_chunks, filter_commits
from repolm.fsutil import write_json_atomic
from repolm.gitrepo import Repo
from repolm.layout import RunLayout
from repolm.logs import log
from repolm.split import Split, run_split
from repolm.stage import StageContext, StageResult


def run_stage(ctx: StageContext) -> StageResult:
    split = run_split(ctx.out, ctx.repo.head, ctx.config.split)
    stats = filter_run(ctx.repo, ctx.layout, ctx.config.filter, split)
    kept = stats["files"]["kept"]
    secrets = sum(stats["secrets"].values())
    summary = (
        f"{kept} snapshot files kept, {stats['changes']['kept']} changes; "
        f"{secrets} secrets/PII scrubbed"
    )
    return StageResult(stats=stats, summary=summary)


def filter_run(repo: Repo, layout: RunLayout, cfg: FilterConfig, split: Split) -> dict[str, Any]:
    t0 = time.monotonic()
    layout.filter_dir.mkdir(parents=True, exist_ok=True)
    rules = ExcludeRules(
        include=tuple(cfg.include),
        exclude=tuple(cfg.exclude),
        languages=tuple(cfg.languages),
        max_file_bytes=cfg.max_file_bytes,
        max_line_length=cfg.max_line_length,
    )
    jobs = cfg.jobs or (os.cpu_count() or 1)
    with BatchScrubber(cfg.emails, cfg.ips, jobs) as scrub:
        finish_commits = filter_commits(layout, cfg, split, scrub)  # scrubbed meanwhile
        files, content_excluded, repo_license = filter_snapshot(
            repo, split, cfg, rules, scrub, layout.filtered("files")
        )
        commits = finish_commits()
        changes = filter_changes(layout, rules, content_excluded, split, scrub)
        chunks = filter_chunks(layout, rules, content_excluded, cfg, scrub)
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
    write_json_atomic(layout.filter_stats, stats)
    log.info(
        f"filter: {files['kept']}/{files['total']} snapshot files kept, "
        f"{sum(secrets.values())} secrets/PII scrubbed"
    )
    return stats
