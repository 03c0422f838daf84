"""File versions for the chunk stage: read from the object store, parsed into units once,
cached by blob; a version next to a cached one (the other side of a diff) is re-parsed
incrementally from the cached tree, edited hunk by hunk."""

from __future__ import annotations

import itertools
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from repolm.chunk.units import Unit, parse_units
from repolm.config.schema import ChunkConfig
from repolm.mine.git import BlobReader, open_repo
from repolm.mine.model import looks_binary

CACHE_BLOBS = 4096
CACHE_TREES = 512  # trees are large; the units of many more versions are kept


@dataclass(slots=True)
class Version:
    """A parsed file version: its units, and what an incremental re-parse of a neighbouring
    version needs (its tree and line offsets)."""

    units: list[Unit] | None  # None: unreadable, binary or too large
    starts: list[int] | None = None  # byte offset of each line start, then the file's length


class VersionCache:
    """Per-process state: a blob reader, the units of recently parsed blobs, and the trees of
    the most recent ones (for incremental re-parsing: a commit's old version is parsed from
    its new version's tree, edited by the diff's hunks)."""

    def __init__(self, repo_path: str, cfg: ChunkConfig) -> None:
        self.cfg = cfg
        self.reader = BlobReader(open_repo(repo_path))
        self.cache: OrderedDict[str, Version] = OrderedDict()
        self.trees: OrderedDict[str, Any] = OrderedDict()

    def pair(
        self,
        old: tuple[str | None, str],
        new: tuple[str | None, str],
        language: str | None,
        hunks: list[tuple[int, int, int, int]] | None,
        counts: Counter[str],
    ) -> tuple[list[Unit] | None, list[Unit] | None]:
        """Units of a change's old and new versions; the one not cached yet is re-parsed from
        the other's tree when the hunks are known."""
        (old_blob, old_path), (new_blob, new_path) = old, new
        if self._key(old_blob, old_path, language) in self.cache or new_blob is None:
            o = self.version(old_blob, old_path, language, counts)
            n = self.version(
                new_blob, new_path, language, counts, (old_blob, old_path), hunks, base_is_new=False
            )
        else:
            n = self.version(new_blob, new_path, language, counts)
            o = self.version(
                old_blob, old_path, language, counts, (new_blob, new_path), hunks, base_is_new=True
            )
        return o.units, n.units

    def version(
        self,
        blob: str | None,
        path: str,
        language: str | None,
        counts: Counter[str],
        base: tuple[str | None, str] | None = None,
        hunks: list[tuple[int, int, int, int]] | None = None,
        base_is_new: bool = False,
    ) -> Version:
        if blob is None:
            return Version([])
        key = self._key(blob, path, language)
        hit = self.cache.get(key)
        if hit is not None:
            self.cache.move_to_end(key)
            return hit
        data = self.reader.read(blob)
        if data is None:
            counts["skipped_missing"] += 1
            v = Version(None)
        elif len(data) > self.cfg.max_file_bytes:
            counts["skipped_large"] += 1
            v = Version(None)
        elif looks_binary(data):
            counts["skipped_binary"] += 1
            v = Version(None)
        else:
            starts = line_starts(data)
            tree = self._edited_base(base, language, hunks, base_is_new, starts)
            counts["parses_incremental" if tree is not None else "parses_full"] += 1
            units, new_tree = parse_units(
                data, language, path, window_lines=self.cfg.window_lines, base=tree
            )
            v = Version(units, starts)
            if new_tree is not None:
                self.trees[key] = new_tree
                if len(self.trees) > CACHE_TREES:
                    self.trees.popitem(last=False)
        self.cache[key] = v
        if len(self.cache) > CACHE_BLOBS:
            self.cache.popitem(last=False)
        return v

    def _edited_base(
        self,
        base: tuple[str | None, str] | None,
        language: str | None,
        hunks: list[tuple[int, int, int, int]] | None,
        base_is_new: bool,
        starts: list[int],
    ) -> Any | None:
        """A copy of the base version's tree, edited hunk by hunk (last first) into the target
        version's coordinates; None when it is not at hand."""
        if base is None or hunks is None or base[0] is None:
            return None
        key = self._key(base[0], base[1], language)
        tree, version = self.trees.get(key), self.cache.get(key)
        if tree is None or version is None or version.starts is None:
            return None
        bs, ts = version.starts, starts
        tree = tree.copy()
        for oi, ol, ni, nl in reversed(hunks):
            bi, bl, ti, tl = (ni, nl, oi, ol) if base_is_new else (oi, ol, ni, nl)
            if bi + bl >= len(bs) or ti + tl >= len(ts):
                return None  # the hunks do not fit these versions: parse from scratch
            start = bs[bi]
            tree.edit(
                start_byte=start,
                old_end_byte=bs[bi + bl],
                new_end_byte=start + ts[ti + tl] - ts[ti],
                start_point=(bi, 0),
                old_end_point=(bi + bl, 0),
                new_end_point=(bi + tl, 0),
            )
        return tree

    @staticmethod
    def _key(blob: str | None, path: str, language: str | None) -> str:
        return f"{blob}:{language}:{path.endswith('.tsx')}"


def line_starts(data: bytes) -> list[int]:
    """Byte offset of each line start, then len(data): one entry per line, plus one."""
    starts = list(itertools.accumulate((len(line) + 1 for line in data.split(b"\n")), initial=0))
    starts[-1] = len(data)  # the last piece has no newline after it
    if len(starts) > 1 and starts[-2] == len(data):
        starts.pop()  # data ends with a newline: no empty last line
    return starts


def hunks_of(patch: str | None) -> list[tuple[int, int, int, int]] | None:
    """(old first line index, old count, new first line index, new count) of each hunk, lines
    0-based; None when there is no patch to trust."""
    if not patch:
        return None
    out = []
    for m in _HUNK_HEADER.finditer(patch):
        ol = int(m.group(2)) if m.group(2) is not None else 1
        nl = int(m.group(4)) if m.group(4) is not None else 1
        o, n = int(m.group(1)), int(m.group(3))
        out.append((o - 1 if ol else o, ol, n - 1 if nl else n, nl))
    return out or None


_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", re.MULTILINE)
