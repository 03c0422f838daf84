"""Where a unit of code ends, language-aware and without a parser: brace languages end where
their brackets balance again, Python (and any other language) by the offside rule. The
completion evaluation cuts a model's body here (`repolm.eval.completion`), and generation stops
here (`unit_stop`), in evaluation and when completing for a user.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

BRACE_LANGUAGES = frozenset(
    {"Rust", "Go", "JavaScript", "TypeScript", "Java", "C", "C++", "C#", "Kotlin"}
)
_CHAR_LITERALS = frozenset({"Rust", "Go", "Java", "C", "C++", "C#", "Kotlin"})  # ' is no string
_BACKTICKS = frozenset({"Go", "JavaScript", "TypeScript"})
_CHAR = re.compile(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^'\\\n])'")
_CLOSER = re.compile(r"[})\]]|end\b")  # a line that closes a block in a brace or `end` language


@dataclass
class _Line:
    start: int
    end: int  # past its newline
    indent: int
    depth_in: int  # open brackets at its start
    quoted_in: bool  # starts inside a multi-line string or comment
    code: bool = False  # holds something besides whitespace and comments
    depth_out: int = 0
    quoted_out: bool = False
    closes: bool = False  # a `}` closes on it
    semicolon: bool = False  # a `;` outside brackets


def _scan(text: str, language: str | None) -> list[_Line]:
    """Each line of `text` with the brackets open and the strings or comments it starts and
    ends in: C-like syntax (`//`, `/* */`, char literals) for the brace languages, Python's
    (`#`, triple quotes) for the others."""
    c_like = language in BRACE_LANGUAGES
    quotes = {'"', "`"} if language in _BACKTICKS else {'"'}
    if language not in _CHAR_LITERALS:
        quotes.add("'")
    triples = ('"""',) if c_like else ('"""', "'''")
    lines: list[_Line] = []
    depth, quote, start = 0, "", 0  # quote: the open string's delimiter, or "*/" in a comment
    while start < len(text):
        nl = text.find("\n", start)
        end = len(text) if nl < 0 else nl + 1
        body = text[start:end]
        line = _Line(start, end, len(body) - len(body.lstrip(" \t")), depth, bool(quote))
        i = start
        while i < end:
            ch = text[i]
            if quote == "*/":
                j = text.find("*/", i, end)
                i, quote = (end, quote) if j < 0 else (j + 2, "")
                continue
            if quote:
                if ch == "\\":
                    i += 2
                elif text.startswith(quote, i):
                    i, quote = i + len(quote), ""
                elif ch == "\n" and quote in ('"', "'"):
                    quote = ""  # an unterminated string ends with its line
                    i += 1
                else:
                    i += 1
                continue
            if ch == "\n" or (c_like and text.startswith("//", i)) or (not c_like and ch == "#"):
                break
            if c_like and text.startswith("/*", i):
                i, quote = i + 2, "*/"
                continue
            if not ch.isspace():
                line.code = True
            triple = next((t for t in triples if text.startswith(t, i)), None)
            if triple:
                i, quote = i + 3, triple
                continue
            if ch in quotes:
                i, quote = i + 1, ch
                continue
            if ch == "'" and (m := _CHAR.match(text, i)):  # not a Rust lifetime
                i = m.end()
                continue
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth = max(depth - 1, 0)
                line.closes |= ch == "}"
            elif ch == ";" and depth == 0:
                line.semicolon = True
            i += 1
        if quote in ('"', "'"):
            quote = ""
        line.depth_out, line.quoted_out = depth, bool(quote)
        lines.append(line)
        start = end
    return lines


def _declaration(text: str, lines: list[_Line]) -> int:
    """The index of the unit's declaration line: past the comments, decorators, annotations
    and attributes it starts with (and the lines that continue them)."""
    k = 0
    while k < len(lines):
        line = lines[k]
        lead = text[line.start + line.indent : line.end]
        if (
            line.code
            and not line.quoted_in
            and line.depth_in == 0
            and not lead.startswith(("@", "#[", "#!["))
        ):
            return k
        k += 1
    return max(len(lines) - 1, 0)


def unit_end(text: str, language: str | None) -> int:
    """Where the unit that `text` starts with ends (an index into `text`; `len(text)` when it
    does not end in it). Never uses the reference's length.

    - Brace languages: at the end of the first line, from the declaration on, after which no
      bracket is open and on which a `}` closed (or a `;` ended a body-less declaration, such
      as a JS arrow function or a prototype). Strings, chars and comments are skipped.
    - Python (and any other language): the offside rule: before the first code line after the
      declaration that starts outside brackets and strings at or left of the unit's first
      line's indentation, trailing blank and comment lines dropped. A brace language whose
      brackets never balance falls back to this on indentation alone, keeping a closing `}`
      line (any language but Python keeps a line that starts with `}`, `)`, `]` or `end`).
    """
    lines = _scan(text, language)
    if not lines:
        return 0
    k = _declaration(text, lines)
    brace = language in BRACE_LANGUAGES
    if brace:
        for line in lines[k:]:
            if line.depth_out == 0 and not line.quoted_out and (line.closes or line.semicolon):
                return line.end
    indent = next((line.indent for line in lines if line.code), 0)
    last = k
    for m in range(k + 1, len(lines)):
        line = lines[m]
        if not line.code or line.quoted_in:
            continue
        if (line.depth_in == 0 or brace) and line.indent <= indent:
            lead = text[line.start + line.indent : line.end]
            if language != "Python" and _CLOSER.match(lead):
                return line.end
            return lines[last].end
        last = m
    return len(text)


def split_unit(text: str) -> tuple[str, str]:
    """(first line with its line end, the rest): what the model is given, what it writes."""
    nl = text.find("\n")
    return (text, "") if nl < 0 else (text[: nl + 1], text[nl + 1 :])


def unit_stop(head: str, language: str | None) -> Callable[[str], int | None]:
    """A stop rule for text generated after `head` (a unit's start, up to the cursor): the
    index in the generated text where the unit ends, None while it goes on. Once it cuts, it
    cuts at the same place however the text goes on."""

    def rule(generated: str) -> int | None:
        text = head + generated
        end = unit_end(text, language)
        return max(end - len(head), 0) if end < len(text) else None

    return rule


def plain_body(first: str, generated: str, language: str | None) -> str:
    """The body a plain continuation predicts: the unit's first line (without its line end,
    as prompted) and the generation, cut where the unit ends, minus that first line."""
    text = first.rstrip() + generated
    return split_unit(text[: unit_end(text, language)])[1]
