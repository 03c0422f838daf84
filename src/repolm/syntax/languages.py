"""Which tree-sitter grammar parses each of repolm's languages (`repolm.mine.languages`).

Only grammars checked to parse arbitrary text are listed: some grammars of the language pack
never return on some inputs (cobol on "x"), so a language without an entry here is not parsed.
"""

from __future__ import annotations

# repolm language -> tree-sitter-language-pack grammar. The first ten have chunking tables
# (`repolm.chunk.grammars`); the rest are parsed by eval and training's samples only.
GRAMMARS: dict[str, str] = {
    "Rust": "rust",
    "Python": "python",
    "Go": "go",
    "JavaScript": "javascript",
    "TypeScript": "typescript",
    "Java": "java",
    "C": "c",
    "C++": "cpp",
    "C#": "csharp",
    "Kotlin": "kotlin",
    "Shell": "bash",
    "Ruby": "ruby",
    "PHP": "php",
    "Scala": "scala",
    "Swift": "swift",
    "Lua": "lua",
    "JSON": "json",
    "YAML": "yaml",
    "TOML": "toml",
    "HTML": "html",
    "CSS": "css",
    "Zig": "zig",
    "Elixir": "elixir",
    "Haskell": "haskell",
    "SQL": "sql",
    "Objective-C": "objc",
    "Protocol Buffers": "proto",
    "Makefile": "make",
    "TeX": "latex",
    "Dart": "dart",
    "R": "r",
    "Julia": "julia",
    "Perl": "perl",
}
TSX = "tsx"  # TypeScript with JSX: a dialect of its own, picked by the file's extension

# Every accepted spelling, lower-cased: repolm's names, the grammars' own names, and
# tree-sitter's older name for C#.
_SPELLINGS: dict[str, str] = {
    **{g: g for g in (*GRAMMARS.values(), TSX)},
    **{language.lower(): g for language, g in GRAMMARS.items()},
    "c_sharp": "csharp",
}


def grammar_name(language: str | None, path: str = "") -> str | None:
    """The grammar of a file in a repolm language (exactly as `repolm.mine.languages` names
    it); `.tsx` files need TypeScript's JSX dialect. None without a grammar."""
    if language == "TypeScript" and path.endswith(".tsx"):
        return TSX
    return GRAMMARS.get(language or "")


def find_grammar(name: str) -> str | None:
    """The grammar for a repolm language name or a tree-sitter grammar name, in any case
    ("Python", "C++", "rust", "tsx"); None without a grammar."""
    return _SPELLINGS.get(name.lower())
