"""Label what a commit changed, unit by unit: new, modified or deleted functions, tests, types;
and docs, config, build or other changes for the files and lines no code unit holds."""

from __future__ import annotations

import bisect
import posixpath
import re
from collections.abc import Iterable

from repolm.chunk.units import Unit

CHANGE_TYPES = (
    "new_function", "modified_function", "deleted_function",
    "new_test", "modified_test", "deleted_test",
    "new_type", "modified_type", "deleted_type",
    "docs", "config", "build", "other",
)  # fmt: skip

_GROUP = {"function": "function", "method": "function", "test": "test", "type": "type"}
_DOC_LANGUAGES = {"Markdown", "reStructuredText", "AsciiDoc", "Text", "TeX"}
_CONFIG_LANGUAGES = {"YAML", "TOML", "JSON", "INI", "XML", "HCL", "Nix"}
_BUILD_NAMES = {
    "makefile", "gnumakefile", "cmakelists.txt", "dockerfile", "containerfile", "cargo.toml",
    "build.rs", "package.json", "pyproject.toml", "setup.py", "setup.cfg", "go.mod",
    "build.gradle", "build.gradle.kts", "settings.gradle", "pom.xml", "build", "build.bazel",
    "workspace", "justfile", "meson.build", "tox.ini", "noxfile.py", "requirements.txt",
}  # fmt: skip
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


def changed_lines(patch: str | None) -> tuple[set[int], set[int]]:
    """(new-side lines added or changed, old-side lines removed) from a unified diff."""
    added: set[int] = set()
    removed: set[int] = set()
    if not patch:
        return added, removed
    old = new = 0
    in_hunk = False
    for line in patch.split("\n"):
        if line.startswith("@@"):
            m = _HUNK.match(line)
            if m:
                old, new, in_hunk = int(m.group(1)), int(m.group(2)), True
            continue
        if not in_hunk or not line:
            continue
        tag = line[0]
        if tag == "+":
            added.add(new)
            new += 1
        elif tag == "-":
            removed.add(old)
            old += 1
        elif tag == " ":
            old += 1
            new += 1
    return added, removed


_HUNK = re.compile(r"@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def label_code_changes(old: list[Unit], new: list[Unit]) -> list[tuple[Unit, str]]:
    """Units of a code file that a change added, modified or deleted, innermost first: a
    method's change labels the method, not its class, unless the class's own lines changed.
    Units are matched by kind group and qualified name (the k-th of a repeated name with the
    k-th: overloads, several impl blocks)."""
    old_by, new_by = _keyed(old), _keyed(new)
    old_kids, new_kids = _children(old), _children(new)
    labels: list[tuple[Unit, str]] = []
    for key, unit in new_by.items():
        was = old_by.get(key)
        if was is None:
            labels.append((unit, f"new_{key[0]}"))
        elif was.text != unit.text and _own_text(was, old_kids) != _own_text(unit, new_kids):
            labels.append((unit, f"modified_{key[0]}"))
    for key, unit in old_by.items():
        if key not in new_by:
            labels.append((unit, f"deleted_{key[0]}"))
    return labels


def touched(units: Iterable[Unit], lines: set[int]) -> list[Unit]:
    """Units (without children of their own) that hold at least one of `lines`."""
    units = list(units)
    parents = {u.parent for u in units if u.parent}
    ordered = sorted(lines)
    return [u for u in units if u.qualified_name not in parents and _holds(ordered, u)]


def uncovered(units: Iterable[Unit], lines: set[int]) -> list[int]:
    """The lines no unit holds, sorted."""
    spans: list[list[int]] = []
    for a, b in sorted((u.start_line, u.end_line) for u in units):
        if spans and a <= spans[-1][1] + 1:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    starts = [a for a, _ in spans]
    out = []
    for n in sorted(lines):
        i = bisect.bisect_right(starts, n) - 1
        if i < 0 or n > spans[i][1]:
            out.append(n)
    return out


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


def _own_text(u: Unit, kids: dict[str, list[Unit]]) -> str:
    """A unit's text with its children's lines taken out, so that an edit inside a method does
    not also count as an edit of its class."""
    inner = kids.get(u.qualified_name)
    if not inner:
        return u.text
    hidden: set[int] = set()
    for k in inner:
        hidden.update(range(k.start_line, k.end_line + 1))
    lines = u.text.split("\n")
    return "\n".join(line for i, line in enumerate(lines, start=u.start_line) if i not in hidden)
