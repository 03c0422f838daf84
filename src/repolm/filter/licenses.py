"""Which licenses a repository and its files declare, and whether a deny list rules them out.

    detect_license(open("LICENSE").read())           # -> "MIT"
    spdx_header(b"// SPDX-License-Identifier: MIT OR Apache-2.0\n")  # -> "MIT OR Apache-2.0"
    is_denied("MIT OR GPL-3.0-only", GPL_FAMILY)     # -> False: MIT may be chosen

License texts are recognised by distinctive phrases (title lines, key sentences) rather than by
comparison with the full texts: the phrases survive rewrapping, copyright lines, Markdown and
comment markers, because text and phrases are both reduced to lowercase words first.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import NamedTuple

from repolm.mine.languages import detect_language

__all__ = ["GPL_FAMILY", "detect_license", "is_denied", "license_files", "spdx_header"]

# The deny list of the public-corpora preset: the GNU copyleft family. LGPL is in it although it
# is "weak" copyleft: its conditions bind copies and modifications of the library's own source,
# and a dataset row *is* a copy of that source (the permissive-only corpora, e.g. The Stack, drop
# LGPL too). File-level copyleft (MPL-2.0, EPL-2.0) is not GNU's family and is left to callers.
GPL_FAMILY: tuple[str, ...] = ("GPL-*", "LGPL-*", "AGPL-*")

IdTest = Callable[[str], bool]  # whether one license id is denied


class LicenseRule(NamedTuple):
    """A license recognised when all phrases of any one of its forms occur in the text. Forms
    are typically the full text's title and the short notice that points to it. `versioned`:
    a GNU license whose id gets `-only` or `-or-later` (see `_gnu_suffix`)."""

    spdx: str
    forms: tuple[tuple[str, ...], ...]
    versioned: bool = False


def _words(text: str) -> str:
    """Lowercase words separated by single spaces, padded with a space at both ends so that a
    phrase matches whole words only. "Version 2.0," and "version 2 0" become the same."""
    return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "


def _rule(spdx: str, *forms: tuple[str, ...], versioned: bool = False) -> LicenseRule:
    return LicenseRule(spdx, tuple(tuple(_words(p) for p in form) for form in forms), versioned)


_GNU = "as published by the free software foundation"
_BSD = (
    "redistribution and use in source and binary forms, with or without modification, are permitted"
)
_ISC_GRANT = "distribute this software for any purpose with or without fee is hereby granted"

# Most specific first, the tie-break at equal positions: GNU texts mention one another (GPL-3.0
# names the Affero and Lesser licenses in its body, LGPL-3.0 incorporates GPL-3.0), ISC's grant
# contains 0BSD's, and a BSD-3-Clause text contains BSD-2-Clause's.
LICENSE_RULES: tuple[LicenseRule, ...] = (
    _rule(
        "AGPL-3.0",
        ("gnu affero general public license version 3, 19 november 2007",),
        (f"gnu affero general public license {_GNU}",),
    ),
    _rule(
        "LGPL-2.1",
        ("gnu lesser general public license version 2.1, february 1999",),
        (f"gnu lesser general public license {_GNU}", "version 2.1"),
    ),
    _rule(
        "LGPL-3.0",
        ("gnu lesser general public license version 3, 29 june 2007",),
        (f"gnu lesser general public license {_GNU}", "version 3"),
    ),
    _rule(
        "LGPL-2.0",
        ("gnu library general public license version 2, june 1991",),
        (f"gnu library general public license {_GNU}",),
    ),
    _rule(
        "GPL-3.0",
        ("gnu general public license version 3, 29 june 2007",),
        (f"gnu general public license {_GNU}", "version 3 of the license"),
        versioned=True,
    ),
    _rule(
        "GPL-2.0",
        ("gnu general public license version 2, june 1991",),
        (f"gnu general public license {_GNU}", "version 2 of the license"),
        versioned=True,
    ),
    _rule("MPL-2.0", ("mozilla public license version 2.0",), ("mozilla public license, v. 2.0",)),
    _rule("EPL-2.0", ("eclipse public license - v 2.0",), ("eclipse public license version 2.0",)),
    _rule("EPL-1.0", ("eclipse public license - v 1.0",), ("eclipse public license version 1.0",)),
    _rule(
        "Apache-2.0",
        ("apache license version 2.0, january 2004",),
        ("licensed under the apache license, version 2.0",),
    ),
    _rule("CC0-1.0", ("cc0 1.0 universal",), ("creativecommons.org/publicdomain/zero/1.0",)),
    _rule("PSF-2.0", ("python software foundation license version 2",)),
    _rule("Unlicense", ("this is free and unencumbered software released into the public domain",)),
    _rule(
        "BSL-1.0",
        ("boost software license - version 1.0",),
        (
            "permission is hereby granted, free of charge, to any person or organization "
            "obtaining a copy of the software and accompanying documentation covered by this",
        ),
    ),
    _rule(
        "Zlib",
        (
            "the origin of this software must not be misrepresented",
            "altered source versions must be plainly marked as such",
        ),
    ),
    _rule("BSD-4-Clause", (_BSD, "all advertising materials mentioning features or use of this")),
    _rule("BSD-3-Clause", (_BSD, "may be used to endorse or promote products derived from this")),
    _rule("BSD-2-Clause", (_BSD,)),
    _rule(
        "ISC",
        (
            f"permission to use, copy, modify, and/or {_ISC_GRANT}, provided that the above "
            "copyright notice and this permission notice appear in all copies",
        ),
        (
            f"permission to use, copy, modify, and {_ISC_GRANT}, provided that the above "
            "copyright notice and this permission notice appear in all copies",
        ),
    ),
    _rule("0BSD", (f"permission to use, copy, modify, and/or {_ISC_GRANT}",)),
    _rule(
        "MIT",
        (
            "permission is hereby granted, free of charge, to any person obtaining a copy of this "
            "software",
            "the above copyright notice and this permission notice shall be included in all copies "
            "or substantial portions",
        ),
    ),
)

# The GNU texts end with an appendix whose sample notice says "or (at your option) any later
# version"; only an occurrence beyond that one is the project's own "or later" grant.
_OR_LATER = _words("or (at your option) any later version")
_GNU_APPENDIX = _words("how to apply these terms to your new")


def detect_license(text: str) -> str | None:
    """SPDX id of a LICENSE/COPYING file's text, or None when no known license is recognised.

    When several licenses occur (a project's license followed by its bundled dependencies'), the
    one that starts first is the project's; at the same position the more specific rule wins
    (BSD-3-Clause over BSD-2-Clause, ISC over 0BSD).

    GPL texts get `-or-later` when the project grants "or (at your option) any later version"
    beyond the sample notice of the license's own appendix, else `-only` (the bare GPL text
    names one version). LGPL and AGPL ids carry the version only (`LGPL-2.1`, `AGPL-3.0`)."""
    words = _words(text)
    best: tuple[int, int] | None = None  # (position, rule index) of the first license found
    for index, rule in enumerate(LICENSE_RULES):
        for form in rule.forms:
            if all(p in words for p in form):
                found = (words.find(form[0]), index)
                best = found if best is None else min(best, found)
    if best is None:
        return None
    rule = LICENSE_RULES[best[1]]
    return rule.spdx + _gnu_suffix(words) if rule.versioned else rule.spdx


def _gnu_suffix(words: str) -> str:
    grants = words.count(_OR_LATER) - (_GNU_APPENDIX in words)
    return "-or-later" if grants > 0 else "-only"


# -- license files -------------------------------------------------------------------------------

LICENSE_STEMS = ("unlicense", "license", "licence", "copying")
# A license file's name may carry a prose extension, or none that names a language
# (LICENSE-MIT, COPYING.LESSER); `license.py` and `license.go` are code.
_PROSE_LANGUAGES = frozenset({None, "Text", "Markdown", "reStructuredText", "AsciiDoc", "HTML"})
REUSE_DIR = "licenses"  # REUSE (reuse.software) keeps one text per license in LICENSES/


def license_files(paths: Iterable[str]) -> list[str]:
    """The repo's license files among paths, sorted: top-level LICENSE, LICENSE.md, LICENSE.txt,
    LICENSE-MIT, LICENSE-APACHE, COPYING, COPYING.LESSER, UNLICENSE, ... (any case), and the
    texts in a top-level REUSE `LICENSES/` directory. Lists of third-party licenses
    (LICENSE-THIRD-PARTY) are not the repo's own and are left out."""
    found = set()
    for path in paths:
        parts = path.split("/")
        top = len(parts) == 1 and _is_license_name(path)
        reuse = len(parts) == 2 and parts[0].lower() == REUSE_DIR and _is_prose(parts[1])
        if top or reuse:
            found.add(path)
    return sorted(found)


def _is_license_name(name: str) -> bool:
    lower = name.lower()
    stem = next((s for s in LICENSE_STEMS if lower.startswith(s)), None)
    if stem is None:
        return False
    rest = lower[len(stem) :]
    if rest and rest[0] not in "-_.0123456789":  # licensed.txt, licenses_test.go
        return False
    if "third" in rest or "3rd" in rest:
        return False
    return _is_prose(name)


def _is_prose(name: str) -> bool:
    return bool(name) and detect_language(name) in _PROSE_LANGUAGES


# -- SPDX headers and expressions ----------------------------------------------------------------

SPDX_HEADER_LINES = 30
# The expression: ids (letters, digits, `.`, `-`, `+`, `:` in DocumentRef), operators and
# parentheses; it stops at a comment's closer (`*/`, `-->`, `*)`, `"""`, ...).
_SPDX_LINE = re.compile(rb"SPDX-License-Identifier:[ \t]*([A-Za-z0-9.+:() \t-]+)")


def spdx_header(data: bytes) -> str | None:
    """The expression of an `SPDX-License-Identifier:` line in the first 30 lines (e.g.
    'MIT OR Apache-2.0'), whatever the comment syntax around it, else None."""
    head = b"\n".join(data.split(b"\n", SPDX_HEADER_LINES)[:SPDX_HEADER_LINES])
    m = _SPDX_LINE.search(head)
    if m is None:
        return None
    # `-->` and `--}` leave their dashes on the capture; no id ends with one.
    expression = " ".join(m.group(1).decode("ascii").split()).rstrip(" -")
    return expression or None


def is_denied(expression: str | None, deny: Iterable[str]) -> bool:
    """Whether an SPDX expression is denied: an `OR` is denied only if every alternative is, an
    `AND` if any part is; `A WITH exception` is judged by A. Deny entries are ids or globs on ids
    ('GPL-*'), compared case-insensitively, and `GPL-2.0` also denies `GPL-2.0-only`,
    `GPL-2.0-or-later` and `GPL-2.0+`. None (no license found) is not denied: that is the
    caller's policy. A malformed expression is denied if any id in it is."""
    if expression is None:
        return False
    return _is_denied(expression, tuple(deny))


@lru_cache(maxsize=4096)  # the same few expressions recur on every file of a repository
def _is_denied(expression: str, deny: tuple[str, ...]) -> bool:
    denied_id = _deny_matcher(deny)
    tokens = re.findall(r"[()]|[^\s()]+", expression)
    try:
        value, end = _parse_or(tokens, 0, denied_id)
        if end != len(tokens):
            raise ValueError("trailing tokens")
        return value
    except (ValueError, IndexError):
        ops = {"AND", "OR", "WITH", "(", ")"}
        return any(denied_id(t) for t in tokens if t.upper() not in ops)


@lru_cache(maxsize=64)
def _deny_matcher(deny: tuple[str, ...]) -> IdTest:
    if not deny:
        return lambda _id: False
    regex = re.compile("|".join(fnmatch.translate(p.upper()) for p in deny))

    def denied_id(license_id: str) -> bool:
        upper = license_id.upper()
        base = re.sub(r"(?:\+|-ONLY|-OR-LATER)$", "", upper)
        return regex.match(upper) is not None or regex.match(base) is not None

    return denied_id


# A recursive descent over SPDX's grammar: or := and (OR and)*; and := with (AND with)*;
# with := atom [WITH exception]; atom := id | "(" or ")". Each returns (denied, next index).


def _parse_or(tokens: list[str], i: int, denied_id: IdTest) -> tuple[bool, int]:
    value, i = _parse_and(tokens, i, denied_id)
    while i < len(tokens) and tokens[i].upper() == "OR":
        other, i = _parse_and(tokens, i + 1, denied_id)
        value = value and other
    return value, i


def _parse_and(tokens: list[str], i: int, denied_id: IdTest) -> tuple[bool, int]:
    value, i = _parse_with(tokens, i, denied_id)
    while i < len(tokens) and tokens[i].upper() == "AND":
        other, i = _parse_with(tokens, i + 1, denied_id)
        value = value or other
    return value, i


def _parse_with(tokens: list[str], i: int, denied_id: IdTest) -> tuple[bool, int]:
    token = tokens[i]
    if token == "(":
        value, i = _parse_or(tokens, i + 1, denied_id)
        if tokens[i] != ")":
            raise ValueError("unbalanced parentheses")
        i += 1
    elif token == ")" or token.upper() in ("AND", "OR", "WITH"):
        raise ValueError(f"unexpected {token!r}")
    else:
        value, i = denied_id(token), i + 1
    if i < len(tokens) and tokens[i].upper() == "WITH":
        if i + 1 >= len(tokens) or tokens[i + 1] in ("(", ")"):
            raise ValueError("WITH without an exception")
        i += 2  # the exception never changes the verdict on its license
    return value, i
