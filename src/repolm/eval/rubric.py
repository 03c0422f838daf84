"""The behavioural suite format (docs/suites.md): a suite of tests, each a question with a
rubric of concepts an answer must mention, claims it must not make, an optional reference
answer and the weights that add them up. Validated on construction, unknown keys rejected.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_term(term: str) -> str:
    if term.startswith("re:"):
        try:
            re.compile(term[3:])
        except re.error as e:
            raise ValueError(f"invalid regular expression {term[3:]!r}: {e}") from None
    elif not term.strip() or term.strip() == "*":
        raise ValueError("a term must not be empty")
    return term


class Concept(_Strict):
    """Something an answer mentions (or, in `forbidden`, a claim it makes): present when `name`
    or a synonym occurs, case-insensitive, as whole words. A term `re:PATTERN` is a Python
    regular expression searched case-insensitively; a trailing `*` matches any word ending
    (`cach*`); a space matches any run of spaces, hyphens or underscores."""

    name: str = Field(description="What the concept is called in scores; also a term.")
    synonyms: list[str] = Field(default=[], description="Other terms that count as the concept.")
    weight: float = Field(default=1.0, gt=0, description="Relative weight among its rubric's.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_term(v)

    @field_validator("synonyms")
    @classmethod
    def _synonyms(cls, v: list[str]) -> list[str]:
        return [_check_term(s) for s in v]

    @property
    def terms(self) -> list[str]:
        return [self.name, *self.synonyms]

    def find(self, text: str) -> str | None:
        """The first text in `text` that one of the terms matches (terms in order), or None."""
        for term in self.terms:
            m = _pattern(term).search(text)
            if m:
                return m.group(0)
        return None


@lru_cache(maxsize=8192)
def _pattern(term: str) -> re.Pattern[str]:
    if term.startswith("re:"):
        return re.compile(term[3:], re.I)
    word = term.strip()
    prefix = word.endswith("*")
    word = word[:-1].strip() if prefix else word
    body = r"[\s_-]+".join(re.escape(w) for w in word.split())
    start = r"(?<!\w)" if re.match(r"\w", word) else ""
    end = r"\w*" if prefix else (r"(?!\w)" if re.search(r"\w$", word) else "")
    return re.compile(start + body + end, re.I)


def _concepts(value: Any) -> Any:
    """A bare string is a concept of that name with no synonyms."""
    if isinstance(value, list):
        return [{"name": v} if isinstance(v, str) else v for v in value]
    return value


class Weights(_Strict):
    """How a rubric's parts add up (docs/suites.md has the formula)."""

    concepts: float = Field(default=70.0, ge=0, description="Points for required concepts.")
    reference: float = Field(default=30.0, ge=0, description="Points for the reference answer.")
    penalty: float = Field(default=25.0, ge=0, description="Points off per forbidden claim.")


class Rubric(_Strict):
    """How an answer to one test is scored."""

    required: list[Concept] = Field(default=[], description="Concepts a good answer mentions.")
    forbidden: list[Concept] = Field(default=[], description="Claims a good answer never makes.")
    reference: str | None = Field(default=None, description="A model answer, for ROUGE-L.")
    weights: Weights = Field(default_factory=Weights)

    @field_validator("required", "forbidden", mode="before")
    @classmethod
    def _as_concepts(cls, v: Any) -> Any:
        return _concepts(v)

    @model_validator(mode="after")
    def _scorable(self) -> Rubric:
        if self.reference is not None and not self.reference.strip():
            raise ValueError("reference is empty: give an answer or leave the key out")
        if not self.required and self.reference is None:
            raise ValueError("a rubric needs required concepts, a reference answer, or both")
        both = self.required and self.reference is not None
        if both and self.weights.concepts + self.weights.reference <= 0:
            raise ValueError("weights.concepts + weights.reference must be positive")
        for part in (self.required, self.forbidden):
            seen = Counter(c.name.lower() for c in part)
            twice = sorted(n for n, k in seen.items() if k > 1)
            if twice:
                raise ValueError(f"concept {twice[0]!r} is listed twice")
        return self


class Test(_Strict):
    """One question and its rubric."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Unique in the suite.")
    category: str = Field(min_length=1, description="Scores are averaged per category.")
    prompt: str = Field(min_length=1, description="The question put to the model.")
    rubric: Rubric


class Suite(_Strict):
    """A named set of tests."""

    name: str = Field(min_length=1)
    description: str = ""
    version: str = "1"
    tests: list[Test] = Field(min_length=1)
    dropped: dict[str, str] = Field(
        default={}, description="Set by `fill`: tests left out (id -> why). Not written by hand."
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) else v

    @model_validator(mode="after")
    def _unique_ids(self) -> Suite:
        seen = Counter(t.id for t in self.tests)
        twice = sorted(i for i, k in seen.items() if k > 1)
        if twice:
            raise ValueError(f"test id {twice[0]!r} is used twice")
        return self

    def categories(self) -> list[str]:
        """Categories in order of first appearance."""
        return list(dict.fromkeys(t.category for t in self.tests))
