"""Doc-grounded question answering: a JSONL of questions, gold answers and (optionally) the ids of
the chunks that ground them, scored by SQuAD's exact match and token F1, plus citation coverage.

A line of the JSONL: `{"question": str, "answer": str | [str, ...]}` (or `"answers"`), with
optional `"context": str` and `"chunk_ids": [str | int, ...]`; other keys are ignored.

Citations in a prediction are written `[chunk:ID]` or `[ID]`, several ids comma-separated in one
pair of brackets (`[chunk:a.py:1-9, chunk:b.py:3-4]`, `[3, 7]`); see `cited_ids`.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repolm.errors import RepolmError
from repolm.eval.metrics import mean
from repolm.lm import LoadedModel, generate

__all__ = [
    "QAItem",
    "citation_coverage",
    "cited_ids",
    "normalize_answer",
    "qa_exact_match",
    "read_qa",
    "score_qa",
    "strip_citations",
    "token_f1",
]

# -- SQuAD scoring ----------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower-case, drop ASCII punctuation, the articles a/an/the and
    extra whitespace ("The  Cat!" -> "cat")."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def _check_answers(answers: Sequence[str]) -> None:
    if isinstance(answers, str) or not answers:
        raise ValueError("answers must be a non-empty sequence of strings")


def qa_exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer, else 0.0."""
    _check_answers(answers)
    guess = normalize_answer(prediction)
    return 1.0 if any(guess == normalize_answer(a) for a in answers) else 0.0


def _f1(prediction: str, answer: str) -> float:
    guess, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not guess or not gold:  # SQuAD 2.0: an empty answer is right only against an empty one
        return 1.0 if guess == gold else 0.0
    same = sum((Counter(guess) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(guess), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """SQuAD token F1 (bag of normalised words) against the best-matching gold answer."""
    _check_answers(answers)
    return max(_f1(prediction, a) for a in answers)


# -- citations --------------------------------------------------------------------------------

# A bracket is a citation unless it follows a name, `]` or `)` (code indexing: `xs[0]`) or
# precedes `(` (a Markdown link); every comma- or semicolon-separated part must be one word.
_BRACKET = re.compile(r"(?<![\w\])])\[([^\[\]\n]+)\](?!\()")


def _citation(inside: str) -> list[str] | None:
    """The ids a bracket's inside cites, or None when it is not a citation."""
    ids = [p.strip().removeprefix("chunk:").strip() for p in re.split(r"[,;]", inside)]
    return ids if all(i and not any(ch.isspace() for ch in i) for i in ids) else None


def cited_ids(prediction: str) -> set[str]:
    """Chunk ids a prediction cites, written `[chunk:ID]` or `[ID]` (several in one bracket,
    comma- or semicolon-separated). An ID is anything without whitespace, commas, semicolons
    or brackets: `[chunk:src/lib.rs:10-42]` cites "src/lib.rs:10-42". Brackets holding prose
    (`[see above]`), indexing (`xs[0]`) and Markdown links (`[text](url)`) are not citations.
    """
    found: set[str] = set()
    for match in _BRACKET.finditer(prediction):
        found.update(_citation(match.group(1)) or ())
    return found


def strip_citations(prediction: str) -> str:
    """The prediction without its citations (as `cited_ids` reads them): the answer that
    exact match and F1 score, so citing does not cost answer tokens."""
    return _BRACKET.sub(lambda m: m.group(0) if _citation(m.group(1)) is None else "", prediction)


def citation_coverage(cited: Collection[str], gold: Collection[str]) -> float:
    """Share of the gold chunk ids the prediction cites (a recall: extra citations cost
    nothing). Raises ValueError for no gold ids: such an item has nothing to cover."""
    expected = set(gold)
    if not expected:
        raise ValueError("citation coverage is undefined without gold chunk ids")
    return len(expected & set(cited)) / len(expected)


# -- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QAItem:
    """One question with its gold answers, and optionally its context and grounding chunks."""

    question: str
    answers: tuple[str, ...]
    context: str = ""
    chunk_ids: tuple[str, ...] = ()


_HINT = (
    'each line must be a JSON object like {"question": "...", "answer": "..." or ["...", ...]}, '
    'with optional "context" (a string) and "chunk_ids" (a list of strings)'
)


def _strings(value: object, key: str, *, ids: bool = False) -> tuple[str, ...]:
    """A string or list of strings (ids may be integers) as a tuple; ValueError otherwise."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError(f'"{key}" must be a string or a list of strings')
    kinds = (str, int) if ids else (str,)
    if not all(isinstance(v, kinds) and not isinstance(v, bool) for v in items):
        raise ValueError(f'"{key}" must hold only strings{" or integers" if ids else ""}')
    return tuple(str(v) for v in items)


def _item(record: object) -> QAItem:
    """The QAItem a decoded JSON line describes; ValueError saying what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError('"question" is missing or not a non-empty string')
    if "answer" in record and "answers" in record:
        raise ValueError('give "answer" or "answers", not both')
    key = "answers" if "answers" in record else "answer"
    if key not in record:
        raise ValueError('"answer" (or "answers") is missing')
    answers = _strings(record[key], key)
    if not answers:
        raise ValueError(f'"{key}" is empty')
    context = record.get("context", "")
    if not isinstance(context, str):
        raise ValueError('"context" must be a string')
    chunk_ids = _strings(record.get("chunk_ids", []), "chunk_ids", ids=True)
    return QAItem(question, answers, context, chunk_ids)


def read_qa(path: Path) -> list[QAItem]:
    """The items of a QA JSONL file, blank lines skipped. Raises RepolmError naming the file and
    line of the first bad line (the whole set is rejected: a silently shorter set would change
    every score)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RepolmError(f"{path}: cannot read the QA file ({exc})", _HINT) from exc
    items = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            items.append(_item(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise RepolmError(f"{path}:{lineno}: not valid JSON ({exc.msg})", _HINT) from exc
        except ValueError as exc:
            raise RepolmError(f"{path}:{lineno}: {exc}", _HINT) from exc
    return items


def score_qa(
    items: Sequence[QAItem],
    predictions: Sequence[str],
    cited: Sequence[Collection[str]] | None = None,
) -> dict[str, float | int | None]:
    """Mean SQuAD exact match and token F1 (fractions 0..1) of the predictions with their
    citations stripped, and mean citation coverage over the items that have chunk ids (None
    when none has). `cited` defaults to `cited_ids` of each prediction. Scores are None for no
    items."""
    if len(predictions) != len(items):
        raise ValueError(f"{len(predictions)} predictions for {len(items)} questions")
    if cited is None:
        cited = [cited_ids(p) for p in predictions]
    elif len(cited) != len(items):
        raise ValueError(f"{len(cited)} citation sets for {len(items)} questions")
    answers = [strip_citations(p) for p in predictions]
    coverage = [
        citation_coverage(c, it.chunk_ids)
        for it, c in zip(items, cited, strict=True)
        if it.chunk_ids
    ]
    return {
        "n": len(items),
        "exact_match": mean(
            qa_exact_match(a, it.answers) for it, a in zip(items, answers, strict=True)
        ),
        "f1": mean(token_f1(a, it.answers) for it, a in zip(items, answers, strict=True)),
        "citation_coverage": mean(coverage),
    }


QA_PROMPT = "Context:\n{context}\nQuestion: {question}\nAnswer: "


def answer_questions(
    lm: LoadedModel, items: Sequence[QAItem], max_new_tokens: int = 64, batch_size: int = 8
) -> list[str]:
    """Greedy answers, one line each, to `QA_PROMPT` (the context left out when an item has
    none); the prompt is cut from the left when it does not fit the model."""
    prompts = [
        lm.encode(
            QA_PROMPT.format(context=i.context, question=i.question)
            if i.context
            else f"Question: {i.question}\nAnswer: "
        )
        for i in items
    ]
    budget = max(1, min(max_new_tokens, lm.max_len // 4))
    texts = generate(
        lm,
        prompts,
        budget,
        stop=lambda t: t.find("\n") if "\n" in t else None,
        batch_size=batch_size,
    )
    return [t.strip() for t in texts]


def run_qa(
    lm: LoadedModel, path: Path, max_new_tokens: int = 64, batch_size: int = 8
) -> dict[str, Any]:
    """`score_qa` of the model's answers to a QA file, with a few examples."""
    items = read_qa(path)
    answers = answer_questions(lm, items, max_new_tokens, batch_size)
    result: dict[str, Any] = {"data": str(path), **score_qa(items, answers)}
    result["samples"] = [
        {"question": i.question, "answer": a, "reference": list(i.answers)}
        for i, a in list(zip(items, answers, strict=True))[:5]
    ]
    return result
