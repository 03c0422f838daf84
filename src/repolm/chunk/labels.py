"""Label what a commit changed, unit by unit: new, modified or deleted functions, tests, types;
and docs, config, build or other changes for the files and lines no code unit holds."""

from __future__ import annotations

import bisect
import posixpath
import re
from collections.abc import Iterable
from typing import NamedTuple

from repolm.chunk.model import Unit

_GROUP = {"function": "function", "method": "function", "test": "test", "type": "type"}
_DOC_LANGUAGES = {"Markdown", "reStructuredText", "AsciiDoc", "Text", "TeX"}
_CONFIG_LANGUAGES = {"YAML", "TOML", "JSON", "INI", "XML", "HCL", "Nix"}
_BUILD_NAMES = {
    "makefile",
    "gnumakefile",
    "cmakelists.txt",
    "dockerfile",
    "containerfile",
    "cargo.toml",
    "build.rs",
    "package.json",
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "go.mod",
    "build.gradle",
    "build.gradle.kts",
    "settings.gradle",
    "pom.xml",
    "build",
    "build.bazel",
    "workspace",
    "justfile",
    "meson.build",
    "tox.ini",
    "noxfile.py",
    "requirements.txt",
}
_BUILD_PATH = re.compile(r"(^|/)(\.github/workflows|\.circleci|\.gitlab-ci|ci|\.ci)/|\.bzl$|\.mk$")
_DOC_PATH = re.compile(
    r"(^|/)(docs?|documentation)/|(^|/)(README|CHANGELOG|CHANGES|CONTRIBUTING|"
    r"LICENSE|COPYING|NOTICE|AUTHORS)[^/]*$",
    re.IGNORECASE,
)


def file_category(path: str, language: str | None) -> str:
    """code / docs / config / build / other, from the path and language."""
    name = posixpath.basename(path).lower()
    if name in _BUILD_NAMES or name.startswith("dockerfile") or _BUILD_PATH.search(path):
        return "build"
    if language in _DOC_LANGUAGES or _DOC_PATH.search(path):
        return "docs"
    if language in _CONFIG_LANGUAGES or name.startswith(".env") or name.endswith(".lock"):
        return "config"
    if language is not None and language not in {"Text", "CSV", "Ignore List"}:
        return "code"
    return "other"


class Patch(NamedTuple):
    """What the chunk stage reads from a unified diff."""

    hunks: list[tuple[int, int, int, int]] | None  # None: no hunk (nothing to trust)
    added: set[int]  # new-side lines added or changed
    removed: set[int]  # old-side lines removed


def read_patch(patch: str | None) -> Patch:
    """The hunks of a unified diff as (old first line index, old count, new first line index,
    new count), lines 0-based, and its added and removed lines (1-based), in one pass."""
    hunks: list[tuple[int, int, int, int]] = []
    added: set[int] = set()
    removed: set[int] = set()
    if not patch:
        return Patch(None, added, removed)
    old = new = 0
    in_hunk = False
    for line in patch.split("\n"):
        tag = line[:1]
        if tag == "+":
            if in_hunk:
                added.add(new)
                new += 1
        elif tag == "-":
            if in_hunk:
                removed.add(old)
                old += 1
        elif tag == " ":
            if in_hunk:
                old += 1
                new += 1
        elif tag == "@" and (m := _HUNK.match(line)):
            old, new, in_hunk = int(m.group(1)), int(m.group(3)), True
            ol = int(m.group(2)) if m.group(2) is not None else 1
            nl = int(m.group(4)) if m.group(4) is not None else 1
            hunks.append((old - 1 if ol else old, ol, new - 1 if nl else new, nl))
    return Patch(hunks or None, added, removed)


_HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class UnitIndex:
    """What labelling needs of one file version's units, each part built on first use and
    kept (a version is the new side of one change and the old side of the next)."""

    __slots__ = ("_by_key", "_children", "_parents", "_spans", "units")

    def __init__(self, units: list[Unit]) -> None:
        self.units = units
        self._by_key: dict[tuple[str, str, int], Unit] | None = None
        self._children: dict[str, list[Unit]] | None = None
        self._parents: set[str] | None = None
        self._spans: tuple[list[list[int]], list[int]] | None = None

    @property
    def by_key(self) -> dict[tuple[str, str, int], Unit]:
        if self._by_key is None:
            self._by_key = _keyed(self.units)
        return self._by_key

    @property
    def children(self) -> dict[str, list[Unit]]:
        if self._children is None:
            self._children = _children(self.units)
        return self._children

    @property
    def parents(self) -> set[str]:
        if self._parents is None:
            self._parents = {u.parent for u in self.units if u.parent}
        return self._parents

    @property
    def spans(self) -> tuple[list[list[int]], list[int]]:
        """The units' line ranges, merged, and their first lines."""
        if self._spans is None:
            spans = _spans(self.units)
            self._spans = spans, [a for a, _ in spans]
        return self._spans


def label_code_changes(old: UnitIndex, new: UnitIndex) -> list[tuple[Unit, str]]:
    """Units of a code file that a change added, modified or deleted, innermost first: a
    method's change labels the method, not its class, unless the class's own lines changed.
    Units are matched by kind group and qualified name (the k-th of a repeated name with the
    k-th: overloads, several impl blocks)."""
    old_by, new_by = old.by_key, new.by_key
    labels: list[tuple[Unit, str]] = []
    for key, unit in new_by.items():
        was = old_by.get(key)
        if was is None:
            labels.append((unit, f"new_{key[0]}"))
        elif not _same_text(was.raw, unit.raw) and not _same_text(
            _own_bytes(was, old.children), _own_bytes(unit, new.children)
        ):
            labels.append((unit, f"modified_{key[0]}"))
    for key, unit in old_by.items():
        if key not in new_by:
            labels.append((unit, f"deleted_{key[0]}"))
    return labels


def touched(index: UnitIndex, lines: set[int]) -> list[Unit]:
    """Units (without children of their own) that hold at least one of `lines`."""
    if not lines:
        return []
    parents = index.parents
    ordered = sorted(lines)
    return [u for u in index.units if u.qualified_name not in parents and _holds(ordered, u)]


def uncovered(index: UnitIndex, lines: set[int]) -> list[int]:
    """The lines no unit holds, sorted."""
    if not lines:
        return []
    spans, starts = index.spans
    out = []
    for n in sorted(lines):
        i = bisect.bisect_right(starts, n) - 1
        if i < 0 or n > spans[i][1]:
            out.append(n)
    return out


def _spans(units: Iterable[Unit]) -> list[list[int]]:
    """The units' line ranges, merged where they overlap or touch."""
    spans: list[list[int]] = []
    for a, b in sorted((u.start_line, u.end_line) for u in units):
        if spans and a <= spans[-1][1] + 1:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    return spans


def _holds(ordered_lines: list[int], u: Unit) -> bool:
    i = bisect.bisect_left(ordered_lines, u.start_line)
    return i < len(ordered_lines) and ordered_lines[i] <= u.end_line


def _keyed(units: list[Unit]) -> dict[tuple[str, str, int], Unit]:
    seen: dict[tuple[str, str], int] = {}
    out = {}
    for u in units:
        group = _GROUP.get(u.kind)
        if group is None:
            continue
        k = seen[group, u.qualified_name] = seen.get((group, u.qualified_name), -1) + 1
        out[group, u.qualified_name, k] = u
    return out


def _children(units: list[Unit]) -> dict[str, list[Unit]]:
    kids: dict[str, list[Unit]] = {}
    for u in units:
        if u.parent:
            kids.setdefault(u.parent, []).append(u)
    return kids


def _same_text(a: bytes, b: bytes) -> bool:
    """Whether two byte strings decode (with replacement) to the same text: equal bytes do, and
    unequal ASCII or valid UTF-8 never does; only invalid sequences can decode alike."""
    if a == b:
        return True
    if a.isascii() and b.isascii():
        return False
    return a.decode("utf-8", "replace") == b.decode("utf-8", "replace")


def _own_bytes(u: Unit, kids: dict[str, list[Unit]]) -> bytes:
    """A unit's bytes with its children's lines taken out, so that an edit inside a method does
    not also count as an edit of its class: the unit's lines, split and joined on newlines
    (which decoding keeps), without those any child spans."""
    inner = kids.get(u.qualified_name)
    raw = u.raw
    if not inner:
        return raw
    first, last = u.start_line, u.end_line
    hidden = _merged((k.start_line, k.end_line) for k in inner)
    near = [(lo, hi) for lo, hi in hidden if hi >= first and lo <= last + 1]
    if raw.count(b"\n") == last - first + 1 and all(first <= lo and hi <= last for lo, hi in near):
        # Whole lines, each with its newline, and the children's inside: cut their bytes out.
        kept, at = [], u.start_byte
        for lo, hi in _merged_bytes(
            k for k in inner if first <= k.start_line <= k.end_line <= last
        ):
            kept.append(u.source[at:lo])
            at = hi
        kept.append(u.source[at : u.end_byte])
        return b"".join(kept)
    pieces = raw.split(b"\n")
    at = first  # the line of the next piece to keep
    out: list[bytes] = []
    for lo, hi in hidden:
        if hi >= at:
            out += pieces[at - first : max(lo, at) - first]
            at = hi + 1
    out += pieces[at - first :]
    return b"\n".join(out)


def _merged_bytes(units: Iterable[Unit]) -> list[tuple[int, int]]:
    """The units' byte spans, sorted and merged where they overlap or touch."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted((k.start_byte, k.end_byte) for k in units):
        if out and lo <= out[-1][1]:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _merged(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ranges, sorted and merged where they overlap or touch."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(r for r in ranges if r[0] <= r[1]):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out
