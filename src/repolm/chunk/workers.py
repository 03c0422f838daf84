"""The chunk stage's worker processes: each keeps a cache of parsed file versions
(`VersionCache`) and turns batches of snapshot files or file changes into rows; `Pool` sends
each shard's batches to one process, so its versions meet their neighbours in one cache.
"""

from __future__ import annotations

import functools
import gc
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import pyarrow as pa

from repolm.chunk.grammars import LANGUAGES
from repolm.chunk.labels import (
    file_category,
    label_code_changes,
    read_patch,
    touched,
    uncovered,
)
from repolm.chunk.model import Unit
from repolm.chunk.rows import Rows
from repolm.chunk.versions import Version, VersionCache
from repolm.config.schema import ChunkConfig
from repolm.mine.model import MODE_SYMLINK

_worker: VersionCache | None = None


# The caches hold millions of small objects (units, parse memos) and nearly none are in
# cycles: the default collector thresholds rescan them thousands of times (about a tenth of the
# stage's time), so a worker collects rarely.
GC_THRESHOLD = (100_000, 50, 100)


def _init(repo_path: str, cfg: ChunkConfig) -> None:
    global _worker
    _worker = VersionCache(repo_path, cfg)
    gc.set_threshold(*GC_THRESHOLD)


def snapshot_batch(
    job: tuple[tuple[str, int, str], list[tuple[str, str, str | None]]],
) -> tuple[pa.Table, Counter[str]]:
    assert _worker is not None
    (sha, when, part), files = job
    counts: Counter[str] = Counter()
    rows = Rows()
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


def history_batch(batch: list[tuple[tuple[str, int, str], dict]]) -> tuple[pa.Table, Counter[str]]:
    assert _worker is not None
    counts: Counter[str] = Counter()
    rows = Rows()
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


class Pool:
    """Batches to worker processes, one process per shard so that a shard's batches always
    meet the same cache; a bounded number in flight; results in submission order. In-process
    when one job is asked for (simpler to debug, no start-up cost on small repositories)."""

    def __init__(self, repo_path: str, cfg: ChunkConfig, jobs: int) -> None:
        self.jobs = jobs
        self._args = (repo_path, cfg)
        self._workers: list[ProcessPoolExecutor] = []
        self._gc = gc.get_threshold()

    def __enter__(self) -> Pool:
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
