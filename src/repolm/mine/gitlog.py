"""Stream commits and their diffs out of `git log`: fast, in a fixed order, past missing objects.

One `git log --no-walk=unsorted --stdin -z --raw -p` process per slice of commits writes a byte
stream; each commit's record starts with a marker followed by its sha. We know which sha comes
next, so records are cut at `MARKER + next sha` — robust even if file content holds the marker.
Slices after the first are spooled to temp files by their own git processes while the first is
parsed, so git uses every core and the output order stays deterministic.

When git dies on a commit (a partial clone's missing blobs, a damaged object store), the commits
before it are kept, the failing commit is read again at a lower level (files without patches,
then metadata only) and the stream restarts after it. The counts go into a `LogReport`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from repolm.gitrepo import Repo
from repolm.mine.model import (
    LEVEL_FILES,
    LEVEL_FULL,
    LEVEL_META,
    Commit,
)
from repolm.mine.records import FORMAT, MARKER, LogOptions, LogReport, parse_record

READ_SIZE = 1 << 20
MIN_SLICE = 100  # commits; smaller slices cost more in process start-up than they balance
SLICES_PER_JOB = 2
LEVELS = (LEVEL_FULL, LEVEL_FILES, LEVEL_META)
# After this many failing commits in one slice, the rest of it is read at the next level in bulk
# (a blob-less partial clone fails on nearly every commit; restarting per commit would crawl).
MAX_FAILURES_PER_SLICE = 8
_OBJECT_ERROR = re.compile(
    r"(?:unable to read|missing|bad object|could not read|could not fetch|corrupt|invalid object)"
    r"\D*?"
    r"\b([0-9a-f]{40}(?:[0-9a-f]{24})?)\b"
)


def log_command(repo: Repo, opts: LogOptions, level: str) -> list[str]:
    args = [
        "log",
        "--no-walk=unsorted",
        "--stdin",
        "-z",
        f"--format={FORMAT}",
        "--date=raw",
        "--no-color",
        "--no-notes",
        "--encoding=UTF-8",
    ]
    if level != LEVEL_META:
        merges = "first-parent" if opts.merge_diff == "first-parent" else "off"
        args += ["--raw", "--no-abbrev", "--root", f"--diff-merges={merges}"]
    if level == LEVEL_FULL:
        args += [
            "-p",
            "--no-ext-diff",
            "--no-textconv",
            "--submodule=short",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            "-O/dev/null",
        ]
        args += ["-M"] if opts.detect_renames else ["--no-renames"]
        if opts.detect_copies:
            args.append("-C")
    elif level == LEVEL_FILES:
        args.append("--no-renames")  # inexact rename detection would read the missing blobs
    # Git treats blobs over core.bigFileThreshold as binary without reading them whole.
    return repo.cmd(*args, config=(f"core.bigFileThreshold={opts.max_blob_bytes}",))


class _GitLog:
    """One running `git log` over a list of shas; stdout piped, or spooled to a file."""

    def __init__(
        self,
        repo: Repo,
        shas: Sequence[str],
        opts: LogOptions,
        level: str,
        spool_dir: Path | None = None,
    ) -> None:
        self._stdin = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        self._stdin.write("\n".join(shas).encode() + b"\n")
        self._stdin.seek(0)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        self._spool: IO[bytes] | None = None
        self._spool_path: str | None = None
        if spool_dir is not None:
            fd, self._spool_path = tempfile.mkstemp(dir=spool_dir, suffix=".log")
            self._spool = os.fdopen(fd, "wb")
        self._finished: tuple[int, str] | None = None
        self.proc = subprocess.Popen(
            log_command(repo, opts, level),
            stdin=self._stdin,
            stdout=self._spool if self._spool is not None else subprocess.PIPE,
            stderr=self._stderr,
            env=repo.env,
        )

    def chunks(self) -> Iterator[bytes]:
        if self._spool is None:
            assert self.proc.stdout is not None
            fd = self.proc.stdout.fileno()
            while data := os.read(fd, READ_SIZE):
                yield data
            return
        # Tail the spool file while git is still writing it (own file description, own offset).
        assert self._spool_path is not None
        with open(self._spool_path, "rb") as f:
            while True:
                data = f.read(READ_SIZE)
                if data:
                    yield data
                elif self.proc.poll() is not None:
                    if not (data := f.read(READ_SIZE)):
                        return
                    yield data
                else:
                    time.sleep(0.002)

    def finish(self) -> tuple[int, str]:
        if self._finished is not None:
            return self._finished
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        rc = self.proc.wait()
        self._stderr.seek(0)
        err = self._stderr.read().decode("utf-8", "replace")
        for f in (self._stdin, self._stderr, self._spool):
            if f is not None:
                f.close()
        if self._spool_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._spool_path)
        self._finished = (rc, err)
        return self._finished

    def kill(self) -> None:
        if self._finished is None and self.proc.poll() is None:
            self.proc.kill()
        self.finish()


def iter_commits(
    repo: Repo,
    shas: Sequence[str],
    opts: LogOptions,
    jobs: int = 1,
    report: LogReport | None = None,
    tmp_dir: Path | None = None,
) -> Iterator[Commit]:
    """Yield a Commit for every sha, in the given order, each exactly once."""
    report = report if report is not None else LogReport()
    if not shas:
        return
    jobs = max(1, jobs)
    if jobs == 1 or len(shas) < 2 * MIN_SLICE:
        yield from _read_slice(repo, shas, opts, LEVEL_FULL, report)
        return
    # Several slices per job keep every core busy to the end; `jobs` git processes run ahead
    # of the parser, each spooling to a temp file that the parser reads as it grows.
    pending = deque(_split(list(shas), jobs * SLICES_PER_JOB))
    running: deque[tuple[list[str], _GitLog]] = deque()
    spool_dir = Path(tempfile.mkdtemp(prefix="repolm-log-", dir=tmp_dir))
    try:
        while pending or running:
            while pending and len(running) < jobs:
                part = pending.popleft()
                running.append((part, _GitLog(repo, part, opts, LEVEL_FULL, spool_dir)))
            part, log = running.popleft()
            yield from _read_slice(repo, part, opts, LEVEL_FULL, report, log)
    finally:
        for _, log in running:
            log.kill()
        shutil.rmtree(spool_dir, ignore_errors=True)


def _split(shas: list[str], parts: int) -> list[list[str]]:
    parts = max(1, min(parts, len(shas) // MIN_SLICE))
    size = -(-len(shas) // parts)
    return [shas[i : i + size] for i in range(0, len(shas), size)]


def _read_slice(
    repo: Repo,
    shas: Sequence[str],
    opts: LogOptions,
    level: str,
    report: LogReport,
    log: _GitLog | None = None,
) -> Iterator[Commit]:
    """Read `shas` at `level`; on a git failure keep what was read and step around the culprit."""
    failures = 0
    remaining = list(shas)
    while remaining:
        log = log or _GitLog(repo, remaining, opts, level)
        done = 0
        try:
            for rec in _records(log, remaining):
                commit = parse_record(rec, level, opts, report)
                done += 1
                if level != LEVEL_FULL:
                    report.degraded[level] += 1
                yield commit
        except BaseException:
            log.kill()
            raise
        rc, err = log.finish()
        log = None
        if rc == 0 and done == len(remaining):
            _note_warnings(err, report)
            return
        report.missing_objects.update(_OBJECT_ERROR.findall(err))
        culprit = remaining[done]
        yield from _read_one_lower(repo, culprit, opts, level, report)
        remaining = remaining[done + 1 :]
        failures += 1
        if failures >= MAX_FAILURES_PER_SLICE and remaining and level != LEVEL_META:
            lower = LEVELS[LEVELS.index(level) + 1]
            yield from _read_slice(repo, remaining, opts, lower, report)
            return


def _read_one_lower(
    repo: Repo, sha: str, opts: LogOptions, level: str, report: LogReport
) -> Iterator[Commit]:
    """Read one commit that broke a stream: alone at the same level first (the break may have
    been its successor's), then at each lower level; skip it only if even metadata fails."""
    for lvl in LEVELS[LEVELS.index(level) :]:
        log = _GitLog(repo, [sha], opts, lvl)
        recs = list(_records(log, [sha]))
        rc, err = log.finish()
        report.missing_objects.update(_OBJECT_ERROR.findall(err))
        if rc == 0 and recs:
            if lvl != LEVEL_FULL:
                report.degraded[lvl] += 1
            yield parse_record(recs[0], lvl, opts, report)
            return
    report.unreadable_commits.append(sha)


def _note_warnings(err: str, report: LogReport) -> None:
    for line in err.splitlines():
        line = line.strip()
        if line and line not in report.git_warnings and len(report.git_warnings) < 20:
            report.git_warnings.append(line)


def _records(log: _GitLog, shas: Sequence[str]) -> Iterator[bytes]:
    """Yield the raw record of each sha that is known complete. The last record is complete
    only if git exited cleanly; the caller learns of a failure from `finish()`."""
    markers = [MARKER + s.encode() for s in shas]
    buf = bytearray()
    start = 0  # where the current record begins in buf
    scan = 0  # where to look for the next marker
    idx = 0
    for chunk in log.chunks():
        buf += chunk
        if idx == 0 and start == 0 and scan == 0:
            if len(buf) < len(markers[0]):
                continue
            if not buf.startswith(markers[0]):
                raise RuntimeError(f"unexpected git log output before commit {shas[0]}")
            scan = len(markers[0])
        while idx < len(shas) - 1:
            nxt = markers[idx + 1]
            pos = buf.find(nxt, scan)
            if pos < 0:
                scan = max(scan, len(buf) - len(nxt) + 1)
                break
            if not _ends_cleanly(buf, start, pos):
                scan = pos + 1  # the marker and sha sit inside file content or a path: go on
                continue
            yield bytes(buf[start:pos])
            idx += 1
            start = pos
            scan = pos + len(nxt)
        if start > READ_SIZE and start > len(buf) // 2:
            del buf[:start]
            scan -= start
            start = 0
    rc = log.proc.wait()
    if rc == 0 and idx == len(shas) - 1 and len(buf) > start:
        yield bytes(buf[start:])


def _ends_cleanly(buf: bytearray, start: int, end: int) -> bool:
    """Is buf[start:end] one whole record? Its raw entries must all be complete, and a patch
    must end in a newline right before the next marker's NUL: inside a patch every newline is
    followed by a line prefix, never a NUL, so a marker planted in file content (or in a path)
    cannot pass for the start of the next record."""
    # sha, parents, 6 identity/date fields, message: none can hold a NUL
    pos = _skip_fields(buf, start + len(MARKER), end, 9)
    while 0 <= pos < end and buf[pos] in (0, 10):
        pos += 1
    while 0 <= pos < end and buf[pos] == 58:  # ':' starts a raw entry: meta, path [, path]
        meta_end = buf.find(b"\0", pos, end)
        if meta_end < 0:
            return False
        status = buf.rfind(b" ", pos, meta_end) + 1
        paths = 2 if buf[status] in (82, 67) else 1  # 'R' or 'C': old and new path
        pos = _skip_fields(buf, meta_end + 1, end, paths)
    if pos < 0:
        return False
    while pos < end and buf[pos] in (0, 10):
        pos += 1
    if pos >= end:
        return True
    return buf.startswith(b"diff --git ", pos) and buf[end - 1] == 10


def _skip_fields(buf: bytearray, pos: int, end: int, n: int) -> int:
    """The position after `n` NUL-terminated fields from `pos`; -1 if they run past `end`."""
    for _ in range(n):
        pos = buf.find(b"\0", pos, end)
        if pos < 0:
            return -1
        pos += 1
    return pos
