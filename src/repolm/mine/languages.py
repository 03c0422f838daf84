"""Language of a file from its name: extension first, then well-known file names."""

from __future__ import annotations

import posixpath

_EXTENSIONS = {
    "Rust": ["rs"],
    "Python": ["py", "pyi", "pyx", "pxd"],
    "Go": ["go"],
    "JavaScript": ["js", "mjs", "cjs", "jsx"],
    "TypeScript": ["ts", "tsx", "mts", "cts"],
    "Java": ["java"],
    "Kotlin": ["kt", "kts"],
    "Scala": ["scala", "sc"],
    "C": ["c", "h"],
    "C++": ["cc", "cpp", "cxx", "c++", "hh", "hpp", "hxx", "h++", "ipp", "inl", "tpp"],
    "C#": ["cs"],
    "Objective-C": ["m", "mm"],
    "Swift": ["swift"],
    "Ruby": ["rb", "rake", "gemspec"],
    "PHP": ["php"],
    "Perl": ["pl", "pm"],
    "Lua": ["lua"],
    "R": ["r"],
    "Julia": ["jl"],
    "Haskell": ["hs", "lhs"],
    "OCaml": ["ml", "mli"],
    "Elixir": ["ex", "exs"],
    "Erlang": ["erl", "hrl"],
    "Clojure": ["clj", "cljs", "cljc", "edn"],
    "Dart": ["dart"],
    "Zig": ["zig"],
    "Nim": ["nim"],
    "Solidity": ["sol"],
    "Move": ["move"],
    "Cairo": ["cairo"],
    "Vyper": ["vy"],
    "Shell": ["sh", "bash", "zsh", "fish", "ksh"],
    "PowerShell": ["ps1", "psm1"],
    "Batchfile": ["bat", "cmd"],
    "SQL": ["sql"],
    "HTML": ["html", "htm", "xhtml"],
    "CSS": ["css", "scss", "sass", "less"],
    "Vue": ["vue"],
    "Svelte": ["svelte"],
    "Markdown": ["md", "markdown", "mdx"],
    "reStructuredText": ["rst"],
    "AsciiDoc": ["adoc", "asciidoc"],
    "TeX": ["tex", "sty", "cls"],
    "JSON": ["json", "jsonc", "json5"],
    "YAML": ["yml", "yaml"],
    "TOML": ["toml"],
    "XML": ["xml", "xsd", "xsl", "svg", "plist"],
    "INI": ["ini", "cfg", "conf", "properties"],
    "Protocol Buffers": ["proto"],
    "GraphQL": ["graphql", "gql"],
    "Thrift": ["thrift"],
    "CMake": ["cmake"],
    "Makefile": ["mk", "mak"],
    "Dockerfile": ["dockerfile"],
    "Nix": ["nix"],
    "HCL": ["tf", "tfvars", "hcl"],
    "Groovy": ["groovy", "gradle"],
    "Assembly": ["s", "asm"],
    "WebAssembly": ["wat", "wast"],
    "CUDA": ["cu", "cuh"],
    "Fortran": ["f", "f90", "f95", "f03", "for"],
    "D": ["d"],
    "V": ["v"],
    "Verilog": ["sv", "svh", "vh"],
    "VHDL": ["vhd", "vhdl"],
    "Jupyter Notebook": ["ipynb"],
    "Text": ["txt"],
    "CSV": ["csv", "tsv"],
}

_FILENAMES = {
    "Makefile": "Makefile",
    "GNUmakefile": "Makefile",
    "makefile": "Makefile",
    "Dockerfile": "Dockerfile",
    "Containerfile": "Dockerfile",
    "CMakeLists.txt": "CMake",
    "Cargo.lock": "TOML",
    "Gemfile": "Ruby",
    "Rakefile": "Ruby",
    "Vagrantfile": "Ruby",
    "BUILD": "Starlark",
    "BUILD.bazel": "Starlark",
    "WORKSPACE": "Starlark",
    "Jenkinsfile": "Groovy",
    "Justfile": "Just",
    "justfile": "Just",
    ".bashrc": "Shell",
    ".zshrc": "Shell",
    ".gitignore": "Ignore List",
    ".dockerignore": "Ignore List",
    ".gitattributes": "Git Attributes",
    ".gitmodules": "INI",
    ".editorconfig": "INI",
    "LICENSE": "Text",
    "COPYING": "Text",
}

EXTENSION_LANGUAGE = {ext: lang for lang, exts in _EXTENSIONS.items() for ext in exts}


def detect_language(path: str) -> str | None:
    """'src/lib.rs' -> 'Rust'; None when the name says nothing."""
    name = posixpath.basename(path)
    lang = _FILENAMES.get(name)
    if lang is not None:
        return lang
    stem, dot, ext = name.rpartition(".")
    if not dot:
        return "Dockerfile" if name.lower().startswith("dockerfile") else None
    if not stem:  # dotfiles such as '.bashrc' have no extension
        return None
    return EXTENSION_LANGUAGE.get(ext.lower()) or (
        "Dockerfile" if stem.lower() == "dockerfile" else None
    )
