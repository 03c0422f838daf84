"""Behavioural suites: questions about a repository, each scored 0-100 by a rubric of concepts an
answer must mention, claims it must not make, and an optional reference answer.

A suite is a YAML file (docs/suites.md). The built-in `reasoning` suite is a template whose
placeholders (`{module}`, `{top_file}`, ...) are filled from a run's filter outputs, so its
questions are about the user's own repository. Scoring is deterministic and explains itself:
every score lists the concepts found and missing and the forbidden claims hit.

Here: finding, loading and validating a suite, scoring answers, running a model on a suite.
The format's models are `repolm.eval.rubric`; filling a template, `repolm.eval.templates`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from repolm.errors import RepolmError
from repolm.eval.facts import PLACEHOLDERS, RepoFacts, repo_facts
from repolm.eval.metrics import rouge_l
from repolm.eval.rubric import Concept, Rubric, Suite, Test, Weights
from repolm.eval.templates import fill, placeholders_in, placeholders_of
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
        unknown = sorted(set(placeholders_of(test)) - set(PLACEHOLDERS))
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


def run_suite(
    lm: LoadedModel, suite: Suite, max_new_tokens: int = 256, batch_size: int = 8
) -> dict[str, Any]:
    """Greedy answers to every test (prompts in `PROMPT_FORMAT`, at most `max_new_tokens` new
    tokens but no more than half the model's context), scored: `score_suite`'s result with each
    test's prompt and answer added, and the generation settings under `generation`."""
    new_tokens = max(1, min(max_new_tokens, lm.max_len // 2))
    prompts = [lm.encode(format_prompt(t.prompt)) for t in suite.tests]
    texts = generate(lm, prompts, new_tokens, stop=_cut_next_question, batch_size=batch_size)
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


def fill_template(template: Path, facts: RepoFacts) -> Suite:
    """`load_suite` then `fill`: a template made about one repository."""
    return fill(load_suite(template), facts)
