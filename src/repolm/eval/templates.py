"""Suite templates: placeholders such as `{module}` or `{top_file}` in a suite's tests,
filled from a run's repository facts (`repolm.eval.facts`), so that the built-in `reasoning`
suite asks about the user's own repository. A test that needs a fact the repository lacks
is dropped, with the reason kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from repolm.errors import RepolmError
from repolm.eval.facts import PLACEHOLDERS, RepoFacts, placeholder_values
from repolm.eval.rubric import Concept, Suite, Test

_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_]\w*)\}\}|\{([A-Za-z_]\w*)\}")


class _Missing(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def placeholders_of(test: Test) -> list[str]:
    return [
        m.group(2)
        for text in _texts(test.model_dump())
        for m in _PLACEHOLDER.finditer(text)
        if m.group(2)
    ]


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _texts(v)
    elif isinstance(value, list):
        for v in value:
            yield from _texts(v)


def placeholders_in(suite: Suite) -> set[str]:
    """The placeholders a suite uses (none: it needs no repository facts)."""
    return {name for t in suite.tests for name in placeholders_of(t)}


def _sub(text: str, values: Mapping[str, str], regex: bool = False) -> str:
    """`text` with its placeholders filled (regex-escaped inside `re:` terms) and `{{x}}`
    unescaped; raises _Missing for a placeholder with no value."""

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return "{" + m.group(1) + "}"
        if m.group(2) not in values:
            raise _Missing(m.group(2))
        value = values[m.group(2)]
        return re.escape(value) if regex else value

    return _PLACEHOLDER.sub(one, text)


def _term(text: str, values: Mapping[str, str]) -> str:
    return _sub(text, values, regex=text.startswith("re:"))


T = TypeVar("T")
R = TypeVar("R")


def _filled(items: Iterable[T], fill_one: Callable[[T], R]) -> list[R]:
    """Each item filled, those that need a missing fact left out."""
    out = []
    for item in items:
        try:
            out.append(fill_one(item))
        except _Missing:
            continue
    return out


def _fill_concept(c: Concept, values: Mapping[str, str]) -> dict[str, Any]:
    """The concept filled; a synonym that needs a missing fact is left out (the name must fill)."""
    synonyms = _filled(c.synonyms, lambda s: _term(s, values))
    name = _term(c.name, values)
    return {
        "name": name,
        "synonyms": [s for s in dict.fromkeys(synonyms) if s != name],
        "weight": c.weight,
    }


def _fill_test(test: Test, values: Mapping[str, str]) -> dict[str, Any]:
    """The test filled. Its prompt and required concepts' names must fill (else _Missing);
    a forbidden claim or reference answer that needs a missing fact is left out."""
    r = test.rubric
    forbidden = _filled(r.forbidden, lambda c: _fill_concept(c, values))
    try:
        reference = _sub(r.reference, values) if r.reference is not None else None
    except _Missing:
        reference = None
    return {
        "id": test.id,
        "category": test.category,
        "prompt": _sub(test.prompt, values),
        "rubric": {
            "required": [_fill_concept(c, values) for c in r.required],
            "forbidden": forbidden,
            "reference": reference,
            "weights": r.weights.model_dump(),
        },
    }


def fill(suite: Suite, facts: RepoFacts | None) -> Suite:
    """The suite with its placeholders filled from `facts`. A test whose prompt or required
    concepts need a fact the repository lacks is dropped, its reason kept in `Suite.dropped`."""
    values = placeholder_values(facts) if facts is not None else {}
    kept: list[Test] = []
    dropped = dict(suite.dropped)
    for test in suite.tests:
        try:
            kept.append(Test.model_validate(_fill_test(test, values)))
        except _Missing as e:
            why = PLACEHOLDERS.get(e.name, "")
            dropped[test.id] = f"needs {{{e.name}}} ({why}): not found in this repository"
        except ValidationError as e:
            msg = str(e.errors()[0]["msg"]).removeprefix("Value error, ")
            dropped[test.id] = f"filled, it is no longer valid: {msg}"
    if not kept:
        raise RepolmError(
            f"no test of suite {suite.name} applies to this repository",
            "; ".join(f"{k}: {v}" for k, v in list(dropped.items())[:3]),
        )
    return Suite(
        name=suite.name,
        description=suite.description,
        version=suite.version,
        tests=kept,
        dropped=dropped,
    )
