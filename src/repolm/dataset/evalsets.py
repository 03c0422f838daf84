"""Evaluation sets from the commits after the cutoff (validation and test), as text: the model
is scored on them by the eval stage, tokenizer-independently.

- `future_records.parquet`: each future commit's whole record as text, diffs also in training
  left out (bits per byte on the future; written by the stage, which holds the records).
- `future_patches.parquet`: every kept file change.
- `completion.parquet`: functions and tests added or modified, with the file before and after
  them at that commit (code completion; `seen_in_train` flags a body identical to a unit of the
  training snapshot, e.g. code moved between files).
- `next_change.parquet`: a commit's message and the commits before it -> the files it touched.
- `commit_messages.parquet`: a commit's diff -> its message.

Merges are left out (their first-parent diff repeats their branch's commits). Text read here
from the object store (the completion context) is scrubbed like everything in OUT/filter/.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from repolm.config.schema import Config
from repolm.gitrepo import BlobReader, Repo
from repolm.layout import DatasetLayout, RunLayout
from repolm.logs import progress
from repolm.mine.tables import rows_table
from repolm.split import Split

if TYPE_CHECKING:
    from repolm.dataset.corpus import Commits

FUTURE = ("val", "test")
COMPLETION_TYPES = ("new_function", "modified_function", "new_test", "modified_test")
TIME = pa.timestamp("ms", tz="UTC")
TEXTS = (11, 12, 13)  # prefix, target, suffix in a completion row

SCHEMAS = {
    "future_patches": pa.schema(
        [
            ("sha", pa.string()),
            ("time", TIME),
            ("split", pa.string()),
            ("path", pa.string()),
            ("language", pa.string()),
            ("status", pa.string()),
            ("patch", pa.string()),
        ]
    ),
    "completion": pa.schema(
        [
            ("sha", pa.string()),
            ("time", TIME),
            ("split", pa.string()),
            ("path", pa.string()),
            ("language", pa.string()),
            ("kind", pa.string()),
            ("name", pa.string()),
            ("qualified_name", pa.string()),
            ("change_type", pa.string()),
            ("start_line", pa.int32()),
            ("end_line", pa.int32()),
            ("prefix", pa.string()),
            ("target", pa.string()),
            ("suffix", pa.string()),
            ("seen_in_train", pa.bool_()),
        ]
    ),
    "next_change": pa.schema(
        [
            ("sha", pa.string()),
            ("time", TIME),
            ("split", pa.string()),
            ("message", pa.string()),
            ("files", pa.list_(pa.string())),
            ("previous_shas", pa.list_(pa.string())),
            ("previous_messages", pa.list_(pa.string())),
            ("previous_files", pa.list_(pa.list_(pa.string()))),
        ]
    ),
    "future_records": pa.schema(
        [
            ("sha", pa.string()),
            ("time", TIME),
            ("split", pa.string()),
            ("text", pa.string()),
        ]
    ),
    "commit_messages": pa.schema(
        [
            ("sha", pa.string()),
            ("time", TIME),
            ("split", pa.string()),
            ("diff", pa.string()),
            ("message", pa.string()),
        ]
    ),
}


def write_eval_sets(
    repo: Repo,
    layout: RunLayout,
    dest: DatasetLayout,
    config: Config,
    split: Split,
    commits: Commits,
) -> dict[str, Any]:
    """The evaluation sets from the filter stage's tables of `layout`'s run into `dest`."""
    dest.eval_dir.mkdir()
    future = {
        i for i in range(len(commits.sha)) if commits.split[i] in FUTURE and not commits.merge[i]
    }
    stats: dict[str, Any] = {}
    stats["future_patches"], diffs, files = _patches(layout, dest, commits, future)
    stats["commit_messages"] = write_eval_set(
        dest,
        "commit_messages",
        [
            (commits.sha[i], commits.time[i], commits.split[i], diffs[i], commits.message[i])
            for i in commits.chronological()
            if i in diffs
        ],
    )
    stats["next_change"] = write_eval_set(
        dest,
        "next_change",
        next_change_rows(commits, files, future, config.build.previous_commits),
    )
    stats.update(_completion(repo, layout, dest, config, commits))
    return stats


def write_eval_set(dest: DatasetLayout, name: str, rows: list[tuple[Any, ...]]) -> int:
    pq.write_table(rows_table(rows, SCHEMAS[name]), dest.eval_set(name), compression="zstd")
    return len(rows)


def _patches(
    layout: RunLayout, dest: DatasetLayout, commits: Commits, future: set[int]
) -> tuple[int, dict[int, str], dict[int, list[str]]]:
    """Writes future_patches; returns its row count, each future commit's whole diff, and
    every non-merge commit's kept paths."""
    pf = pq.ParquetFile(layout.filtered("changes"))
    diffs: dict[int, list[str]] = defaultdict(list)
    files: dict[int, list[str]] = defaultdict(list)
    n = 0
    schema = SCHEMAS["future_patches"]
    with pq.ParquetWriter(dest.eval_set("future_patches"), schema, compression="zstd") as writer:
        for g in range(pf.num_row_groups):
            t = pf.read_row_group(g, columns=["sha", "path", "language", "status", "patch"])
            rows = []
            for sha, path, language, status, patch in zip(
                *(t.column(c).to_pylist() for c in t.column_names), strict=True
            ):
                i = commits.index.get(sha)
                if i is None or commits.merge[i]:
                    continue
                files[i].append(path)
                if i in future:
                    rows.append(
                        (sha, commits.time[i], commits.split[i], path, language, status, patch)
                    )
                    diffs[i].append(patch or "")
            if rows:
                writer.write_table(rows_table(rows, schema))
                n += len(rows)
    return n, {i: "".join(d) for i, d in diffs.items()}, files


def next_change_rows(
    commits: Commits, files: dict[int, list[str]], future: set[int], previous: int
) -> list[tuple[Any, ...]]:
    """For each future commit that touched kept files: its message, the `previous` commits
    before it (any split; what a developer would know at that moment) and the files it
    touched, sorted."""
    line = [i for i in commits.chronological() if i in files]
    rows = []
    for n, i in enumerate(line):
        if i not in future:
            continue
        before = line[max(0, n - previous) : n][::-1]  # newest first
        rows.append(
            (
                commits.sha[i],
                commits.time[i],
                commits.split[i],
                commits.message[i],
                sorted(set(files[i])),
                [commits.sha[j] for j in before],
                [commits.message[j] for j in before],
                [sorted(set(files[j])) for j in before],
            )
        )
    return rows


def _completion(
    repo: Repo, layout: RunLayout, dest: DatasetLayout, config: Config, commits: Commits
) -> dict[str, Any]:
    # imported here: the eval stage reads this module's schemas, and the scrubber's pattern
    # tables take a while to compile
    from repolm.filter.batch import LineScrubber

    cfg = config.build
    path = layout.filtered("chunks")
    # read only the rows needed (the units' texts are most of the file)
    snapshot = {
        _digest(t)
        for t in pq.read_table(path, columns=["text"], filters=[("source", "=", "snapshot")])
        .column("text")
        .to_pylist()
        if t
    }
    chunks = pq.read_table(
        path,
        columns=[
            "sha",
            "path",
            "language",
            "kind",
            "name",
            "qualified_name",
            "change_type",
            "start_line",
            "end_line",
            "text",
            "split",
            "blob",
        ],
        filters=[("split", "in", FUTURE), ("change_type", "in", COMPLETION_TYPES)],
    )
    rows = [
        r
        for r in chunks.to_pylist()
        if (i := commits.index.get(r["sha"])) is not None
        and commits.split[i] in FUTURE
        and not commits.merge[i]
    ]
    total = len(rows)
    if len(rows) > cfg.max_completions:  # a deterministic sample, spread over the future
        rows = sorted(
            rows,
            key=lambda r: _digest(
                f"{r['sha']}:{r['path']}:{r['qualified_name']}:{r['start_line']}"
            ),
        )[: cfg.max_completions]
    rows.sort(key=lambda r: (commits.index[r["sha"]], r["path"], r["start_line"]))
    out: list[list[Any]] = []
    keep = cfg.max_context_chars
    with BlobReader(repo) as reader:
        blobs = reader.read_many(sorted({r["blob"] for r in rows if r["blob"]}))
    with progress("build: completion set", total=len(rows), unit="functions") as bar:
        for r in rows:
            bar.advance()
            data = blobs.get(r["blob"]) if r["blob"] else None
            if data is None:
                continue
            lines = data.decode("utf-8", "replace").splitlines(keepends=True)
            a, b = r["start_line"] - 1, r["end_line"]
            prefix = "".join(lines[:a])
            suffix = "".join(lines[b:])
            if len(prefix) > keep:  # the context nearest the function, from a line start
                cut = prefix.find("\n", len(prefix) - keep)
                prefix = prefix[cut + 1 :] if cut >= 0 else ""
            if len(suffix) > keep:
                cut = suffix.rfind("\n", 0, keep)
                suffix = suffix[: cut + 1] if cut >= 0 else ""
            i = commits.index[r["sha"]]
            out.append(
                [
                    r["sha"],
                    commits.time[i],
                    r["split"],
                    r["path"],
                    r["language"],
                    r["kind"],
                    r["name"],
                    r["qualified_name"],
                    r["change_type"],
                    r["start_line"],
                    r["end_line"],
                    prefix,
                    "".join(lines[a:b]),
                    suffix,
                    _digest(r["text"] or "") in snapshot,
                ]
            )
    # read from the object store, so scrubbed here like everything in OUT/filter/ (one pass:
    # the same lines recur across a file's versions)
    pieces = [row[k] for row in out for k in TEXTS]
    changed, clean, found = LineScrubber(config.filter.emails, config.filter.ips).scrub(pieces)
    for n, text in zip(changed, clean, strict=True):
        out[n // len(TEXTS)][TEXTS[n % len(TEXTS)]] = text
    return {
        "completion": write_eval_set(dest, "completion", [tuple(row) for row in out]),
        "completion_candidates": total,
        "completion_secrets_scrubbed": dict(sorted(found.items())),
    }


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()
