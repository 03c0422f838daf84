"""Unit extraction per language: exact kinds, names, qualified names, line ranges and parents
for small fixtures; Markdown sections; windows; and files that are broken, empty or not UTF-8."""

from __future__ import annotations

import difflib
import random
from typing import NamedTuple

import pytest

from repolm.chunk import units as units_module
from repolm.chunk.units import LANGUAGES, Unit, extract_units, line_starts, parse_units
from repolm.chunk.versions import edit_tree
from repolm.syntax import parsers


class Fixture(NamedTuple):
    language: str
    path: str
    source: str
    expected: list[tuple[str, str, str, int, int, str | None]]


def rows(units: list[Unit]) -> list[tuple[str, str, str, int, int, str | None]]:
    return [(u.kind, u.name, u.qualified_name, u.start_line, u.end_line, u.parent) for u in units]


def assert_texts(source: bytes, units: list[Unit]) -> None:
    """Each unit's text is exactly its source lines, newlines included."""
    lines = source.decode("utf-8", "replace").split("\n")
    for u in units:
        want = "\n".join(lines[u.start_line - 1 : u.end_line])
        if u.end_line < len(lines):
            want += "\n"
        assert u.text == want, u


RUST = Fixture(
    "Rust",
    "src/parser.rs",
    """\
//! Parsing.
//! Second line.

use std::fmt;

/// A parser.
#[derive(Debug)]
pub struct Parser {
    pos: usize,
}

impl Parser {
    /// Makes one.
    pub fn new() -> Self {
        Parser { pos: 0 }
    }
}

impl fmt::Display for Parser {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.pos)
    }
}

pub trait Parse {
    fn parse(&self) -> bool;
}

fn free() {}

mod inner {
    pub enum Token { A }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper() {}

    #[test]
    fn test_parse() {
        helper();
    }

    #[tokio::test]
    async fn runs() {}
}
""",
    [
        ("module", "parser", "parser", 1, 2, None),
        ("type", "Parser", "Parser", 6, 10, None),
        ("type", "Parser", "impl Parser", 12, 17, None),
        ("method", "new", "Parser::new", 13, 16, "impl Parser"),
        ("type", "Parser", "impl Display for Parser", 19, 23, None),
        ("method", "fmt", "Parser::fmt", 20, 22, "impl Display for Parser"),
        ("type", "Parse", "Parse", 25, 27, None),
        ("method", "parse", "Parse::parse", 26, 26, "Parse"),
        ("function", "free", "free", 29, 29, None),
        ("module", "inner", "inner", 31, 33, None),
        ("type", "Token", "inner::Token", 32, 32, "inner"),
        ("test", "tests", "tests", 35, 48, None),
        ("function", "helper", "tests::helper", 39, 39, "tests"),
        ("test", "test_parse", "tests::test_parse", 41, 44, "tests"),
        ("test", "runs", "tests::runs", 46, 47, "tests"),
    ],
)


PYTHON = Fixture(
    "Python",
    "pkg/parser.py",
    '''\
"""Parsing things."""

import os


# A decorated function.
@cache
def parse(text):
    return text


class Parser:
    """A parser."""

    @property
    def pos(self):
        return 0

    class Inner:
        def run(self):
            pass


class TestParser:
    def test_parse(self):
        assert parse("x")

    def helper(self):
        pass


def test_free():
    pass
''',
    [
        ("module", "parser", "parser", 1, 1, None),
        ("function", "parse", "parse", 6, 9, None),
        ("type", "Parser", "Parser", 12, 21, None),
        ("method", "pos", "Parser.pos", 15, 17, "Parser"),
        ("type", "Inner", "Parser.Inner", 19, 21, "Parser"),
        ("method", "run", "Parser.Inner.run", 20, 21, "Parser.Inner"),
        ("test", "TestParser", "TestParser", 24, 29, None),
        ("test", "test_parse", "TestParser.test_parse", 25, 26, "TestParser"),
        ("method", "helper", "TestParser.helper", 28, 29, "TestParser"),
        ("test", "test_free", "test_free", 32, 33, None),
    ],
)


GO = Fixture(
    "Go",
    "parse/parser_test.go",
    """\
// Package parse parses.
package parse

import "testing"

// Parser parses.
type Parser struct {
	pos int
}

// Parse runs the parser.
func (p *Parser) Parse() error {
	return nil
}

func TestParse(t *testing.T) {
	helper(t)
}

func helper(t *testing.T) {}
""",
    [
        ("module", "parse", "parse", 1, 2, None),
        ("type", "Parser", "Parser", 6, 9, None),
        ("test", "Parse", "Parser.Parse", 11, 14, None),
        ("test", "TestParse", "TestParse", 16, 18, None),
        ("test", "helper", "helper", 20, 20, None),
    ],
)


GO2 = Fixture(
    "Go",
    "parse/parser.go",
    """\
package parse

type (
	// Pos is a position.
	Pos int
	Span struct{ a, b Pos }
)

func helper() {}

func BenchmarkParse(b *testing.B) {}
""",
    [
        ("module", "parse", "parse", 1, 1, None),
        ("type", "Pos", "Pos", 4, 5, None),
        ("type", "Span", "Span", 6, 6, None),
        ("function", "helper", "helper", 9, 9, None),
        ("test", "BenchmarkParse", "BenchmarkParse", 11, 11, None),
    ],
)


TS = Fixture(
    "TypeScript",
    "src/parser.ts",
    """\
/**
 * The parser module.
 */

import { x } from "./x";

/** Parses text. */
export function parse(text: string): number {
  return text.length;
}

@Injectable()
export class Parser {
  /** Current position. */
  pos = 0;

  run(): void {}

  static make = () => new Parser();
}

export interface Options {
  strict: boolean;
}

export type Mode = "a" | "b";

export const helper = (n: number) => n + 1;

describe("Parser", () => {
  it("parses", () => {
    expect(parse("ab")).toBe(2);
  });

  describe.each([1, 2])("with %i", (n) => {
    test(`counts`, () => {});
  });
});
""",
    [
        ("module", "parser", "parser", 1, 3, None),
        ("function", "parse", "parse", 7, 10, None),
        ("type", "Parser", "Parser", 12, 20, None),
        ("method", "run", "Parser.run", 17, 17, "Parser"),
        ("method", "make", "Parser.make", 19, 19, "Parser"),
        ("type", "Options", "Options", 22, 24, None),
        ("type", "Mode", "Mode", 26, 26, None),
        ("function", "helper", "helper", 28, 28, None),
        ("test", "Parser", "Parser", 30, 38, None),
        ("test", "parses", "Parser > parses", 31, 33, "Parser"),
        ("test", "with %i", "Parser > with %i", 35, 37, "Parser"),
        ("test", "counts", "Parser > with %i > counts", 36, 36, "Parser > with %i"),
    ],
)


TSX = Fixture(
    "TypeScript",
    "src/View.tsx",
    """\
import React from "react";

export function View(props: { name: string }) {
  return <div className="x">{props.name}</div>;
}

export const Item = ({ id }: { id: number }) => <li>{id}</li>;
""",
    [
        ("function", "View", "View", 3, 5, None),
        ("function", "Item", "Item", 7, 7, None),
    ],
)


JS = Fixture(
    "JavaScript",
    "src/app.jsx",
    """\
// Application entry.
const render = (el) => <App el={el} />;

class App extends Component {
  render() {
    return <div />;
  }
}

function main() {
  render(document.body);
}
""",
    [
        ("function", "render", "render", 1, 2, None),
        ("type", "App", "App", 4, 8, None),
        ("method", "render", "App.render", 5, 7, "App"),
        ("function", "main", "main", 10, 12, None),
    ],
)


JAVA = Fixture(
    "Java",
    "src/test/java/com/example/ParserTest.java",
    """\
package com.example;

import org.junit.jupiter.api.Test;

/** Tests for the parser. */
public class ParserTest {
    private final Parser parser = new Parser();

    /** Builds one. */
    public ParserTest() {}

    @Test
    void parses() {
        assertTrue(parser.parse("x"));
    }

    @ParameterizedTest
    @ValueSource(strings = {"a", "b"})
    void parsesMany(String s) {}

    static class Fixture {
        String load() { return ""; }
    }

    private void helper() {}
}
""",
    [
        ("module", "com.example", "com.example", 1, 1, None),
        ("test", "ParserTest", "ParserTest", 5, 26, None),
        ("method", "ParserTest", "ParserTest.ParserTest", 9, 10, "ParserTest"),
        ("test", "parses", "ParserTest.parses", 12, 15, "ParserTest"),
        ("test", "parsesMany", "ParserTest.parsesMany", 17, 19, "ParserTest"),
        ("type", "Fixture", "ParserTest.Fixture", 21, 23, "ParserTest"),
        ("method", "load", "ParserTest.Fixture.load", 22, 22, "ParserTest.Fixture"),
        ("method", "helper", "ParserTest.helper", 25, 25, "ParserTest"),
    ],
)


C = Fixture(
    "C",
    "src/parser.h",
    """\
/* parser.h: a tiny parser. */

#ifndef PARSER_H
#define PARSER_H

/* A position. */
struct pos {
    int line;
};

typedef struct {
    struct pos at;
} parser;

int parse(parser *p);

/* Runs the parser. */
static int run(parser *p) {
    return parse(p);
}

#endif
""",
    [
        ("module", "parser", "parser", 1, 1, None),
        ("type", "pos", "pos", 6, 9, None),
        ("type", "parser", "parser", 11, 13, None),
        ("function", "run", "run", 17, 20, None),
    ],
)


CPP = Fixture(
    "C++",
    "src/parser.cc",
    """\
#include "parser.h"

namespace text {

/// A parser.
class Parser {
 public:
  Parser() = default;
  int parse(const char* s) {
    return 0;
  }
  struct State {
    int pos;
  };
};

int Parser::run() { return 1; }

template <typename T>
T twice(T x) {
  return x + x;
}

}  // namespace text

TEST(ParserTest, Parses) {
  EXPECT_EQ(text::Parser().parse(""), 0);
}
""",
    [
        ("type", "Parser", "text::Parser", 5, 15, None),
        ("method", "Parser", "text::Parser::Parser", 8, 8, "text::Parser"),
        ("method", "parse", "text::Parser::parse", 9, 11, "text::Parser"),
        ("type", "State", "text::Parser::State", 12, 14, "text::Parser"),
        ("function", "run", "text::Parser::run", 17, 17, None),
        ("function", "twice", "text::twice", 19, 22, None),
        ("test", "ParserTest.Parses", "ParserTest.Parses", 26, 28, None),
    ],
)


CS = Fixture(
    "C#",
    "src/Parser.cs",
    """\
using System;

namespace Example.Text;

/// <summary>A parser.</summary>
public class Parser
{
    public int Parse(string s) => s.Length;
}

public class ParserTests
{
    [Fact]
    public void Parses() {}
}
""",
    [
        ("type", "Parser", "Example.Text.Parser", 5, 9, None),
        ("method", "Parse", "Example.Text.Parser.Parse", 8, 8, "Example.Text.Parser"),
        ("test", "ParserTests", "Example.Text.ParserTests", 11, 15, None),
        ("test", "Parses", "Example.Text.ParserTests.Parses", 13, 14, "Example.Text.ParserTests"),
    ],
)


KOTLIN = Fixture(
    "Kotlin",
    "src/test/kotlin/ParserTest.kt",
    """\
package com.example

class Parser(val x: Int) {
    // Parses.
    fun parse(): Int = x

    companion object {
        fun make() = Parser(1)
    }
}

fun top() {}

class ParserTest {
    @Test
    fun parses() {}
}
""",
    [
        ("module", "com.example", "com.example", 1, 1, None),
        ("type", "Parser", "Parser", 3, 10, None),
        ("method", "parse", "Parser.parse", 4, 5, "Parser"),
        ("type", "Companion", "Parser.Companion", 7, 9, "Parser"),
        ("method", "make", "Parser.Companion.make", 8, 8, "Parser.Companion"),
        ("function", "top", "top", 12, 12, None),
        ("test", "ParserTest", "ParserTest", 14, 17, None),
        ("test", "parses", "ParserTest.parses", 15, 16, "ParserTest"),
    ],
)


FIXTURES = {
    "rust": RUST,
    "python": PYTHON,
    "go_test_file": GO,
    "go": GO2,
    "typescript": TS,
    "tsx": TSX,
    "jsx": JS,
    "java": JAVA,
    "c": C,
    "cpp": CPP,
    "csharp": CS,
    "kotlin": KOTLIN,
}


@pytest.mark.parametrize("fixture", FIXTURES.values(), ids=FIXTURES.keys())
def test_units_per_language(fixture: Fixture) -> None:
    source = fixture.source.encode()
    got = extract_units(source, fixture.language, fixture.path)
    assert rows(got) == fixture.expected
    assert_texts(source, got)


def test_languages_table_has_the_main_languages() -> None:
    assert {"Rust", "Python", "Go", "JavaScript", "TypeScript", "Java", "C", "C++"} <= set(
        LANGUAGES
    )


def test_units_come_in_source_order_with_containers_first() -> None:
    source = RUST.source.encode()
    got = extract_units(source, "Rust", RUST.path)
    keys = [(u.start_line, u.parent is not None) for u in got]
    assert keys == sorted(keys)
    qualified = {u.qualified_name for u in got}
    assert all(u.parent in qualified for u in got if u.parent)


def test_tsx_needs_the_tsx_grammar() -> None:
    # Parsed as plain TypeScript the JSX would be errors; .tsx picks the right dialect.
    source = TSX.source.encode()
    assert rows(extract_units(source, "TypeScript", "View.tsx")) == TSX.expected


MARKDOWN = """\
Intro text before any heading.

# Guide

Some words.

```sh
# not a heading
```

## Install ##

Run it.

Usage
=====

Sub part
--------
### Deep
text
"""


def test_markdown_sections() -> None:
    source = MARKDOWN.encode()
    got = extract_units(source, "Markdown", "docs/guide.md")
    assert rows(got) == [
        ("section", "(preamble)", "(preamble)", 1, 2, None),
        ("section", "Guide", "Guide", 3, 10, None),
        ("section", "Install", "Guide > Install", 11, 14, "Guide"),
        ("section", "Usage", "Usage", 15, 17, None),
        ("section", "Sub part", "Usage > Sub part", 18, 19, "Usage"),
        ("section", "Deep", "Usage > Sub part > Deep", 20, 21, "Usage > Sub part"),
    ]
    assert_texts(source, got)


def test_markdown_front_matter_and_no_headings() -> None:
    source = b"---\ntitle: x\n---\n# Top\n"
    assert rows(extract_units(source, "Markdown", "a.md")) == [
        ("section", "(preamble)", "(preamble)", 1, 3, None),
        ("section", "Top", "Top", 4, 4, None),
    ]
    assert rows(extract_units(b"just text\n", "Markdown", "a.md")) == [
        ("section", "(preamble)", "(preamble)", 1, 1, None)
    ]


def test_windows_for_unknown_languages() -> None:
    source = b"".join(b"line %d\n" % i for i in range(1, 11)) + b"\n" * 8 + b"tail"
    got = extract_units(source, None, "data.xyz", window_lines=4)
    assert rows(got) == [
        ("window", "lines 1-4", "lines 1-4", 1, 4, None),
        ("window", "lines 5-8", "lines 5-8", 5, 8, None),
        ("window", "lines 9-12", "lines 9-12", 9, 12, None),
        # lines 13-16 are blank: no window
        ("window", "lines 17-19", "lines 17-19", 17, 19, None),
    ]
    assert_texts(source, got)
    assert [u.kind for u in extract_units(b'{"a": 1}\n', "JSON", "a.json")] == ["window"]


def test_syntax_errors_keep_the_valid_units() -> None:
    rust = b"fn a() {}\n\nfn b( {\n\nfn c() -> u8 { 1 }\n"
    assert [u.name for u in extract_units(rust, "Rust", "a.rs")] == ["a", "c"]
    python = b"def ok():\n    pass\n\ndef broken(:\n    pass\n\nclass K:\n    def m(self): pass\n"
    got = extract_units(python, "Python", "a.py")
    assert ("function", "ok") in [(u.kind, u.name) for u in got]
    assert ("method", "K.m") in [(u.kind, u.qualified_name) for u in got]
    garbage = bytes(range(256)) * 20
    for language in LANGUAGES:
        extract_units(garbage, language, "x")  # no exception


def test_non_utf8_source() -> None:
    source = b"# caf\xe9\ndef f():\n    return '\xff'\n\n\ndef g():\n    pass\n"
    got = extract_units(source, "Python", "latin.py")
    assert rows(got) == [
        ("function", "f", "f", 1, 3, None),
        ("function", "g", "g", 6, 7, None),
    ]
    assert got[0].text == "# caf\ufffd\ndef f():\n    return '\ufffd'\n"
    assert_texts(source, got)


@pytest.mark.parametrize("language", [*LANGUAGES, "Markdown", None])
def test_empty_files_have_no_units(language: str | None) -> None:
    assert extract_units(b"", language, "empty") == []
    assert extract_units(b"\n\n  \n", language, "blank") == []


def test_crlf_line_endings() -> None:
    source = b"fn a() {\r\n}\r\n\r\nfn b() {}\r\n"
    got = extract_units(source, "Rust", "a.rs")
    assert rows(got) == [
        ("function", "a", "a", 1, 2, None),
        ("function", "b", "b", 4, 4, None),
    ]
    assert got[0].text == "fn a() {\r\n}\r\n"


def test_extraction_errors_fall_back_to_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(units_module, "_code_units", boom)
    got = extract_units(b"fn a() {}\n", "Rust", "a.rs")
    assert rows(got) == [("window", "lines 1-1", "lines 1-1", 1, 1, None)]


def test_missing_grammar_falls_back_to_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(parsers._PARSERS, "rust", None)
    assert [u.kind for u in extract_units(b"fn a() {}\n", "Rust", "a.rs")] == ["window"]


def test_a_large_generated_file() -> None:
    items = "".join(
        f"/// Item {i}.\n#[derive(Debug)]\npub struct Item{i} {{\n    v: u64,\n}}\n\n"
        f"impl Item{i} {{\n    pub fn v(&self) -> u64 {{\n        self.v + {i}\n    }}\n}}\n\n"
        for i in range(60)
    )
    source = items.encode()
    got = extract_units(source, "Rust", "gen.rs")
    assert len(got) == 180
    assert rows(got[-3:]) == [
        ("type", "Item59", "Item59", 709, 713, None),
        ("type", "Item59", "impl Item59", 715, 719, None),
        ("method", "v", "Item59::v", 716, 718, "impl Item59"),
    ]
    assert_texts(source, got)


def _line_edit(lines: list[str], rng: random.Random) -> list[str]:
    """One random line edit: delete, duplicate, blank, swap, or change a line."""
    lines = list(lines)
    i = rng.randrange(len(lines))
    op = rng.randrange(5)
    if op == 0 and len(lines) > 1:
        del lines[i]
    elif op == 1:
        lines.insert(i, lines[i])
    elif op == 2:
        lines.insert(i, "\n")
    elif op == 3 and i + 1 < len(lines):
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    else:
        lines[i] = lines[i].rstrip("\n") + rng.choice([" x", " }", " {", "  // c", ")"]) + "\n"
    return lines


def _edit_chain(text: str, language: str, path: str, steps: int, seed: int = 7) -> int:
    """Parse each of `steps` randomly edited versions from the previous one's tree, edited by
    the diff's hunks, replaying the units of every declaration whose subtree tree-sitter kept;
    assert each has exactly the units of walking its tree afresh. Returns how many memo
    entries were reused."""
    rng = random.Random(seed)
    lines = text.splitlines(keepends=True)
    source = text.encode()
    prev = parse_units(source, language, path)
    reused = 0
    for _ in range(steps):
        new_lines = _line_edit(lines, rng)
        new = "".join(new_lines).encode()
        hunks = [
            (i1, i2 - i1, j1, j2 - j1)
            for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, lines, new_lines).get_opcodes()
            if tag != "equal"
        ]
        starts = line_starts(new)
        edited = edit_tree(prev.tree, prev.memo, source, line_starts(source), new, starts, hunks)
        assert edited is not None and edited[1] is prev.memo
        got = parse_units(new, language, path, starts=starts, base=edited[0], reuse=edited[1])
        fresh = parse_units(new, language, path, tree=got.tree)
        assert rows(got.units) == rows(fresh.units)
        assert [u.text for u in got.units] == [u.text for u in fresh.units]
        assert_texts(new, got.units)
        reused += sum(key in prev.memo for key in got.memo or {})
        lines, source, prev = new_lines, new, got
    return reused


@pytest.mark.parametrize("fixture", FIXTURES.values(), ids=FIXTURES.keys())
def test_incremental_reparse_replays_units_exactly(fixture: Fixture) -> None:
    """Units replayed from the previous version equal a fresh walk of the same tree, through
    40 random line edits (broken code included). Whether an incrementally parsed tree equals a
    parse from scratch is tree-sitter's affair: for broken code its error recovery can differ."""
    _edit_chain(fixture.source, fixture.language, fixture.path, 40)


def test_incremental_reparse_replays_most_units() -> None:
    items = "".join(
        f"/// Item {i}.\n#[derive(Debug)]\npub struct Item{i} {{\n    v: u64,\n}}\n\n"
        f"impl Item{i} {{\n    /// Value.\n    pub fn v(&self) -> u64 {{\n        self.v + {i}\n"
        f"    }}\n\n    #[test]\n    fn t{i}() {{}}\n}}\n\n"
        for i in range(40)
    )
    assert _edit_chain(items, "Rust", "gen.rs", 30) > 30 * 40
