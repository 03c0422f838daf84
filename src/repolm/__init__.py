"""repolm: a repository and its whole git history, turned into a language model of that codebase."""

__version__ = "0.1.0"
