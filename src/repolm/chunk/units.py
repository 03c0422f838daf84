"""Code units of one file version: functions, methods, types, modules and tests from a
tree-sitter parse; sections of Markdown; fixed-size line windows for everything else.

Only declaration-level nodes are visited (the root's children and the bodies of containers),
never whole function bodies, so a file costs little more than its parse. What counts as a unit
in each language lives in the tables of `repolm.chunk.grammars`.
"""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from repolm.chunk.grammars import LANGUAGES, Decl, Grammar, Scope, grammar_for

if TYPE_CHECKING:
    from tree_sitter import Node

__all__ = ["LANGUAGES", "Unit", "extract_units", "parse_units"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Unit:
    """One unit of a file. Lines are 1-based and inclusive; a unit's range includes the doc
    comments, attributes, decorators and annotations directly above it; `text` is exactly those
    source lines with their newlines; `parent` is the qualified name of the enclosing unit."""

    kind: str  # function | method | type | module | test | section | window
    name: str
    qualified_name: str
    start_line: int
    end_line: int
    text: str
    parent: str | None


def extract_units(
    source: bytes, language: str | None, path: str = "", *, window_lines: int = 64
) -> list[Unit]:
    """Units of one file, in source order (containers before their members). Never raises on
    bad input: a file that cannot be parsed falls back to windows."""
    return parse_units(source, language, path, window_lines=window_lines)[0]


def parse_units(
    source: bytes,
    language: str | None,
    path: str = "",
    *,
    window_lines: int = 64,
    base: Any | None = None,
) -> tuple[list[Unit], Any | None]:
    """`extract_units`, also returning the tree-sitter tree (None without a grammar). `base`:
    the tree of another version of the file, already `edit()`ed into this version's
    coordinates; tree-sitter then re-parses only what the edits touched."""
    try:
        lines = _split_lines(source)
        if language == "Markdown":
            return _sections(lines), None
        grammar = grammar_for(language, path)
        parser = _parser(grammar.grammar) if grammar is not None else None
        if grammar is not None and parser is not None:
            return _code_units(source, lines, grammar, parser, path, base)
    except Exception:  # a bad file must never stop the stage; it still gets windows
        log.debug("unit extraction failed for %s; using windows", path, exc_info=True)
    try:
        return _windows(_split_lines(source), window_lines), None
    except Exception:
        log.debug("windowing failed for %s", path, exc_info=True)
        return [], None


# -- parsing ----------------------------------------------------------------------------------

_PARSERS: dict[str, Any] = {}


def _parser(grammar: str) -> Any | None:
    """A cached tree-sitter parser (None, cached too, when the grammar cannot be loaded)."""
    if grammar not in _PARSERS:
        try:
            from tree_sitter_language_pack import get_parser

            _PARSERS[grammar] = get_parser(grammar)  # type: ignore[arg-type]
        except Exception:
            log.warning("tree-sitter grammar %r unavailable; its files get windows", grammar)
            _PARSERS[grammar] = None
    return _PARSERS[grammar]


def _split_lines(source: bytes) -> list[str]:
    """Lines with their newlines, split on b"\\n" only, as tree-sitter counts rows (decoding
    with replacement keeps every newline byte, so rows and lines agree)."""
    parts = source.decode("utf-8", "replace").split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _first(node: Node) -> int:
    return node.start_point[0] + 1


def _last(node: Node) -> int:
    """1-based last line; a node that ends just after a newline ends on the line before."""
    row, column = node.end_point
    return row + 1 if column or row == node.start_point[0] else row


def _unit(lines: list[str], kind: str, name: str, qualified: str, start: int, end: int,
          parent: str | None) -> Unit:  # fmt: skip
    return Unit(kind, name, qualified, start, end, "".join(lines[start - 1 : end]), parent)


@dataclass(slots=True)
class _File:
    grammar: Grammar
    lines: list[str]
    out: list[tuple[int, int, Unit]]  # (start_line, depth, unit): sorted at the end

    def emit(self, kind: str, name: str, qualified: str, start: int, end: int,
             parent: str | None, depth: int) -> int:  # fmt: skip
        unit = _unit(self.lines, kind, name, qualified, start, end, parent)
        self.out.append((start, depth, unit))
        return len(self.out) - 1


def _code_units(source: bytes, lines: list[str], grammar: Grammar, parser: Any, path: str,
                base: Any | None = None) -> tuple[list[Unit], Any]:  # fmt: skip
    tree = parser.parse(source, base) if base is not None else parser.parse(source)
    root = tree.root_node
    f = _File(grammar, lines, [])
    children = root.named_children
    skip = _module_doc(f, children, path)
    _walk(f, children[skip:], Scope(sep=grammar.sep, file=path), 0, 0)
    f.out.sort(key=lambda item: (item[0], item[1]))
    return [unit for _, _, unit in f.out], tree


def _module_doc(f: _File, children: list[Node], path: str) -> int:
    """Emit the file's leading module doc (Rust `//!`, a Python docstring, Go/Java comments and
    package clause, or a file comment that documents no declaration); return how many of the
    root's children it took."""
    g = f.grammar
    taken: list[Node] = []
    name: str | None = None
    anchored = 0
    for node in children:
        anchor = g.anchor(node)
        if anchor is None and node.type not in g.prefixes:
            break
        taken.append(node)
        if anchor is not None:
            name, anchored = anchor, len(taken)
    if not anchored:  # comments only: keep those not attached to the declaration below them
        anchored = len(taken)
        following = children[len(taken)] if len(taken) < len(children) else None
        if following is not None:
            below = _first(following)
            while anchored and _last(taken[anchored - 1]) + 1 >= below:
                below = _first(taken[anchored - 1])
                anchored -= 1
        if any("comment" not in n.type for n in taken[:anchored]):
            return 0  # attributes/decorators alone are no module doc
    if not anchored:
        return 0
    name = name or _module_name(path)
    f.emit("module", name, name, _first(taken[0]), _last(taken[anchored - 1]), None, 0)
    return anchored


def _module_name(path: str) -> str:
    """`units` for src/units.py; the directory for `__init__.py`, `mod.rs`, `index.ts`."""
    parts = path.replace("\\", "/").split("/")
    stem = posixpath.splitext(parts[-1])[0]
    if stem in ("__init__", "mod", "index") and len(parts) > 1:
        stem = parts[-2]
    return stem or "(module)"


def _walk(f: _File, nodes: list[Node], scope: Scope, depth: int, after: int) -> bool:
    """Emit the units among a container's children (`after`: the container's first line).
    Comments and attributes collect as a prefix for the next declaration when no blank line
    separates them; True if any unit emitted is (or holds) a test."""
    g = f.grammar
    prefix: list[Node] = []
    prev_end = after
    found = False
    for node in nodes:
        start = _first(node)
        if prefix and start > _last(prefix[-1]) + 1:
            prefix = []
        if node.type in g.prefixes:
            if prefix or start > prev_end:  # not a trailing comment of the line above
                prefix.append(node)
            continue
        inner = g.unwrap(node)
        decl = g.classify(inner, scope) if inner is not None else None
        if decl is None:
            pass
        elif decl.role == "group":
            found |= _walk(f, decl.body.named_children, scope, depth, prev_end)
        elif decl.role == "namespace":
            path = scope.join(decl.name) if decl.name else scope.path
            inside = replace(scope, path=path, sep=g.sep)
            if decl.body is None:  # C# `namespace X;`: the rest of the file
                scope = inside
            else:
                found |= _walk(f, decl.body.named_children, inside, depth, start)
        else:
            found |= _emit(f, decl, node, inner, prefix, scope, depth)
        prefix = []
        prev_end = _last(node)
    return found


def _emit(f: _File, decl: Decl, node: Node, inner: Node, prefix: list[Node], scope: Scope,
          depth: int) -> bool:  # fmt: skip
    """Emit one unit and, for a container, its members; True if it is or holds a test."""
    g = f.grammar
    start, end = _first(prefix[0] if prefix else node), _last(node)
    qualified = decl.qualified or scope.join(decl.name)
    test = decl.test or g.is_test(decl, inner, prefix, scope)
    method = decl.role == "method" or (decl.role == "function" and scope.in_type)
    kind = "test" if test else "method" if method else decl.role
    index = f.emit(kind, decl.name, qualified, start, end, scope.parent, depth)
    if decl.body is None:
        return test
    members = Scope(decl.members or qualified, decl.sep or g.sep, qualified,
                    in_type=decl.role == "type", in_test=test, file=scope.file)  # fmt: skip
    found = _walk(f, decl.body.named_children, members, depth + 1, _first(inner))
    if found and not test and decl.role == "type" and g.test_class(decl.name):
        at, level, unit = f.out[index]
        f.out[index] = (at, level, replace(unit, kind="test"))
    return test or found


# -- Markdown ---------------------------------------------------------------------------------

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


def _headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line, level, text) of each ATX and setext heading, outside fenced code and front
    matter."""
    found: list[tuple[int, int, str]] = []
    fence = ""
    paragraph = 0  # first line of the paragraph a setext underline would make a heading
    i = _front_matter_end(lines)
    while i < len(lines):
        line = lines[i].rstrip("\r\n")
        i += 1
        if fence:
            closing = line.strip()
            if closing.startswith(fence) and not closing.strip(fence[0]):
                fence = ""
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


def _sections(lines: list[str]) -> list[Unit]:
    """One section per heading, to the line before the next heading; text before the first
    heading is the "(preamble)". Qualified names follow the outline: `Intro > Install`."""
    headings = _headings(lines)
    units = []
    first = headings[0][0] if headings else len(lines) + 1
    if any(line.strip() for line in lines[: first - 1]):
        units.append(_unit(lines, "section", "(preamble)", "(preamble)", 1, first - 1, None))
    outline: list[tuple[int, str]] = []  # (level, qualified) of the open headings
    for k, (start, level, title) in enumerate(headings):
        end = headings[k + 1][0] - 1 if k + 1 < len(headings) else len(lines)
        while outline and outline[-1][0] >= level:
            outline.pop()
        parent = outline[-1][1] if outline else None
        name = title or "(untitled)"
        qualified = f"{parent} > {name}" if parent else name
        units.append(_unit(lines, "section", name, qualified, start, end, parent))
        outline.append((level, qualified))
    return units


# -- windows ----------------------------------------------------------------------------------


def _windows(lines: list[str], size: int) -> list[Unit]:
    """Consecutive `size`-line windows (the last one shorter), skipping all-blank ones."""
    size = max(1, size)
    units = []
    for start in range(0, len(lines), size):
        chunk = lines[start : start + size]
        if any(line.strip() for line in chunk):
            name = f"lines {start + 1}-{start + len(chunk)}"
            units.append(_unit(lines, "window", name, name, start + 1, start + len(chunk), None))
    return units
