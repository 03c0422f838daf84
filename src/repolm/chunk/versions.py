"""File versions for the chunk stage: read from the object store, parsed into units once,
cached by blob; a version next to a cached one (the other side of a diff) is re-parsed
incrementally from the cached tree, edited hunk by hunk, and reuses the cached version's units
wherever tree-sitter reused its subtrees."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from repolm.chunk.labels import UnitIndex
from repolm.chunk.model import Unit, line_starts
from repolm.chunk.units import Memo, parse_units
from repolm.config.schema import ChunkConfig
from repolm.gitrepo import BlobReader, open_repo
from repolm.mine.model import looks_binary

CACHE_BLOBS = 4096
# Trees are large; a tree whose older neighbour is parsed goes first (see `pair`), so these
# hold about one version per recently changed file: its next, older change parses from it.
CACHE_TREES = 512
PREFETCH_BYTES = 64 << 20  # blobs read ahead for one batch, at most (then one by one)
_UNREAD = b"\0unread"


@dataclass(slots=True)
class Version:
    """A parsed file version: its units, its bytes and line offsets (units are cut from them)."""

    units: list[Unit] | None  # None: unreadable, binary or too large
    data: bytes = b""
    starts: np.ndarray | None = None  # byte offset of each line start, then the file's length
    _index: UnitIndex | None = None

    @property
    def index(self) -> UnitIndex:
        """The units indexed for labelling (built on first use)."""
        if self._index is None:
            self._index = UnitIndex(self.units or [])
        return self._index


@dataclass(slots=True)
class _Tree:
    """A parsed version's syntax tree, what its declaration nodes emitted, its bytes and line
    offsets: enough to parse a neighbouring version from it, or to cut it again."""

    tree: Any
    memo: Memo | None
    data: bytes
    starts: np.ndarray


class VersionCache:
    """Per-process state: a blob reader, the units of recently parsed blobs, and the trees of
    the most recent ones (for incremental re-parsing: a commit's old version is parsed from
    its new version's tree, edited by the diff's hunks)."""

    def __init__(self, repo_path: str, cfg: ChunkConfig) -> None:
        self.cfg = cfg
        self.reader = BlobReader(open_repo(repo_path))
        self.cache: OrderedDict[str, Version] = OrderedDict()
        self.trees: OrderedDict[str, _Tree] = OrderedDict()
        self.prefetched: dict[str, bytes | None] = {}

    def prefetch(self, versions: Iterable[tuple[str | None, str, str | None]]) -> None:
        """Read ahead, in one round trip per group, the blobs of these (blob, path, language)
        versions that are not cached: a batch's reads then cost no process switch each."""
        wanted = dict.fromkeys(
            blob
            for blob, path, language in versions
            if blob is not None and self._key(blob, path, language) not in self.cache
        )
        self.prefetched = self.reader.read_many(list(wanted), PREFETCH_BYTES)

    def pair(
        self,
        old: tuple[str | None, str],
        new: tuple[str | None, str],
        language: str | None,
        hunks: list[tuple[int, int, int, int]] | None,
        counts: Counter[str],
    ) -> tuple[Version, Version]:
        """A change's old and new versions; the one not cached yet is re-parsed from the
        other's tree when the hunks are known."""
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
        if new_blob is not None and old_blob is not None:
            # History runs newest first: the new side's tree is done with once the older
            # neighbour is parsed, so it goes first when room is needed (kept while there is
            # room, for a branch that starts from it). The units cache keeps plain LRU order:
            # which path a blob's units were cut under depends on it.
            key = self._key(new_blob, new_path, language)
            if key in self.trees:
                self.trees.move_to_end(key, last=False)
        return o, n

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
        kept = self.trees.get(key)
        if kept is not None:  # its units were dropped, not its tree: cut it again, no parse
            parsed = parse_units(
                kept.data,
                language,
                path,
                window_lines=self.cfg.window_lines,
                starts=kept.starts,
                tree=kept.tree,
                reuse=kept.memo,
            )
            return self._keep(key, Version(parsed.units, kept.data, kept.starts))
        data = self.prefetched.pop(blob, _UNREAD)
        if data is _UNREAD:
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
            edited = self._edited_base(base, language, hunks, base_is_new, data, starts)
            tree, reuse = edited if edited is not None else (None, None)
            counts["parses_incremental" if tree is not None else "parses_full"] += 1
            parsed = parse_units(
                data,
                language,
                path,
                window_lines=self.cfg.window_lines,
                starts=starts,
                base=tree,
                reuse=reuse,
            )
            v = Version(parsed.units, data, starts)
            if parsed.tree is not None:
                self.trees[key] = _Tree(parsed.tree, parsed.memo, data, starts)
                if len(self.trees) > CACHE_TREES:
                    self.trees.popitem(last=False)
        return self._keep(key, v)

    def _keep(self, key: str, v: Version) -> Version:
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
        data: bytes,
        starts: np.ndarray,
    ) -> tuple[Any, Memo | None] | None:
        """The base version's tree edited into this version's coordinates, and the base's
        memo when it may be reused; None when the tree is not at hand."""
        if base is None or hunks is None or base[0] is None:
            return None
        cached = self.trees.get(self._key(base[0], base[1], language))
        if cached is None:
            return None
        if base_is_new:
            hunks = [(ni, nl, oi, ol) for oi, ol, ni, nl in hunks]  # (base ..., target ...)
        return edit_tree(cached.tree, cached.memo, cached.data, cached.starts, data, starts, hunks)

    @staticmethod
    def _key(blob: str | None, path: str, language: str | None) -> str:
        return f"{blob}:{language}:{path.endswith('.tsx')}"


def edit_tree(
    tree: Any,
    memo: Memo | None,
    base: bytes,
    bs: np.ndarray,
    target: bytes,
    ts: np.ndarray,
    hunks: list[tuple[int, int, int, int]],
) -> tuple[Any, Memo | None] | None:
    """A copy of `tree` (of `base`, line offsets `bs`) edited hunk by hunk, last first, into the
    coordinates of `target` (offsets `ts`), for `parse_units(target, base=...)`. Hunks are
    (base line index, count, target line index, count). With it `memo`, when the lines outside
    the hunks are the same bytes in both versions (else None: then the tree's reused subtrees
    would not be sure to hold the same text). None when the hunks do not fit the versions."""
    tree = tree.copy()
    for bi, bl, ti, tl in reversed(hunks):
        if bi + bl >= len(bs) or ti + tl >= len(ts):
            return None  # the hunks do not fit these versions: parse from scratch
        start = int(bs[bi])
        tree.edit(
            start_byte=start,
            old_end_byte=int(bs[bi + bl]),
            new_end_byte=start + int(ts[ti + tl] - ts[ti]),
            start_point=(bi, 0),
            old_end_point=(bi + bl, 0),
            new_end_point=(bi + tl, 0),
        )
    return tree, memo if _same_outside(base, bs, target, ts, hunks) else None


def _same_outside(
    base: bytes,
    bs: np.ndarray,
    target: bytes,
    ts: np.ndarray,
    hunks: list[tuple[int, int, int, int]],
) -> bool:
    """Whether the lines between the hunks (base line index, count, target index, count) are
    the same bytes in both versions: then every subtree tree-sitter keeps from the base tree
    spans the same text in the target, and so do the units walked from it."""
    b = t = 0
    for bi, bl, ti, tl in [*hunks, (len(bs) - 1, 0, len(ts) - 1, 0)]:
        if bi - b != ti - t or bi < b or base[bs[b] : bs[bi]] != target[ts[t] : ts[ti]]:
            return False
        b, t = bi + bl, ti + tl
    return b == len(bs) - 1 and t == len(ts) - 1
