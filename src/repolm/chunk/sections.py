"""Units of files that have no grammar: Markdown's sections (by ATX and setext headings,
outside fenced code and front matter), and fixed-size line windows for everything else.
"""

from __future__ import annotations

import re

import numpy as np

from repolm.chunk.model import Unit, make_unit

# -- Markdown ---------------------------------------------------------------------------------

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_MARKS = "`~#=-"  # what those three can start with, after up to three spaces


def _headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line, level, text) of each ATX and setext heading, outside fenced code and front
    matter."""
    found: list[tuple[int, int, str]] = []
    fence = ""
    paragraph = 0  # first line of the paragraph a setext underline would make a heading
    i = _front_matter_end(lines)
    while i < len(lines):
        line = lines[i].rstrip("\r")
        i += 1
        if fence:
            closing = line.strip()
            if closing.startswith(fence) and not closing.strip(fence[0]):
                fence = ""
            continue
        lead = line.lstrip(" ")[:1]
        if lead and lead not in _MARKS:  # no fence, heading or underline: the usual line
            if not line.strip():
                paragraph = 0
            elif not paragraph and not line.startswith(("    ", "\t")):
                paragraph = i
            continue
        if m := _FENCE.match(line):
            fence, paragraph = m.group(1), 0
        elif not line.strip():
            paragraph = 0
        elif m := _ATX.match(line):
            found.append((i, len(m.group(1)), (m.group(2) or "").strip()))
            paragraph = 0
        elif paragraph and (m := _SETEXT.match(line)):
            title = " ".join(x.strip() for x in lines[paragraph - 1 : i - 1])
            found.append((paragraph, 1 if m.group(1)[0] == "=" else 2, title))
            paragraph = 0
        elif not paragraph and not line.startswith(("    ", "\t")):
            paragraph = i
    return found


def _front_matter_end(lines: list[str]) -> int:
    if not lines or lines[0].strip() != "---":
        return 0
    for i in range(1, len(lines)):
        if lines[i].strip() in ("---", "..."):
            return i + 1
    return 0


def sections(source: bytes, starts: np.ndarray, lines: list[str]) -> list[Unit]:
    """One section per heading, to the line before the next heading; text before the first
    heading is the "(preamble)". Qualified names follow the outline: `Intro > Install`."""
    headings = _headings(lines)
    units = []
    first = headings[0][0] if headings else len(lines) + 1
    if any(line.strip() for line in lines[: first - 1]):
        units.append(
            make_unit(source, starts, "section", "(preamble)", "(preamble)", 1, first - 1, None)
        )
    outline: list[tuple[int, str]] = []  # (level, qualified) of the open headings
    for k, (start, level, title) in enumerate(headings):
        end = headings[k + 1][0] - 1 if k + 1 < len(headings) else len(lines)
        while outline and outline[-1][0] >= level:
            outline.pop()
        parent = outline[-1][1] if outline else None
        name = title or "(untitled)"
        qualified = f"{parent} > {name}" if parent else name
        units.append(make_unit(source, starts, "section", name, qualified, start, end, parent))
        outline.append((level, qualified))
    return units


# -- windows ----------------------------------------------------------------------------------


def windows(source: bytes, starts: np.ndarray, lines: list[str], size: int) -> list[Unit]:
    """Consecutive `size`-line windows (the last one shorter), skipping all-blank ones."""
    size = max(1, size)
    units = []
    for start in range(0, len(lines), size):
        chunk = lines[start : start + size]
        if any(line.strip() for line in chunk):
            name = f"lines {start + 1}-{start + len(chunk)}"
            end = start + len(chunk)
            units.append(make_unit(source, starts, "window", name, name, start + 1, end, None))
    return units
