"""The tree-sitter layer: one language table that chunk and eval both read, one parser per
grammar, and the parse check of training's samples."""

from __future__ import annotations

import subprocess
import sys

import pytest

from repolm import syntax
from repolm.chunk.grammars import LANGUAGES, TABLES, grammar_for
from repolm.mine.languages import detect_language


def test_every_chunking_grammar_is_in_the_one_table() -> None:
    assert set(TABLES) <= {*syntax.GRAMMARS.values(), "tsx"}
    assert {lang: g.grammar for lang, g in LANGUAGES.items()} == {
        lang: syntax.GRAMMARS[lang] for lang in LANGUAGES
    }
    assert list(LANGUAGES)[:3] == ["Rust", "Python", "Go"]


def test_table_keys_are_repolm_languages() -> None:
    # each key is a name mine gives files, so chunk and eval look languages up the same way
    samples = {"Rust": "a.rs", "C++": "a.cpp", "C#": "a.cs", "Shell": "a.sh", "TeX": "a.tex"}
    for language, path in samples.items():
        assert detect_language(path) == language
        assert language in syntax.GRAMMARS


@pytest.mark.parametrize(
    ("name", "grammar"),
    [
        ("Python", "python"),
        ("python", "python"),
        ("C++", "cpp"),
        ("cpp", "cpp"),
        ("C#", "csharp"),
        ("c_sharp", "csharp"),
        ("Shell", "bash"),
        ("Protocol Buffers", "proto"),
        ("TSX", "tsx"),
        ("cobol", None),  # in the pack, but it never returns on some inputs
        ("Markdown", None),
    ],
)
def test_find_grammar_takes_any_spelling(name: str, grammar: str | None) -> None:
    assert syntax.find_grammar(name) == grammar


def test_grammar_name_is_exact_and_knows_tsx() -> None:
    assert syntax.grammar_name("TypeScript", "View.tsx") == "tsx"
    assert syntax.grammar_name("TypeScript", "view.ts") == "typescript"
    assert syntax.grammar_name("JavaScript", "View.tsx") == "javascript"
    assert syntax.grammar_name("rust", "a.rs") is None  # repolm's own names only
    assert syntax.grammar_name(None, "a") is None
    assert grammar_for("TypeScript", "View.tsx") is TABLES["tsx"]
    assert grammar_for("Ruby", "a.rb") is None  # parsed by eval, but no chunking tables


def test_one_parser_per_grammar() -> None:
    first = syntax.parser("python")
    assert first is not None and syntax.parser("python") is first
    assert syntax.parser_for("Python") is first
    assert syntax.parser_for("Markdown") is None


def test_a_grammar_that_cannot_load_is_none_and_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    from repolm.syntax import parsers

    monkeypatch.setattr(parsers, "_PARSERS", {})
    assert syntax.parser("no-such-grammar") is None
    assert parsers._PARSERS == {"no-such-grammar": None}


def test_parses_a_valid_prefix() -> None:
    assert syntax.parses("def f(x):\n    return [x,\n", "Python") is True  # brackets closed
    assert syntax.parses("def f(:\n    pass\n", "Python") is False
    assert syntax.parses('fn main() {\n    let s = "{";\n', "Rust") is True  # quoted brace
    assert syntax.parses("anything", "Markdown") is None
    assert syntax.parses("anything", None) is None


def test_importing_the_layer_loads_no_grammar() -> None:
    code = "import sys, repolm.syntax; print('tree_sitter_language_pack' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
