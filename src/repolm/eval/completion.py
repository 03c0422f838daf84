"""Code completion on the future: functions and tests added or modified after the cutoff
(`OUT/dataset/eval/completion.parquet`), completed the way CrossCodeEval and RepoBench score it.

The cursor is after the unit's first line (its signature, or the decorator, attribute or doc
comment it starts with): the model sees the file before it and that line, and writes the rest
(the body). Predicting the name of a function that does not exist yet is mostly guessing; from
its first line on, the body is what the repository's past can tell. Units of a single line have
no body and are left out.

- next line: the body's first non-blank line (CrossCodeEval's next line, at this cursor);
- whole body: the body up to the unit's end; exact match and edit similarity of both, and
  identifier match of the body. Also on the units whose text was not in the training snapshot
  (`unseen_*`: code moved between files excluded).

Prompts are the training formats (`build.documents`): a model with repolm's FIM tokens that
trained on FIM samples (`LoadedModel.fim`) gets
`FILE HEADER <|fim_prefix|>PREFIX+LINE<|fim_suffix|>SUFFIX<|fim_middle|>` (PSM, as trained);
any other model continues the file document `FILE HEADER PREFIX+LINE`. Either way the body is
cut where the unit ends (`boundaries.unit_end`), and generation stops there (or at EOS), so a
base model that never emits EOS at a unit's end costs the unit, not the budget. The trailing
line end of a plain prompt is left for the model to write: byte-level BPE merges a newline with
the next line's indentation, so a prompt ending in a lone newline token is one it never saw.
Budget: 1.5 x the reference body's tokens + 16, at most 256 (a 3M-parameter model on 2 CPU
cores completes 100 units in well under a minute).

Baseline: retrieval (BM25 over identifier sub-words) of the most similar function, method or
test of the training snapshot in the same language, queried with the unit's first line and the
last lines before it; its body, re-indented, is the prediction.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from repolm.eval.metrics import edit_similarity, exact_match, first_line, identifier_match
from repolm.eval.tasks import (
    SAMPLES,
    averages,
    clip,
    read_eval_set,
    spread,
    task_result,
)
from repolm.layout import RunLayout
from repolm.lm import LoadedModel, cursor_prompt, generate, special_stops
from repolm.syntax.boundaries import plain_body, split_unit, unit_stop

METRICS = ("next_line_em", "next_line_es", "body_em", "body_es", "identifier_em", "identifier_f1")
MAX_NEW_TOKENS = 256
QUERY_LINES = 3  # lines before the unit that join its first line in the retrieval query
UNIT_KINDS = ("function", "method", "test")


# -- retrieval baseline ---------------------------------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SUBWORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+[0-9]*|[0-9]+")


def code_terms(text: str) -> list[str]:
    """Identifiers, lower-cased, and their sub-words: `parseHTTP_v2` -> parsehttp_v2, parse,
    http, v2 (single characters dropped)."""
    out: list[str] = []
    for name in _IDENTIFIER.findall(text):
        terms = dict.fromkeys([name.lower(), *(p.lower() for p in _SUBWORD.findall(name))])
        out += [t for t in terms if len(t) > 1]
    return out


class Bm25:
    """Okapi BM25 (k1 1.2, b 0.75) over term lists: `best(query)` is the index of the best
    document (the first among equals), None when no query term occurs."""

    def __init__(self, docs: list[list[str]], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.lengths = [len(d) for d in docs]
        self.average = sum(self.lengths) / max(len(docs), 1) or 1.0
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for n, doc in enumerate(docs):
            for term, tf in Counter(doc).items():
                self.postings[term].append((n, tf))

    def best(self, query: list[str]) -> int | None:
        scores: dict[int, float] = defaultdict(float)
        total = len(self.lengths)
        for term, qtf in Counter(query).items():
            posting = self.postings.get(term)
            if not posting:
                continue
            idf = math.log(1 + (total - len(posting) + 0.5) / (len(posting) + 0.5))
            for n, tf in posting:
                norm = self.k1 * (1 - self.b + self.b * self.lengths[n] / self.average)
                scores[n] += qtf * idf * tf * (self.k1 + 1) / (tf + norm)
        return max(scores, key=lambda n: (scores[n], -n)) if scores else None


def retrieval_query(prefix: str, first: str) -> list[str]:
    """The unit's first line and the last QUERY_LINES non-blank lines before it, as terms."""
    before = [line for line in prefix.splitlines() if line.strip()][-QUERY_LINES:]
    return code_terms("\n".join([*before, first]))


def reindent(text: str, indent: str) -> str:
    """`text` moved so that its first non-blank line starts with `indent`."""
    lines = text.splitlines(keepends=True)
    head = next((line for line in lines if line.strip()), "")
    old = head[: len(head) - len(head.lstrip(" \t"))]
    return "".join(
        indent + line[len(old) :] if line.strip() and line.startswith(old) else line
        for line in lines
    )


class SnapshotIndex:
    """The training snapshot's functions, methods and tests (`OUT/filter/chunks.parquet`,
    source snapshot), one BM25 index per language, built when first asked."""

    def __init__(self, units: list[dict[str, Any]]) -> None:
        self.by_language: dict[str | None, list[str]] = defaultdict(list)
        for u in units:
            if u["text"] and u["kind"] in UNIT_KINDS:
                self.by_language[u["language"]].append(u["text"])
        self._indexes: dict[str | None, Bm25] = {}

    @classmethod
    def read(cls, filter_dir: Path) -> SnapshotIndex:
        import pyarrow.parquet as pq

        t = pq.read_table(
            filter_dir / "chunks.parquet",
            columns=["language", "kind", "text"],
            filters=[("source", "=", "snapshot")],
        )
        return cls(t.to_pylist())

    def most_similar(self, language: str | None, query: list[str]) -> str | None:
        texts = self.by_language.get(language)
        if not texts:
            return None
        if language not in self._indexes:
            self._indexes[language] = Bm25([code_terms(t) for t in texts])
        n = self._indexes[language].best(query)
        return None if n is None else texts[n]


def retrieval_body(index: SnapshotIndex, row: dict[str, Any]) -> str:
    """The retrieval baseline's prediction of a unit's body."""
    first, _ = split_unit(row["target"])
    found = index.most_similar(row["language"], retrieval_query(row["prefix"], first))
    if found is None:
        return ""
    return split_unit(reindent(found, first[: len(first) - len(first.lstrip(" \t"))]))[1]


def model_bodies(lm: LoadedModel, rows: list[dict[str, Any]], batch_size: int = 8) -> list[str]:
    """Greedy bodies of the units, FIM when the model has repolm's FIM tokens and learned them
    (`LoadedModel.fim`), each generation stopped where the unit ends."""
    fim = lm.fim
    most = min(MAX_NEW_TOKENS, lm.max_len // 2)
    firsts, bodies = zip(*(split_unit(r["target"]) for r in rows), strict=True)
    budgets = [min(most, int(1.5 * len(lm.encode(b))) + 16) for b in bodies]
    prompts = [
        cursor_prompt(lm, r["path"], r["language"], r["prefix"] + f, r["suffix"], b)
        for r, f, b in zip(rows, firsts, budgets, strict=True)
    ]
    # a FIM middle starts after the first line's end, a plain continuation writes that end
    leads = [f[len(f.rstrip()) :] if fim else "" for f in firsts]
    rules = [
        unit_stop(f.rstrip() + lead, r["language"])
        for f, lead, r in zip(firsts, leads, rows, strict=True)
    ]
    texts = generate(
        lm, prompts, budgets, stop=rules, stop_ids=special_stops(lm), batch_size=batch_size
    )
    return [
        plain_body(f, lead + t, r["language"])
        for f, lead, t, r in zip(firsts, leads, texts, rows, strict=True)
    ]


# -- the evaluation -------------------------------------------------------------------------


def score_body(prediction: str, reference: str, language: str | None) -> dict[str, float]:
    """One unit's scores (METRICS) for a predicted body."""
    line, ref_line = first_line(prediction), first_line(reference)
    ident_em, ident_f1 = identifier_match(prediction, reference, language)
    return {
        "next_line_em": float(exact_match(line, ref_line)),
        "next_line_es": edit_similarity(line, ref_line),
        "body_em": float(exact_match(prediction, reference)),
        "body_es": edit_similarity(prediction, reference),
        "identifier_em": ident_em,
        "identifier_f1": ident_f1,
    }


def summarize(scores: list[dict[str, float]], unseen: list[bool]) -> dict[str, Any]:
    """METRICS averaged over all units, and as `unseen_*` over those not in the snapshot."""
    out = averages(scores, METRICS)
    rest = averages([s for s, u in zip(scores, unseen, strict=True) if u], METRICS)
    return out | {f"unseen_{k}": v for k, v in rest.items()}


def evaluate_completion(
    lm: LoadedModel | None,
    eval_dir: Path,
    run_dir: Path,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Code completion of the split's new and modified functions and tests (see the module's
    doc); `lm` None scores the retrieval baseline only. Besides the common keys: `n_unseen`
    (units not in the training snapshot) and `fim` (whether the model was prompted FIM)."""
    t0 = time.monotonic()
    rows = read_eval_set(eval_dir, "completion", split, None)
    rows = spread([r for r in rows if first_line(split_unit(r["target"])[1])], limit)
    references = [split_unit(r["target"])[1] for r in rows]
    unseen = [not r["seen_in_train"] for r in rows]
    index = SnapshotIndex.read(RunLayout(run_dir).filter_dir)
    retrieved = [retrieval_body(index, r) for r in rows]
    baseline = [
        score_body(p, ref, r["language"])
        for p, ref, r in zip(retrieved, references, rows, strict=True)
    ]
    predicted = model_bodies(lm, rows, batch_size) if lm is not None and rows else None
    metrics = None
    if lm is not None:
        pairs = zip(predicted or [], references, rows, strict=True)
        metrics = summarize([score_body(p, ref, r["language"]) for p, ref, r in pairs], unseen)
    samples = []
    for n in spread(range(len(rows)), SAMPLES):
        r = rows[n]
        first, _ = split_unit(r["target"])
        context = "".join(r["prefix"].splitlines(keepends=True)[-3:]) + first
        sample = {
            "path": r["path"],
            "name": r["qualified_name"],
            "change_type": r["change_type"],
            "seen_in_train": r["seen_in_train"],
            "input": clip(context),
        }
        if predicted is not None:
            sample["model"] = clip(predicted[n])
        sample["baselines"] = {"retrieval": clip(retrieved[n])}
        sample["reference"] = clip(references[n])
        samples.append(sample)
    fim = lm is not None and lm.fim
    baselines = {"retrieval": summarize(baseline, unseen)}
    return task_result(
        split, len(rows), metrics, baselines, samples, t0, n_unseen=sum(unseen), fim=fim
    )
