"""Parquet schemas of the mine stage and the writers that fill them in bounded memory."""

from __future__ import annotations

import array
import functools
import itertools
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from repolm.gitrepo import Repo
from repolm.mine.blobs import settle_blobs
from repolm.mine.languages import detect_language
from repolm.mine.model import Commit

language = functools.lru_cache(maxsize=1 << 16)(detect_language)

SCHEMA_VERSION = 1
COMPRESSION = "zstd"

TS = pa.timestamp("ms", tz="UTC")  # Parquet has no second resolution

COMMITS_SCHEMA = pa.schema(
    [
        ("sha", pa.string()),
        ("parents", pa.list_(pa.string())),
        ("author_name", pa.string()),
        ("author_email", pa.string()),
        ("author_time", TS),
        ("author_tz_offset", pa.int16()),  # minutes east of UTC, as recorded by the author
        ("committer_name", pa.string()),
        ("committer_email", pa.string()),
        ("commit_time", TS),
        ("commit_tz_offset", pa.int16()),
        ("message", pa.string()),
        ("is_merge", pa.bool_()),
        ("refs", pa.list_(pa.string())),  # refs whose tip is this commit
        ("branches", pa.list_(pa.string())),  # branches whose first-parent lineage holds it
        ("files_changed", pa.int32()),
        ("insertions", pa.int64()),  # null when patches could not be read
        ("deletions", pa.int64()),
        ("read_level", pa.string()),  # full | files | meta (objects missing)
        ("shallow_boundary", pa.bool_()),  # parents cut off by a shallow clone
    ]
)

CHANGES_SCHEMA = pa.schema(
    [
        ("sha", pa.string()),
        ("path", pa.string()),
        ("old_path", pa.string()),
        ("status", pa.string()),
        ("old_mode", pa.int32()),
        ("new_mode", pa.int32()),
        ("old_blob", pa.string()),
        ("new_blob", pa.string()),  # for a submodule: the gitlink's commit
        ("similarity", pa.int16()),
        ("is_binary", pa.bool_()),
        ("is_large", pa.bool_()),  # over mine.max_blob_bytes: never read, never diffed
        ("is_submodule", pa.bool_()),
        ("is_symlink", pa.bool_()),
        ("symlink_target", pa.string()),
        ("additions", pa.int32()),
        ("deletions", pa.int32()),
        ("patch", pa.string()),
        ("patch_bytes", pa.int64()),  # size before any cut
        ("patch_truncated", pa.bool_()),
        ("language", pa.string()),
    ]
)

_CHANGE_FIELDS = [f.name for f in CHANGES_SCHEMA]
_PATCH_INDEX = CHANGES_SCHEMA.get_field_index("patch")


def rows_table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    """A table from row tuples in the schema's column order."""
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    arrays = [pa.array(c, f.type) for c, f in zip(cols, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def utf8_array(values: list[bytes | None]) -> pa.Array:
    """A string array straight from UTF-8 bytes: one join, no per-item str round trip."""
    offsets = array.array(
        "i", itertools.accumulate((len(v) if v is not None else 0 for v in values), initial=0)
    )
    data = b"".join(v for v in values if v is not None)
    nulls = sum(v is None for v in values)
    validity = pa.array([v is not None for v in values], pa.bool_()).buffers()[1] if nulls else None
    return pa.Array.from_buffers(
        pa.string(),
        len(values),
        [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
        null_count=nulls,
    )


class ChangesWriter:
    """Append file changes commit by commit; flush a row group every `max_rows` rows or
    `max_bytes` of patch text, so memory stays bounded whatever the history's size.
    `stats` counts what was written from this run's commits."""

    def __init__(
        self,
        path: Path,
        repo: Repo,
        max_blob_bytes: int,
        max_rows: int = 16384,
        max_bytes: int = 64 << 20,
    ) -> None:
        self._writer = pq.ParquetWriter(
            path,
            CHANGES_SCHEMA,
            compression=COMPRESSION,
            use_dictionary=["sha", "status", "language", "path", "old_path"],
            write_statistics=["sha", "path", "status", "language"],
        )
        self._repo = repo
        self._max_blob_bytes = max_blob_bytes
        self._max_rows, self._max_bytes = max_rows, max_bytes
        self._rows: list[tuple] = []
        self._bytes = 0
        self.rows = 0
        self.stats: Counter[str] = Counter()

    def add(self, commit: Commit) -> None:
        sha = commit.sha
        rows = self._rows
        for ch in commit.changes:
            patch = ch.patch
            rows.append(
                (
                    sha,
                    ch.path,
                    ch.old_path,
                    ch.status,
                    ch.old_mode,
                    ch.new_mode,
                    ch.old_blob,
                    ch.new_blob,
                    ch.similarity,
                    ch.is_binary,
                    False,
                    ch.is_submodule,
                    ch.is_symlink,
                    ch.symlink_target,
                    ch.additions,
                    ch.deletions,
                    patch,
                    ch.patch_bytes,
                    ch.patch_truncated,
                    language(ch.path),
                )
            )
            if patch:
                self._bytes += len(patch)
        self.rows += len(commit.changes)
        if len(rows) >= self._max_rows or self._bytes >= self._max_bytes:
            self.flush()

    def write_table(self, table: pa.Table) -> None:
        """Append rows kept from an earlier run."""
        self.flush()
        self._writer.write_table(table)
        self.rows += table.num_rows

    def flush(self) -> None:
        if not self._rows:
            return
        columns = zip(*self._rows, strict=True)  # rows to columns
        c = {name: list(col) for name, col in zip(_CHANGE_FIELDS, columns, strict=True)}
        self._rows, self._bytes = [], 0
        settle_blobs(self._repo, c, self._max_blob_bytes)
        patches = utf8_array(c.pop("patch"))
        table = pa.Table.from_pydict(c, schema=CHANGES_SCHEMA.remove(_PATCH_INDEX))
        table = table.add_column(_PATCH_INDEX, CHANGES_SCHEMA.field("patch"), patches)
        self._writer.write_table(table)
        st = self.stats
        st["rows"] += table.num_rows
        st["patch_bytes"] += pc.sum(table["patch_bytes"]).as_py() or 0
        for name in ("patch_truncated", "is_binary", "is_large", "is_submodule", "is_symlink"):
            st[name] += pc.sum(table[name]).as_py() or 0

    def close(self) -> None:
        self.flush()
        self._writer.close()


class CommitColumns:
    """Column lists for commits.parquet, filled commit by commit; patches are not kept."""

    def __init__(self, shallow: set[str]) -> None:
        self.cols: dict[str, list] = {f.name: [] for f in COMMITS_SCHEMA}
        self._shallow = shallow

    def add(self, cm: Commit) -> None:
        cols = self.cols
        full = cm.level == "full"
        cols["sha"].append(cm.sha)
        cols["parents"].append(list(cm.parents))
        cols["author_name"].append(cm.author_name)
        cols["author_email"].append(cm.author_email)
        cols["author_time"].append(cm.author_time * 1000)
        cols["author_tz_offset"].append(cm.author_tz)
        cols["committer_name"].append(cm.committer_name)
        cols["committer_email"].append(cm.committer_email)
        cols["commit_time"].append(cm.commit_time * 1000)
        cols["commit_tz_offset"].append(cm.commit_tz)
        cols["message"].append(cm.message)
        cols["is_merge"].append(cm.is_merge)
        cols["refs"].append([])
        cols["branches"].append([])
        cols["files_changed"].append(len(cm.changes) if cm.level != "meta" else None)
        cols["insertions"].append(sum(ch.additions or 0 for ch in cm.changes) if full else None)
        cols["deletions"].append(sum(ch.deletions or 0 for ch in cm.changes) if full else None)
        cols["read_level"].append(cm.level)
        cols["shallow_boundary"].append(cm.sha in self._shallow)

    def table(self) -> pa.Table:
        return pa.Table.from_pydict(self.cols, schema=COMMITS_SCHEMA)
