"""Tree-sitter parsers, one per grammar per process, loaded on first use; and the parse check
that training's samples are reported with.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from repolm.syntax.languages import find_grammar

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
