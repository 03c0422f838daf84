"""Behavioural suites: questions about a repository, each scored 0-100 by a rubric of concepts an
answer must mention, claims it must not make, and an optional reference answer.

A suite is a YAML file (docs/suites.md). The built-in `reasoning` suite is a template whose
placeholders (`{module}`, `{top_file}`, ...) are filled from a run's filter outputs, so its
questions are about the user's own repository. Scoring is deterministic and explains itself:
every score lists the concepts found and missing and the forbidden claims hit.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from repolm.errors import RepolmError
from repolm.eval.facts import PLACEHOLDERS, RepoFacts, placeholder_values, repo_facts
from repolm.lm import LoadedModel, generate

BUILTIN_DIR = Path(__file__).resolve().parent / "suites"
TEMPLATE_CATEGORIES = (
    "architecture",
    "cross_module",
    "edge_cases",
    "refactoring",
    "incentives",
    "performance",
)
# The build stage's Q&A format, so a model trained on repolm's pairs answers in kind.
PROMPT_FORMAT = "Question: {question}\nAnswer: "
HINT = "see docs/suites.md for the suite format"

# -- the suite format -------------------------------------------------------------------------


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


# -- loading ----------------------------------------------------------------------------------


def load_suite(path: Path) -> Suite:
    """A suite from a YAML file, its placeholders unfilled (see `fill`). Any problem is a
    RepolmError naming the file and the test or key at fault."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise RepolmError(f"cannot read suite {path}: {e}", "check the --suite path") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RepolmError(f"invalid YAML in suite {path}{where}", "fix the syntax") from None
    return _validate(data, str(path))


def builtin_suites() -> dict[str, Path]:
    """The suites shipped with repolm, by name (`reasoning`: the 30-test template)."""
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def suite_path(suite: str | Path) -> Path:
    """The file a suite names: a path, or a built-in suite's name."""
    path = Path(suite)
    return builtin_suites().get(str(suite), path) if not path.exists() else path


def find_suite(suite: str | Path) -> Path:
    """The file a suite names; a clear error when there is none."""
    path = suite_path(suite)
    if not path.exists():
        known = ", ".join(builtin_suites())
        raise RepolmError(f"suite not found: {suite}", f"give a YAML file or one of: {known}")
    return path


def resolve_suite(suite: str | Path, run_dir: Path | None = None) -> Suite:
    """A suite ready to run: from a file, or a built-in by name; its placeholders filled from
    `run_dir`'s filter outputs (needed only when it has placeholders)."""
    path = find_suite(suite)
    loaded = load_suite(path)
    if placeholders_in(loaded) and run_dir is None:
        names = ", ".join(f"{{{n}}}" for n in sorted(placeholders_in(loaded)))
        raise RepolmError(
            f"suite {path} is a template (placeholders {names})",
            "give the run directory whose filter outputs describe the repository",
        )
    facts = repo_facts(run_dir) if run_dir is not None and placeholders_in(loaded) else None
    return fill(loaded, facts)


def _validate(data: Any, source: str) -> Suite:
    if not isinstance(data, dict):
        raise RepolmError(
            f"suite {source} must be a mapping with name and tests, got {type(data).__name__}",
            HINT,
        )
    try:
        suite = Suite.model_validate(data)
    except ValidationError as e:
        raise _explain(e, data, source) from None
    for test in suite.tests:
        unknown = sorted(set(_placeholders(test)) - set(PLACEHOLDERS))
        if unknown:
            raise RepolmError(
                f"suite {source}: test {test.id!r}: unknown placeholder {{{unknown[0]}}}",
                "see docs/suites.md for the placeholders; write {{name}} for literal braces",
            )
    return suite


_MODELS: dict[str, type[BaseModel]] = {
    "suite": Suite,
    "test": Test,
    "rubric": Rubric,
    "required": Concept,
    "forbidden": Concept,
    "weights": Weights,
}


def _explain(error: ValidationError, data: dict[str, Any], source: str) -> RepolmError:
    """One line for the first problem: where (test id, key path) and what."""
    # a misspelled key is both unknown and missing: the unknown one says more
    err = min(error.errors(), key=lambda e: e["type"] != "extra_forbidden")
    loc = list(err["loc"])
    where, level = f"suite {source}", "suite"
    tests = data.get("tests")
    if len(loc) > 1 and loc[0] == "tests" and isinstance(loc[1], int) and isinstance(tests, list):
        raw = tests[loc[1]] if loc[1] < len(tests) else None
        tid = raw.get("id") if isinstance(raw, dict) else None
        where += f": test {tid!r}" if tid else f": tests[{loc[1]}]"
        loc, level = loc[2:], "test"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    parent = [p for p in loc[:-1] if isinstance(p, str)]
    model = _MODELS.get(parent[-1] if parent else level, Suite)
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if err["type"] == "extra_forbidden":
        allowed = list(model.model_fields)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = (f"did you mean '{close[0]}'? " if close else "") + f"keys: {', '.join(allowed)}"
        return RepolmError(f"{where}: unknown key {key!r}{more}", hint)
    if err["type"] == "missing":
        return RepolmError(f"{where}: missing key {key!r}{more}", HINT)
    msg = str(err["msg"]).removeprefix("Value error, ")
    return RepolmError(f"{where}: {key or 'value'}: {msg}{more}", HINT)


# -- scoring ----------------------------------------------------------------------------------


class TestScore(BaseModel):
    """One answer's score and why: see `score_answer`."""

    __test__: ClassVar[bool] = False

    score: float  # 0..100, 2 decimals
    concepts: float | None  # weighted share of required concepts found, 0..1
    reference: float | None  # ROUGE-L F against the reference answer, 0..1
    penalty: float  # points taken off for forbidden claims
    found: dict[str, str]  # concept name -> the text that matched it
    missing: list[str]  # required concepts not found
    forbidden: dict[str, str]  # forbidden claim -> the text that matched it


def score_answer(answer: str, rubric: Rubric) -> TestScore:
    """Score in 0..100: `base - penalty`, clamped, where base is
    100 * (Wc * C + Wr * R) / (Wc + Wr) with C the weighted share of required concepts found
    and R the ROUGE-L F-measure against the reference (a part the rubric lacks drops out, so
    the other scales to 100), and penalty is `weights.penalty` times the summed weights of
    the forbidden claims found."""
    from repolm.eval.metrics import rouge_l

    found = {c.name: hit for c in rubric.required if (hit := c.find(answer)) is not None}
    total = sum(c.weight for c in rubric.required)
    concepts = sum(c.weight for c in rubric.required if c.name in found) / total if total else None
    reference = rouge_l(answer, rubric.reference) if rubric.reference is not None else None
    w = rubric.weights
    if concepts is not None and reference is not None:
        base = 100.0 * (w.concepts * concepts + w.reference * reference)
        base /= w.concepts + w.reference
    else:
        base = 100.0 * (concepts if concepts is not None else reference or 0.0)
    hits = {c.name: hit for c in rubric.forbidden if (hit := c.find(answer)) is not None}
    penalty = w.penalty * sum(c.weight for c in rubric.forbidden if c.name in hits)
    return TestScore(
        score=round(min(100.0, max(0.0, base - penalty)), 2),
        concepts=concepts,
        reference=reference,
        penalty=penalty,
        found=found,
        missing=[c.name for c in rubric.required if c.name not in found],
        forbidden=hits,
    )


def score_suite(suite: Suite, answers: Mapping[str, str]) -> dict[str, Any]:
    """Every test's score (a test with no answer scores as an empty answer, 0, and is listed
    as unanswered), the mean per category, and `overall`: the mean over all tests."""
    ids = {t.id for t in suite.tests}
    stray = sorted(set(answers) - ids)
    if stray:
        raise RepolmError(f"answers for tests not in suite {suite.name}: {', '.join(stray[:5])}")
    rows = []
    for t in suite.tests:
        rows.append(
            {
                "id": t.id,
                "category": t.category,
                **score_answer(answers.get(t.id, ""), t.rubric).model_dump(),
            }
        )
    categories = {
        c: {
            "score": _mean(r["score"] for r in rows if r["category"] == c),
            "tests": sum(r["category"] == c for r in rows),
        }
        for c in suite.categories()
    }
    return {
        "suite": suite.name,
        "version": suite.version,
        "overall": _mean(r["score"] for r in rows),
        "categories": categories,
        "tests": rows,
        "counts": {
            "tests": len(rows),
            "answered": sum(t.id in answers for t in suite.tests),
            "unanswered": [t.id for t in suite.tests if t.id not in answers],
            "dropped": len(suite.dropped),
        },
        "dropped": dict(suite.dropped),
    }


def _mean(values: Iterable[float]) -> float:
    v = list(values)
    return round(sum(v) / len(v), 2) if v else 0.0


def format_prompt(question: str) -> str:
    """A test's prompt as the model sees it (the build stage's Q&A format)."""
    return PROMPT_FORMAT.format(question=question.strip())


def _cut_next_question(text: str) -> int | None:
    """A model that goes on to ask itself the next question is cut there."""
    at = text.find("\nQuestion:")
    return at if at >= 0 else None


def run_suite(lm: LoadedModel, suite: Suite, max_new_tokens: int = 256) -> dict[str, Any]:
    """Greedy answers to every test (prompts in `PROMPT_FORMAT`, at most `max_new_tokens` new
    tokens but no more than half the model's context), scored: `score_suite`'s result with each
    test's prompt and answer added, and the generation settings under `generation`."""
    new_tokens = max(1, min(max_new_tokens, lm.max_len // 2))
    prompts = [lm.encode(format_prompt(t.prompt)) for t in suite.tests]
    texts = generate(lm, prompts, new_tokens, stop=_cut_next_question)
    answers = {t.id: text.strip() for t, text in zip(suite.tests, texts, strict=True)}
    result = score_suite(suite, answers)
    prompt_of = {t.id: t.prompt for t in suite.tests}
    for row in result["tests"]:
        row["prompt"], row["answer"] = prompt_of[row["id"]], answers[row["id"]]
    result["generation"] = {
        "model": lm.path,
        "max_new_tokens": new_tokens,
        "prompt_format": PROMPT_FORMAT,
    }
    return result


# -- filling templates ------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_]\w*)\}\}|\{([A-Za-z_]\w*)\}")


class _Missing(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _placeholders(test: Test) -> list[str]:
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
    return {name for t in suite.tests for name in _placeholders(t)}


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


def fill_template(template: Path, facts: RepoFacts) -> Suite:
    """`load_suite` then `fill`: a template made about one repository."""
    return fill(load_suite(template), facts)
