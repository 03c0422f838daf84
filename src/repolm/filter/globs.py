"""The user's globs (`filter.include`, `filter.exclude`): gitignore-like patterns as regexes."""

from __future__ import annotations

import re


def glob_to_regex(pattern: str) -> str:
    """A gitignore-like glob as a regex over repo-relative POSIX paths, for `re.fullmatch`.

    `*` and `?` stay within a path segment; `**` as a whole segment spans any number of them
    (`**/x`, `a/**/b`, `a/**`); `[...]` is a character class (`[!...]` or `[^...]` negated); `\\`
    escapes. A pattern without a `/` (other than a trailing one) matches a file or directory name
    at any depth; otherwise it is anchored at the repository root (a leading `/` is dropped). A
    matching directory matches every path below it, so `docs` and `docs/` both cover `docs/a.md`;
    a trailing `/` matches directories only."""
    if not pattern or pattern in ("/", "!") or pattern.startswith("!"):
        raise ValueError(f"unsupported glob {pattern!r} (empty, or a '!' negation)")
    dir_only = pattern.endswith("/")
    body = pattern.rstrip("/")
    anchored = "/" in body
    body = body.lstrip("/")
    segments = body.split("/")
    out: list[str] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            # A trailing `**` needs something below it (`a/**` covers a/x, not a itself).
            out.append(".+" if last else "(?:.*/)?")
        else:
            out.append(_segment_regex(seg) + ("" if last else "/"))
    prefix = "" if anchored else "(?:.*/)?"
    # After a trailing `**` (already `.+`) a directory suffix would be redundant.
    suffix = "/.+" if dir_only else "" if segments[-1] == "**" else "(?:/.+)?"
    return prefix + "".join(out) + suffix


def _segment_regex(seg: str) -> str:
    """One path segment of a glob: `*`, `?`, `[...]` and `\\`-escapes never cross a `/`."""
    out: list[str] = []
    i, n = 0, len(seg)
    while i < n:
        c = seg[i]
        i += 1
        if c == "*":
            while i < n and seg[i] == "*":  # `a**b` is `a*b`, as in gitignore
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i < n:
            out.append(re.escape(seg[i]))
            i += 1
        elif c == "[":
            cls, i = _class_regex(seg, i)
            out.append(cls)
        else:
            out.append(re.escape(c))
    return "".join(out)


def _class_regex(seg: str, i: int) -> tuple[str, int]:
    """The character class opening at seg[i - 1] == '[', and the index after it; an unclosed
    `[` is a literal. A class never matches `/`."""
    j = i
    negate = j < len(seg) and seg[j] in "!^"
    if negate:
        j += 1
    start = j
    members: list[str] = []
    while j < len(seg) and (seg[j] != "]" or j == start):  # a leading `]` is a member
        if seg[j] == "\\" and j + 1 < len(seg):
            j += 1
            members.append(re.escape(seg[j]))
        elif seg[j] == "-" and members and j + 1 < len(seg) and seg[j + 1] != "]":
            members.append("-")  # a range; a leading or trailing `-` is a literal
        else:
            members.append(re.escape(seg[j]))
        j += 1
    if j >= len(seg):
        return re.escape("["), i
    cls = "".join(members)
    return ("[^/" + cls + "]" if negate else "(?!/)[" + cls + "]"), j + 1


def compile_globs(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{glob_to_regex(p)})" for p in patterns))
