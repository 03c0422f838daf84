"""One `git log` record: the format asked for, the options that shape it, what reading may
count without raising, and the parser of a record into a `Commit` with its file changes.

A record is `MARKER`, the sha, the metadata fields (NUL-separated), then for levels below
metadata-only the raw entries (`--raw -z`) and, at the full level, the patch text, cut into one
section per file in raw-entry order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from repolm.mine.model import (
    LEVEL_FILES,
    LEVEL_FULL,
    LEVEL_META,
    STATUS,
    Commit,
    FileChange,
)

MARKER = b"\x00\x01\x02C"
FORMAT = "%x00%x01%x02C%H%x00%P%x00%an%x00%ae%x00%ad%x00%cn%x00%ce%x00%cd%x00%B%x00"
MIN_TIME, MAX_TIME = -62135596800, 253402300799  # 0001-01-01 .. 9999-12-31T23:59:59 UTC


@dataclass(frozen=True)
class LogOptions:
    merge_diff: str = "first-parent"
    detect_renames: bool = True
    detect_copies: bool = False
    max_patch_bytes: int = 1_000_000
    max_blob_bytes: int = 2_000_000


@dataclass
class LogReport:
    """What could not be read, counted, never raised: the miner keeps going."""

    missing_objects: set[str] = field(default_factory=set)
    degraded: dict[str, int] = field(default_factory=lambda: {LEVEL_FILES: 0, LEVEL_META: 0})
    unreadable_commits: list[str] = field(default_factory=list)
    patch_mismatches: int = 0
    git_warnings: list[str] = field(default_factory=list)


def parse_record(rec: bytes, level: str, opts: LogOptions, report: LogReport) -> Commit:
    fields = rec[len(MARKER) :].split(b"\0", 9)
    sha, parents, an, ae, ad, cn, ce, cd, msg = fields[:9]
    rest = fields[9] if len(fields) > 9 else b""
    a_time, a_tz = _parse_date(ad)
    c_time, c_tz = _parse_date(cd)
    commit = Commit(
        sha=sha.decode(),
        parents=tuple(parents.decode().split()),
        author_name=an.decode("utf-8", "replace"),
        author_email=ae.decode("utf-8", "replace"),
        author_time=a_time,
        author_tz=a_tz,
        committer_name=cn.decode("utf-8", "replace"),
        committer_email=ce.decode("utf-8", "replace"),
        commit_time=c_time,
        commit_tz=c_tz,
        message=msg.decode("utf-8", "replace").rstrip("\n"),
        level=level,
    )
    if level != LEVEL_META and rest:
        commit.changes = _parse_changes(rest, level == LEVEL_FULL, opts, report)
    return commit


_TZ_CACHE: dict[bytes, int] = {}


def _parse_date(raw: bytes) -> tuple[int, int]:
    """'1700000000 +0130' -> (1700000000, 90). Garbage dates read as the epoch and dates past
    the years 1..9999 are clamped to them: a hostile date never stops mining."""
    ts, _, tz = raw.partition(b" ")
    offset = _TZ_CACHE.get(tz)
    try:
        if offset is None:
            sign = -1 if tz.startswith(b"-") else 1
            digits = tz.lstrip(b"+-")
            offset = sign * (int(digits[:-2] or 0) * 60 + int(digits[-2:] or 0))
            offset = _TZ_CACHE[tz] = max(-32768, min(32767, offset))
        return min(max(int(ts), MIN_TIME), MAX_TIME), offset
    except ValueError:
        return 0, 0


def _parse_changes(
    rest: bytes, with_patch: bool, opts: LogOptions, report: LogReport
) -> list[FileChange]:
    n = len(rest)
    pos = 0
    while pos < n and rest[pos] in (0, 10):
        pos += 1
    changes: list[FileChange] = []
    find = rest.index
    while pos < n and rest[pos] == 58:  # ':' starts a raw entry
        end = find(b"\0", pos)
        old_mode, new_mode, old_blob, new_blob, status = rest[pos + 1 : end].split(b" ")
        pos = end + 1
        end = find(b"\0", pos)
        path = rest[pos:end]
        pos = end + 1
        old_path = None
        letter = status[:1]
        if letter in b"RC":
            end = find(b"\0", pos)
            old_path, path = path, rest[pos:end]
            pos = end + 1
        elif letter != b"A":
            old_path = path
        om, nm = _mode(old_mode), _mode(new_mode)
        text = path.decode("utf-8", "replace")
        changes.append(
            FileChange(
                path=text,
                old_path=(text if old_path is path else old_path.decode("utf-8", "replace"))
                if old_path is not None
                else None,
                status=_STATUS.get(letter, "unknown"),
                old_mode=om,
                new_mode=nm,
                old_blob=old_blob.decode() if om else None,
                new_blob=new_blob.decode() if nm else None,
                similarity=int(status[1:]) if len(status) > 1 else None,
            )
        )
    if with_patch and changes:
        _attach_patches(changes, rest[pos:], opts, report)
    return changes


_STATUS = {k.encode(): v for k, v in STATUS.items()}
_MODES: dict[bytes, int] = {}


def _mode(raw: bytes) -> int:
    mode = _MODES.get(raw)
    if mode is None:
        mode = _MODES[raw] = int(raw, 8)
    return mode


def _attach_patches(
    changes: list[FileChange], text: bytes, opts: LogOptions, report: LogReport
) -> None:
    """Cut the patch text into one section per file, in raw-entry order, counting lines on
    ranges of `text` so each patch is copied once."""
    text = text.lstrip(b"\0\n").rstrip(b"\0")
    if not text.startswith(b"diff --git "):
        report.patch_mismatches += 1
        return
    starts = [0]
    pos = text.find(b"\ndiff --git ")
    while pos >= 0:
        starts.append(pos + 1)
        pos = text.find(b"\ndiff --git ", pos + 1)
    starts.append(len(text))
    # A change between file, symlink and submodule is printed as a deletion plus a creation.
    wanted = len(changes) + sum(c.status == "type_changed" for c in changes)
    if len(starts) - 1 != wanted:
        report.patch_mismatches += 1
        return
    k = 0
    cap = opts.max_patch_bytes
    for change in changes:
        first = starts[k]
        adds = dels = 0
        binary = False
        for _ in range(2 if change.status == "type_changed" else 1):
            a, b = starts[k], starts[k + 1]
            k += 1
            h = text.find(b"\n@@ ", a, b)
            if h < 0:
                binary = binary or text.find(b"\nBinary files ", a, b) >= 0
            else:
                adds += text.count(b"\n+", h, b)
                dels += text.count(b"\n-", h, b)
        end = starts[k]
        change.additions, change.deletions, change.is_binary = adds, dels, binary
        change.patch_bytes = end - first
        if end - first > cap:
            end = text.rfind(b"\n", first, first + cap) + 1 or first  # whole lines only
            change.patch_truncated = True
        patch = text[first:end]
        if not patch.isascii():  # rare; keep the bytes valid UTF-8 for Parquet strings
            patch = patch.decode("utf-8", "replace").encode("utf-8")
        change.patch = patch
