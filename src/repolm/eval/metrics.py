"""Text and code metrics, computed the way the benchmarks they come from compute them, so that
repolm's numbers can be read next to published ones.

- completion (CrossCodeEval, RepoBench): `exact_match`, `edit_similarity`, `identifier_match`,
  `first_line`;
- retrieval: `recall_at_k`;
- commit messages and docs: `rouge_l`, `bleu`;
- execution (HumanEval): `pass_at_k`.

Each metric is a pure function of strings or counts; the scoring libraries (rapidfuzz,
rouge-score, sacrebleu; tree-sitter through `repolm.syntax`) are imported on first use, not at
import time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Sequence
from functools import cache
from typing import Any

from repolm.syntax import parser_for

__all__ = [
    "bleu",
    "edit_similarity",
    "exact_match",
    "first_line",
    "identifier_match",
    "identifiers",
    "mean",
    "normalize_code",
    "pass_at_k",
    "recall_at_k",
    "rouge_l",
]


# -- completion -------------------------------------------------------------------------------


def normalize_code(code: str) -> str:
    """`code` with each line's trailing whitespace and the leading and trailing blank lines
    removed: what a completion is compared on. Indentation is kept (it is syntax in Python)."""
    lines = [line.rstrip() for line in code.splitlines()]
    start, end = 0, len(lines)
    while start < end and not lines[start]:
        start += 1
    while end > start and not lines[end - 1]:
        end -= 1
    return "\n".join(lines[start:end])


def exact_match(prediction: str, reference: str) -> bool:
    """Whether the two are the same code up to trailing whitespace and blank lines around it
    (`normalize_code`); CRLF and LF line ends compare equal."""
    return normalize_code(prediction) == normalize_code(reference)


def edit_similarity(prediction: str, reference: str) -> float:
    """Similarity in 0..1: `rapidfuzz.fuzz.ratio / 100` of the `normalize_code`d strings.

    This is what CrossCodeEval and RepoBench report as "edit similarity": fuzz.ratio is the
    normalised Indel similarity, 2 * LCS / (len(a) + len(b)), not 1 - Levenshtein / max len
    ("abc" vs "abcd": 6/7, where Levenshtein gives 3/4). Normalising like `exact_match` makes an
    exact match score 1.0; two empty strings score 1.0.
    """
    from rapidfuzz import fuzz

    return fuzz.ratio(normalize_code(prediction), normalize_code(reference)) / 100.0


def first_line(code: str) -> str:
    """The first non-blank line without its trailing whitespace ("" when there is none): what
    next-line completion is scored on."""
    for line in code.splitlines():
        if line.strip():
            return line.rstrip()
    return ""


# Strings are not identifiers: the regex fallback drops simple quoted literals first (as
# CrossCodeEval's extractor does).
_STRING = re.compile(r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'""")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def identifiers(code: str, language: str | None = None) -> list[str]:
    """The identifiers in `code`, in source order, repeats kept.

    With a tree-sitter grammar for `language` (a repolm name such as "Python", "C++", or a
    tree-sitter name such as "rust"): the innermost nodes whose type contains "identifier"
    (identifier, type_identifier, field_identifier, ...), so keywords, literals, comments and
    string contents never count; partial code parses with error nodes and still yields its
    names. Grammars differ at the edges: Python's `self` is an identifier, Rust's is a keyword,
    Rust's `u32` is a primitive type but Go's `int` a type identifier. Without a grammar
    (`language` None or unknown): every `[A-Za-z_][A-Za-z0-9_]*` outside quoted strings,
    keywords included, since the language's keywords are not known.
    """
    parser = parser_for(language) if language else None
    if parser is None:
        return _IDENTIFIER.findall(_STRING.sub(" ", code))
    source = code.encode("utf-8")
    found: list[str] = []
    stack = [parser.parse(source).root_node]
    while stack:  # depth-first, children pushed reversed so names come out in source order
        node = stack.pop()
        children = node.children
        if "identifier" in node.type and not any("identifier" in c.type for c in children):
            found.append(source[node.start_byte : node.end_byte].decode("utf-8", "replace"))
        else:
            stack.extend(reversed(children))
    return found


def identifier_match(
    prediction: str, reference: str, language: str | None = None
) -> tuple[float, float]:
    """CrossCodeEval's identifier match: (1.0 if the identifier sequences are equal else 0.0,
    F1 of the identifier sets).

    As in CrossCodeEval, F1 counts each distinct identifier once (precision and recall over
    sets, not multisets). One departure: when neither side has an identifier (a completion
    that is just `}`), F1 is 1.0 where CrossCodeEval gives 0.0, so it agrees with the EM of 1.0.
    """
    predicted, expected = identifiers(prediction, language), identifiers(reference, language)
    em = 1.0 if predicted == expected else 0.0
    pred_set, ref_set = set(predicted), set(expected)
    if not pred_set and not ref_set:
        return em, 1.0
    common = len(pred_set & ref_set)
    # F1 = 2 tp / (2 tp + fp + fn); the denominator is the two set sizes added
    return em, 2.0 * common / (len(pred_set) + len(ref_set))


# -- retrieval --------------------------------------------------------------------------------


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant items found among the first `k` ranked: |top-k ∩ relevant| /
    |relevant| (a repeat in the ranking counts once).

    Raises ValueError when `relevant` is empty (recall is undefined there: a query with nothing
    to find should be left out of the average, not scored 0 or 1) or when k < 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    gold = set(relevant)
    if not gold:
        raise ValueError("recall@k is undefined without relevant items; leave the query out")
    return len(set(ranked[:k]) & gold) / len(gold)


# -- text -------------------------------------------------------------------------------------


@cache
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure in 0..1 (rouge-score, no stemming): from the longest common
    subsequence of tokens. rouge-score's tokenizer lower-cases and keeps only runs of
    [a-z0-9], so punctuation never counts and non-Latin text has no tokens (scores 0.0)."""
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU in 0..100, sacrebleu's defaults (13a tokens, 4-grams, "exp" smoothing, one
    reference per prediction): n-gram counts are summed over the corpus, not averaged per
    sentence. Raises ValueError on no predictions or a length mismatch."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("BLEU of no predictions is undefined")
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


# -- execution --------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from `n` samples of which `c` pass (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1..n} (1 - k/i) so that large n
    never overflows. Raises ValueError unless 0 <= c <= n and 1 <= k <= n."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a passing sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean(values: Iterable[float]) -> float | None:
    """The arithmetic mean, or None for no values (so a report prints "—", not a false 0)."""
    items = list(values)
    return math.fsum(items) / len(items) if items else None
