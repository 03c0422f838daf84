"""Value objects for history: one Commit, its FileChanges. Small, immutable, cheap to make."""

from __future__ import annotations

from dataclasses import dataclass, field

STATUS = {
    "A": "added",
    "M": "modified",
    "D": "deleted",
    "R": "renamed",
    "C": "copied",
    "T": "type_changed",
    "U": "unmerged",
    "X": "unknown",
}

BINARY_PROBE = 8000  # git's own heuristic: a NUL byte in the first 8000 bytes means binary


def looks_binary(data: bytes) -> bool:
    return b"\0" in data[:BINARY_PROBE]


MODE_SUBMODULE = 0o160000
MODE_SYMLINK = 0o120000

# How much of a commit could be read. Lower levels are used only when objects are missing.
LEVEL_FULL = "full"  # metadata, file list and patches
LEVEL_FILES = "files"  # metadata and file list; blobs could not be read
LEVEL_META = "meta"  # metadata only; trees could not be read


@dataclass(slots=True)
class FileChange:
    path: str
    old_path: str | None
    status: str
    old_mode: int
    new_mode: int
    old_blob: str | None
    new_blob: str | None
    similarity: int | None = None
    is_binary: bool = False
    additions: int | None = None
    deletions: int | None = None
    patch: bytes | None = None  # unified diff as git prints it, valid UTF-8
    patch_bytes: int | None = None
    patch_truncated: bool = False
    symlink_target: str | None = None

    @property
    def is_submodule(self) -> bool:
        # The side that exists after the change (the old side for a deletion).
        return (self.new_mode or self.old_mode) == MODE_SUBMODULE

    @property
    def is_symlink(self) -> bool:
        return (self.new_mode or self.old_mode) == MODE_SYMLINK


@dataclass(slots=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    author_time: int  # unix seconds
    author_tz: int  # offset from UTC in minutes
    committer_name: str
    committer_email: str
    commit_time: int
    commit_tz: int
    message: str
    changes: list[FileChange] = field(default_factory=list)
    level: str = LEVEL_FULL

    @property
    def is_merge(self) -> bool:
        return len(self.parents) > 1
