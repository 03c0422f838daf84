"""Tree-sitter access, a shared layer below the stages that parse code (chunk's units, eval's
identifier metrics, training's parse check of samples): one table from repolm's languages to
tree-sitter grammars, and one cache of parsers, so a grammar is loaded once per process and
every stage agrees on which languages have one.

- `languages`: `GRAMMARS` (repolm language -> grammar), `grammar_name` (a file's grammar, the
  `.tsx` dialect included), `find_grammar` (any spelling of a language or grammar name);
- `parsers`: `parser` (the cached parser of a grammar), `parser_for` (of a language name),
  `parses` (whether generated code is a valid prefix of a file).

tree-sitter itself is imported when a parser is first asked for. What a grammar's nodes mean
for chunking stays with chunk (`repolm.chunk.grammars`).
"""

from repolm.syntax.languages import GRAMMARS, find_grammar, grammar_name
from repolm.syntax.parsers import parser, parser_for, parses

__all__ = ["GRAMMARS", "find_grammar", "grammar_name", "parser", "parser_for", "parses"]
