"""What the chunk stage cuts a file version into: the `Unit` value object, and the line
arithmetic that every kind of unit (declarations, sections, windows) is made with.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Unit(NamedTuple):
    """One unit of a file. Lines are 1-based and inclusive; a unit's range includes the doc
    comments, attributes, decorators and annotations directly above it; `text` is exactly those
    source lines with their newlines, decoded on demand from the file's bytes (`source`,
    `start_byte`, `end_byte`); `parent` is the qualified name of the enclosing unit."""

    kind: str  # function | method | type | module | test | section | window | lines
    name: str
    qualified_name: str
    start_line: int
    end_line: int
    parent: str | None
    source: bytes
    start_byte: int
    end_byte: int

    @property
    def raw(self) -> bytes:
        return self.source[self.start_byte : self.end_byte]

    @property
    def text(self) -> str:
        return self.source[self.start_byte : self.end_byte].decode("utf-8", "replace")

    def __repr__(self) -> str:
        return (
            f"Unit({self.kind!r}, {self.qualified_name!r}, {self.start_line}-{self.end_line}, "
            f"parent={self.parent!r})"
        )


def line_starts(data: bytes) -> np.ndarray:
    """Byte offset of each line start, then len(data): one entry per line, plus one (an array:
    most versions need only a few of the offsets)."""
    newlines = (np.frombuffer(data, np.uint8) == 10).nonzero()[0]
    starts = np.empty(len(newlines) + 2, np.int64)
    starts[0] = 0
    starts[1:-1] = newlines + 1
    starts[-1] = len(data)  # the last line has no newline after it...
    return starts[:-1] if starts[-2] == len(data) else starts  # ...unless it has


def split_lines(source: bytes) -> list[str]:
    """Lines without their newlines, split on b"\\n" only, as tree-sitter counts rows (decoding
    with replacement keeps every newline byte, so rows and lines agree)."""
    parts = source.decode("utf-8", "replace").split("\n")
    return parts if parts[-1] else parts[:-1]


def make_unit(
    source: bytes,
    starts: np.ndarray,
    kind: str,
    name: str,
    qualified: str,
    start: int,
    end: int,
    parent: str | None,
) -> Unit:
    """A unit of lines `start`..`end`; its text is those whole lines (none past the last)."""
    last = len(starts) - 1
    a = int(starts[start - 1 if start <= last else last])
    b = int(starts[end if end <= last else last])
    return Unit(kind, name, qualified, start, end, parent, source, a, b)
