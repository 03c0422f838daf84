"""Pure builders of the dataset's documents: the text of each sample kind, as segments.

A document is a list of segments: `Tok` for one of repolm's special tokens (always a single id,
inserted by id, so a file that happens to contain `<|endoftext|>` as text is encoded as text),
and `str` for text. Nothing here reads files or tokenizes; the stage does that at the edge.
"""

from __future__ import annotations

import random
import re
from datetime import datetime
from typing import NamedTuple

from repolm.formats import special as sp


class Tok(NamedTuple):
    """A special token inside a document."""

    token: str


Segment = Tok | str

IMPLEMENT_PROMPT = "Implement this change.\n"
DESCRIBE_PROMPT = "Write the commit message for this change.\n"


# -- commit records -------------------------------------------------------------------------


def commit_header(author: str | None, when: datetime, message: str) -> list[Segment]:
    """`<|commit|><|author|>NAME<|date|>ISO<|message|>MESSAGE\\n` (author left out when the
    filter dropped it)."""
    out: list[Segment] = [Tok(sp.COMMIT)]
    if author:
        out += [Tok(sp.AUTHOR), author]
    out += [Tok(sp.DATE), when.strftime("%Y-%m-%dT%H:%M:%SZ"), Tok(sp.MESSAGE), message + "\n"]
    return out


def file_head(
    path: str,
    old_path: str | None,
    status: str,
    module: str,
    change_types: list[str],
    omitted: tuple[int, int] | None = None,
) -> list[Segment]:
    """A file's part of a commit record before its hunks: path (and what happened to it),
    module, and one token per change type of its units; for a diff too large to show, the
    (added, deleted) line counts that stand in for it."""
    line = path
    if status == "renamed" and old_path and old_path != path:
        line = f"{path} (renamed from {old_path})"
    elif status in ("added", "deleted", "copied"):
        line = f"{path} ({status})"
    out: list[Segment] = [Tok(sp.FILE), line + "\n"]
    if module:
        out += [Tok(sp.MODULE), module + "\n"]
    out += [Tok(sp.change_token(t)) for t in change_types]
    if omitted:
        out.append(f"(+{omitted[0]} -{omitted[1]} lines; the diff is too large to show)\n")
    return out


def omit_large_diff(
    patch: str | None, additions: int | None, deletions: int | None, max_diff: int
) -> tuple[str | None, tuple[int, int] | None]:
    """A file diff as the data shows it: (patch, None), or for a patch over `max_diff` bytes
    (`0`: no limit) (None, its (added, deleted) line counts), which `file_head` writes instead:
    generated files and data dumps would only be fragments without context once cut into
    sequences."""
    # (a UTF-8 character is at most 4 bytes: most patches skip the encode)
    if max_diff and patch and len(patch) * 4 > max_diff and len(patch.encode()) > max_diff:
        return None, (additions or 0, deletions or 0)
    return patch, None


def hunks(patch: str | None) -> list[str]:
    """A unified diff's hunks (each from its `@@` line), its `diff --git`/`index`/`---`/`+++`
    header dropped: the path is already in the record."""
    if not patch:
        return []
    starts = [m.start() for m in _HUNK.finditer(patch)]
    if not starts:
        return []
    return [patch[a:b] for a, b in zip(starts, [*starts[1:], len(patch)], strict=True)]


_HUNK = re.compile(r"^@@ ", re.M)


def module_of(path: str, language: str | None) -> str:
    """The module a file belongs to, in its language's notation where there is one:
    `repolm.dataset.stage` (Python), `build::stage` (Rust), `pkg/sub` (Go), else the directory."""
    stem, _, ext = path.rpartition(".")
    if not stem:
        stem = path
    parts = stem.split("/")
    if language == "Python":
        parts = [p for p in parts if p not in ("src", "lib")]
        if parts and parts[-1] == "__init__":
            parts = parts[:-1]
        return ".".join(parts)
    if language == "Rust":
        if "src" in parts:
            parts = parts[parts.index("src") + 1 :]
        if parts and parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        return "::".join(["crate", *parts]) if parts else "crate"
    if language == "Java" and "java" in parts:
        return ".".join(parts[parts.index("java") + 1 : -1])
    return "/".join(parts[:-1])


# -- file documents -------------------------------------------------------------------------


def file_document_header(path: str, language: str | None) -> list[Segment]:
    """`<|file|>PATH\n<|module|>MODULE\n`: what opens a file of the snapshot (module left out
    when the path has none)."""
    out: list[Segment] = [Tok(sp.FILE), path + "\n"]
    module = module_of(path, language)
    return out + ([Tok(sp.MODULE), module + "\n"] if module else [])


# -- fill-in-the-middle ---------------------------------------------------------------------


def fim(text: str, rng: random.Random, spm_rate: float) -> tuple[list[Segment], str]:
    """Fill-in-the-middle at character level: two cut points uniform over the text. PSM:
    `<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>M`; SPM (the variant of Bavarian et al. that
    bigcode trains): `<|fim_prefix|><|fim_suffix|>S<|fim_middle|>PM`, with P and M kept as
    separate segments so both orders see the same token boundaries. Returns (segments, mode)."""
    a, b = sorted((rng.randint(0, len(text)), rng.randint(0, len(text))))
    mode = "spm" if rng.random() < spm_rate else "psm"
    return fim_segments(text[:a], text[a:b], text[b:], mode), mode


def fim_segments(prefix: str, middle: str, suffix: str, mode: str = "psm") -> list[Segment]:
    """One FIM sample's segments in `mode` (psm or spm), as `fim` describes them."""
    if mode == "spm":
        return [Tok(sp.FIM_PREFIX), Tok(sp.FIM_SUFFIX), suffix, Tok(sp.FIM_MIDDLE), prefix, middle]
    return [Tok(sp.FIM_PREFIX), prefix, Tok(sp.FIM_SUFFIX), suffix, Tok(sp.FIM_MIDDLE), middle]


# -- prompts in the training formats ---------------------------------------------------------


def fim_prompt(path: str, language: str | None, before: str, after: str) -> list[Segment]:
    """`FILE HEADER <|fim_prefix|>BEFORE<|fim_suffix|>AFTER<|fim_middle|>`: a file sample in
    PSM order as trained, its middle left for the model."""
    return [*file_document_header(path, language), *fim_segments(before, "", after)[:-1]]


def plain_prompt(path: str, language: str | None, before: str) -> list[Segment]:
    """The file document up to the cursor, its trailing whitespace left for the model."""
    return [*file_document_header(path, language), before.rstrip()]


# -- recency --------------------------------------------------------------------------------


def recency_weight(age_days: float, half_life_days: float, floor: float) -> float:
    """1 at the cutoff, halving every `half_life_days` towards `floor`; 1 when turned off."""
    if half_life_days <= 0:
        return 1.0
    return floor + (1.0 - floor) * 0.5 ** (max(age_days, 0.0) / half_life_days)


# -- repository Q&A -------------------------------------------------------------------------


class QA(NamedTuple):
    question: str
    answer: str


MIN_ANSWER_CHARS = 24


def qa_pairs(
    kind: str,
    name: str,
    qualified_name: str,
    path: str,
    language: str | None,
    start_line: int,
    end_line: int,
    text: str,
) -> list[QA]:
    """Questions a unit of the snapshot answers: a Markdown section what the docs say about its
    heading; a module doc what the module is for; a documented function or type what it does
    and where it is."""
    if kind == "section":
        body = text.split("\n", 1)[1].strip() if text.lstrip().startswith("#") else text.strip()
        if len(body) < MIN_ANSWER_CHARS:
            return []
        return [QA(f'What does the documentation in {path} say about "{qualified_name}"?', body)]
    doc = doc_comment(text, language)
    if len(doc) < MIN_ANSWER_CHARS:
        return []
    if kind == "module":
        module = module_of(path, language) or path
        return [QA(f"What is {module} ({path}) for?", doc)]
    if kind not in ("function", "method", "type", "test"):
        return []
    what = {"function": "function", "method": "method", "type": "type", "test": "test"}[kind]
    return [
        QA(f"What does the {what} `{qualified_name}` in {path} do?", doc),
        QA(
            f"Where is `{qualified_name}` defined?",
            f"`{qualified_name}` is a {what} in {path}, lines {start_line}-{end_line}.",
        ),
    ]


_COMMENT_LINE = re.compile(r"^\s*(///?!?|//|#(?![\[!])|--|\*+/?|/\*+!?)\s?(.*?)\s*(\*/)?\s*$")
_ATTRIBUTE = re.compile(r"^\s*(#\[|#!\[|@\w)")
_DOCSTRING = re.compile(r"""^\s*[rRuUbB]?("{3}|'{3})(.*?)\1""", re.S)


def doc_comment(text: str, language: str | None) -> str:
    """The doc comment of a unit: the comment lines directly above it (Rust `///`, Go `//`,
    Javadoc/JSDoc `/** */`, C/C++ comments...), or a Python docstring. Comment markers are
    stripped; attributes, decorators and annotations between the comment and the code are
    skipped."""
    if language == "Python":
        return _docstring(text)
    lines: list[str] = []
    for line in text.split("\n"):
        if _ATTRIBUTE.match(line):
            continue
        m = _COMMENT_LINE.match(line)
        if not m or not line.strip():
            break
        lines.append(m.group(2))
    return "\n".join(lines).strip()


def _docstring(text: str) -> str:
    """The docstring after the first line ending a `def`/`class` header."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if _ATTRIBUTE.match(line) or not line.rstrip().endswith(":"):
            continue
        m = _DOCSTRING.match("\n".join(lines[i + 1 :]))
        if not m:
            return ""
        body = [s.strip() for s in m.group(2).strip().split("\n")]
        return "\n".join(body).strip()
    return ""
