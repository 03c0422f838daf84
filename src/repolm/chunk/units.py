"""Code units of one file version: functions, methods, types, modules and tests from a
tree-sitter parse; sections of Markdown and fixed-size line windows for everything else
(`repolm.chunk.sections`).

Only declaration-level nodes are visited (the root's children and the bodies of containers),
never whole function bodies, so a file costs little more than its parse. A version parsed
incrementally from another one reuses that version's units for every declaration whose syntax
subtree tree-sitter reused. What counts as a unit in each language lives in the tables of
`repolm.chunk.grammars`.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from repolm import syntax
from repolm.chunk.grammars import LANGUAGES, Decl, Grammar, Scope, grammar_for
from repolm.chunk.model import Unit, line_starts, make_unit, split_lines
from repolm.chunk.sections import sections, windows

if TYPE_CHECKING:
    from tree_sitter import Node

__all__ = ["LANGUAGES", "Parsed", "Unit", "extract_units", "line_starts", "parse_units"]

log = logging.getLogger(__name__)


# What one declaration node emitted, kept per parsed version so that the next version, parsed
# from this one's tree, can reuse it: (is or holds a test, its own unit as (start, depth, kind,
# name, qualified name, end, parent) with lines relative to the node's first line (None for a
# node that is no unit), and for each declaration walked inside it: (its first line relative to
# this node's, its entry, its key)). Keyed by the node's id and its context. A node id is the
# address of its subtree's slot, so equal ids are one subtree only while both trees live: a
# memo is kept with its tree and read only for that tree or one parsed from (a copy of) it.
Entry = tuple[bool, tuple[int, int, str, str, str, int, str | None] | None, tuple[Any, ...]]
Memo = dict[Any, Entry]
_NOTHING: Entry = (False, None, ())


@dataclass(slots=True)
class Parsed:
    """The units of one file version; for a grammar's language also its tree and what each of
    its declaration nodes emitted (`memo`), to parse and walk a neighbouring version from."""

    units: list[Unit]
    tree: Any | None = None
    memo: Memo | None = None


def extract_units(
    source: bytes, language: str | None, path: str = "", *, window_lines: int = 64
) -> list[Unit]:
    """Units of one file, in source order (containers before their members). Never raises on
    bad input: a file that cannot be parsed falls back to windows."""
    return parse_units(source, language, path, window_lines=window_lines).units


def parse_units(
    source: bytes,
    language: str | None,
    path: str = "",
    *,
    window_lines: int = 64,
    starts: np.ndarray | None = None,
    base: Any | None = None,
    reuse: Memo | None = None,
    tree: Any | None = None,
) -> Parsed:
    """`extract_units`, with the tree-sitter tree (None without a grammar). `starts`: the
    source's `line_starts`, when already known. `base`: the tree of another version of the
    file, already `edit()`ed into this version's coordinates; tree-sitter then re-parses only
    what the edits touched. `reuse`: that version's memo; pass it only when the bytes outside
    the edits are exactly that version's (the reused subtrees then hold the same text).
    `tree`: this source's own tree, parsed before (with `reuse`, its memo): nothing to parse."""
    try:
        if starts is None:
            starts = line_starts(source)
        if language == "Markdown":
            return Parsed(sections(source, starts, split_lines(source)))
        grammar = grammar_for(language, path)
        parser = syntax.parser(grammar.grammar) if grammar is not None else None
        if grammar is not None and parser is not None:
            return _code_units(source, starts, grammar, parser, path, base, reuse, tree)
    except Exception:  # a bad file must never stop the stage; it still gets windows
        log.debug("unit extraction failed for %s; using windows", path, exc_info=True)
    try:
        starts = starts if starts is not None else line_starts(source)
        return Parsed(windows(source, starts, split_lines(source), window_lines))
    except Exception:
        log.debug("windowing failed for %s", path, exc_info=True)
        return Parsed([])


def _first(node: Node) -> int:
    return node.start_point[0] + 1


def _last(node: Node) -> int:
    """1-based last line; a node that ends just after a newline ends on the line before."""
    row, column = node.end_point
    return row + 1 if column or row == node.start_point[0] else row


@dataclass(slots=True)
class _File:
    grammar: Grammar
    source: bytes
    starts: np.ndarray
    out: list[tuple[int, int, Unit]]  # (start_line, depth, unit): sorted at the end
    memo: Memo  # this version's: what each declaration node emitted
    reuse: Memo  # the base version's, for the subtrees tree-sitter reused from it

    def emit(
        self,
        kind: str,
        name: str,
        qualified: str,
        start: int,
        end: int,
        parent: str | None,
        depth: int,
    ) -> int:
        unit = make_unit(self.source, self.starts, kind, name, qualified, start, end, parent)
        self.out.append((start, depth, unit))
        return len(self.out) - 1

    def replay(self, key: Any, entry: Entry, row: int) -> None:
        """Emit what the same subtree emitted in the base version, moved to `row`, in the same
        order; carry its entry (and those of the declarations inside it) over to this
        version's memo."""
        self.memo[key] = entry
        own, nested = entry[1], entry[2]
        if own is not None:
            s, depth, kind, name, qualified, e, parent = own
            s += row
            unit = make_unit(self.source, self.starts, kind, name, qualified, s, e + row, parent)
            self.out.append((s, depth, unit))
        for offset, inner, inner_key in nested:
            self.replay(inner_key, inner, row + offset)


def _code_units(
    source: bytes,
    starts: np.ndarray,
    grammar: Grammar,
    parser: Any,
    path: str,
    base: Any | None,
    reuse: Memo | None,
    tree: Any | None,
) -> Parsed:
    if tree is None and base is None:
        tree, reuse = parser.parse(source), None  # a memo is only good for its own tree's kin
    elif tree is None:
        tree = parser.parse(source, base)
    root = tree.root_node
    f = _File(grammar, source, starts, [], {}, reuse or {})
    children = root.named_children
    skip = _module_doc(f, children, path)
    _walk(f, children[skip:], Scope(sep=grammar.sep, file=path), 0, 0, [])
    f.out.sort(key=itemgetter(0, 1))
    return Parsed([unit for _, _, unit in f.out], tree, f.memo)


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


def _walk(
    f: _File,
    nodes: list[Node],
    scope: Scope,
    depth: int,
    after: int,
    walked: list[tuple[int, Entry, Any]],
) -> bool:
    """Emit the units among a container's children (`after`: the container's first line).
    Comments and attributes collect as a prefix for the next declaration when no blank line
    separates them; True if any unit emitted is (or holds) a test. Each declaration walked is
    added to `walked` as (first line, entry, key); one the base version walked in the same
    context is replayed, not walked again."""
    g = f.grammar
    prefixes, test_prefixes, memo, reuse = g.prefixes, g.test_prefixes, f.memo, f.reuse
    context = repr((depth, *scope))  # a str: hashed once, however many lookups
    prefix: list[Node] = []
    prefix_end = 0  # last line of prefix[-1]
    prev_end = after
    found = False
    for node in nodes:
        row = node.start_point.row
        start = row + 1
        if prefix and start > prefix_end + 1:
            prefix = []
        if node.type in prefixes:
            if prefix or start > prev_end:  # not a trailing comment of the line above
                prefix.append(node)
                end_row, column = node.end_point
                prefix_end = end_row + 1 if column or end_row == row else end_row
            continue
        # Node ids are subtree slots: equal ids are one subtree while the base tree lives. Of
        # the prefix, a unit takes its first line and what the test rule reads.
        if prefix:
            tested = [p.text for p in prefix if p.type in test_prefixes] if test_prefixes else ()
            key: Any = (node.id, context, prefix[0].start_point.row - row, *tested)
        else:
            key = (node.id, context)
        entry = reuse.get(key) if reuse else None
        if entry is not None:
            f.replay(key, entry, start)
        else:
            inner = g.unwrap(node)
            decl = g.classify(inner, scope) if inner is not None else None
            if decl is None:
                entry = memo[key] = _NOTHING
            elif decl.role == "group":
                found |= _walk(f, decl.body.named_children, scope, depth, prev_end, walked)
            elif decl.role == "namespace":
                path = scope.join(decl.name) if decl.name else scope.path
                inside = scope._replace(path=path, sep=g.sep)
                if decl.body is None:  # C# `namespace X;`: the rest of the file
                    scope, context = inside, repr((depth, *inside))
                else:
                    found |= _walk(f, decl.body.named_children, inside, depth, start, walked)
            else:
                entry = memo[key] = _emit(f, decl, node, inner, prefix, scope, depth)
        if entry is not None:
            walked.append((start, entry, key))
            found |= entry[0]
        prefix = []
        end_row, column = node.end_point
        prev_end = end_row + 1 if column or end_row == row else end_row
    return found


def _emit(
    f: _File, decl: Decl, node: Node, inner: Node, prefix: list[Node], scope: Scope, depth: int
) -> Entry:
    """Emit one unit and, for a container, its members; return its entry."""
    g = f.grammar
    row = _first(node)
    start, end = _first(prefix[0]) if prefix else row, _last(node)
    qualified = decl.qualified or scope.join(decl.name)
    test = decl.test or g.is_test(decl, inner, prefix, scope)
    method = decl.role == "method" or (decl.role == "function" and scope.in_type)
    kind = "test" if test else "method" if method else decl.role
    index = f.emit(kind, decl.name, qualified, start, end, scope.parent, depth)
    found = test
    walked: list[tuple[int, Entry, Any]] = []
    if decl.body is not None:
        members = Scope(
            decl.members or qualified,
            decl.sep or g.sep,
            qualified,
            in_type=decl.role == "type",
            in_test=test,
            file=scope.file,
        )
        inside = _walk(f, decl.body.named_children, members, depth + 1, _first(inner), walked)
        if inside and not test and decl.role == "type" and g.test_class(decl.name):
            kind = "test"
            at, level, unit = f.out[index]
            f.out[index] = (at, level, unit._replace(kind=kind))
        found = test or inside
    own = (start - row, depth, kind, decl.name, qualified, end - row, scope.parent)
    return found, own, tuple((s - row, entry, key) for s, entry, key in walked)
