"""Tree-sitter parsers, one per grammar per process, loaded on first use; and the parse check
that training's samples are reported with.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from repolm.syntax.languages import find_grammar, grammar_name

log = logging.getLogger(__name__)

_PARSERS: dict[str, Any] = {}


def parser(grammar: str) -> Any | None:
    """The cached tree-sitter parser of a grammar (None, cached too, when it cannot be
    loaded)."""
    if grammar not in _PARSERS:
        try:
            from tree_sitter_language_pack import get_parser

            _PARSERS[grammar] = get_parser(grammar)  # type: ignore[arg-type]
        except Exception:  # LookupError for unknown names; any load failure means "no grammar"
            log.warning("tree-sitter grammar %r unavailable; its files are not parsed", grammar)
            _PARSERS[grammar] = None
    return _PARSERS[grammar]


def parser_for(language: str) -> Any | None:
    """The parser for a repolm language or tree-sitter grammar name (`find_grammar`); None
    without a grammar."""
    grammar = find_grammar(language)
    return parser(grammar) if grammar is not None else None


_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}
_QUOTED = re.compile(r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|//[^\n]*|#[^\n]*""")


def parses(code: str, language: str | None) -> bool | None:
    """Whether generated `code` is a valid prefix of a file: cut to its last complete line,
    with the brackets it left open closed, tree-sitter finds no ERROR node in it. None without
    a grammar for the language."""
    found = parser_for(language) if language else None
    if found is None:
        return None
    code = code[: code.rfind("\n") + 1] if "\n" in code else code
    closing: list[str] = []
    for ch in _QUOTED.sub(" ", code):  # brackets inside strings and comments don't count
        if ch in _OPEN:
            closing.append(_OPEN[ch])
        elif ch in _CLOSE and closing and closing[-1] == ch:
            closing.pop()
    code += "".join(reversed(closing))
    stack = [found.parse(code.encode("utf-8")).root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR":
            return False
        if node.has_error:  # only subtrees holding an error are searched
            stack.extend(node.children)
    return True


# Node types that open a unit of code in any grammar: functions, methods, classes and their
# kin (a decorated or exported one is taken whole, from its decorator or `export`).
_UNIT_NODE = re.compile(r"function|method|class|impl|struct|trait|interface|enum|module")
_WRAPPER_NODE = re.compile(r"decorated|export|template_declaration")


def unit_start(text: str, offset: int, language: str | None, path: str = "") -> int:
    """Where the innermost function, method or class around `offset` in `text` starts: the
    start of its first line (with a decorator's or an attribute's), by tree-sitter. Without a
    grammar or such a unit, the start of the line at `offset`."""
    line_start = text.rfind("\n", 0, offset) + 1
    found = parser(grammar_name(language, path) or "") if language else None
    if found is None:
        return line_start
    data = text.encode("utf-8")
    at = len(text[:offset].encode("utf-8"))
    node = found.parse(data).root_node.descendant_for_byte_range(at, at)
    while node is not None and not (_UNIT_NODE.search(node.type) and node.start_byte < at):
        node = node.parent
    if node is None:
        return line_start
    while node.parent is not None and _WRAPPER_NODE.search(node.parent.type):
        node = node.parent
    start = len(data[: node.start_byte].decode("utf-8", errors="ignore"))
    return text.rfind("\n", 0, start) + 1
