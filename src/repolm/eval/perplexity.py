"""Bits per byte and perplexity of a causal LM on text: tokenizer-independent, so models with
different vocabularies (and compressors) are compared on exactly the same bytes.

bits per byte = (sum of the tokens' negative log-likelihood in nats) / ln 2 / (UTF-8 bytes).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from repolm.errors import RepolmError
from repolm.eval.texts import Document, segments
from repolm.lm import LoadedModel, bits_per_byte, load_model, sequence_nll, text_nll

TEXT_COLUMNS = ("text", "content", "code", "completion")
TEXT_SUFFIXES = {".txt", ".md", ".rst"}


def summarize(nll: float, tokens: int, n_bytes: int, documents: int, seconds: float) -> dict:
    return {
        "bits_per_byte": round(bits_per_byte(nll, n_bytes), 4),
        "loss": round(nll / tokens, 4) if tokens else None,  # nats per token
        "perplexity": round(math.exp(nll / tokens), 3) if tokens else None,
        "tokens": tokens,
        "bytes": n_bytes,
        "documents": documents,
        "seconds": round(seconds, 2),
    }


def score_documents(lm: LoadedModel, docs: Sequence[Document]) -> dict:
    """Bits per byte of repolm documents (whole commit records, special tokens spelled out),
    each scored on its own as training saw documents: positions from 0, ended by EOS, every
    token but the first (always `<|commit|>`, which training never predicts either) scored; a
    record longer than `lm.max_len` (the stage's `eval.window`) in windows overlapping by half.
    Special tokens are ids where the model knows them, text otherwise. (One stream with
    context across records measured worse for the tiny-cpu model, 2.82 against 2.67 bits per
    byte: training restarts positions at each document.) Also each commit's own bits per byte,
    `by_commit`."""
    t0 = time.monotonic()
    eos = lm.eos_ids[0]
    results = sequence_nll(lm, [lm.encode_segments(segments(d.text)) + [eos] for d in docs])
    per_commit: dict[str, list[float]] = {}
    for d, (nll, _) in zip(docs, results, strict=True):
        acc = per_commit.setdefault(d.sha, [0.0, 0])
        acc[0] += nll
        acc[1] += d.n_bytes
    nll = sum(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    n_bytes = sum(d.n_bytes for d in docs)
    return {
        **summarize(nll, tokens, n_bytes, len(docs), time.monotonic() - t0),
        "by_commit": {sha: round(bits_per_byte(*acc), 4) for sha, acc in per_commit.items()},
    }


def score_texts(lm: LoadedModel, texts: Sequence[str]) -> dict:
    """Bits per byte of plain texts, each scored on its own: the tokenizer's BOS (or EOS) in
    front is its only context, so every token of the text is scored."""
    t0 = time.monotonic()
    results = text_nll(lm, texts)
    nll = sum(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return summarize(nll, tokens, n_bytes, len(texts), time.monotonic() - t0)


# -- any text, for `repolm eval perplexity` ----------------------------------------------------


def read_texts(path: Path, column: str | None = None) -> Iterator[str]:
    """Texts from a Parquet file (a text column), a JSONL file (a text field), a plain text
    file (one text), or a directory of these."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _readable(p))
        if not files:
            raise RepolmError(
                f"no .parquet, .jsonl or text files in {path}",
                "give a file or a directory holding some",
            )
        for f in files:
            yield from read_texts(f, column)
        return
    if not path.exists():
        raise RepolmError(f"{path} does not exist", "give a Parquet, JSONL or text file")
    if path.suffix == ".parquet":
        yield from _parquet(path, column)
    elif path.suffix in (".jsonl", ".json"):
        yield from _jsonl(path, column)
    else:
        try:
            yield path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise RepolmError(
                f"{path} is not UTF-8 text", "give a Parquet, JSONL or UTF-8 text file"
            ) from None


def _readable(p: Path) -> bool:
    return p.suffix in (".parquet", ".jsonl", ".json") or p.suffix in TEXT_SUFFIXES


def _pick(names: Sequence[str], column: str | None, path: Path) -> str:
    if column:
        if column not in names:
            raise RepolmError(
                f"{path} has no column {column!r} (it has {', '.join(names)})",
                "name one of its columns with --column",
            )
        return column
    for name in TEXT_COLUMNS:
        if name in names:
            return name
    raise RepolmError(
        f"{path} has none of the text columns {', '.join(TEXT_COLUMNS)}",
        "name the column to score with --column",
    )


def _parquet(path: Path, column: str | None) -> Iterator[str]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    name = _pick(pf.schema_arrow.names, column, path)
    for g in range(pf.num_row_groups):
        yield from (t for t in pf.read_row_group(g, columns=[name]).column(0).to_pylist() if t)


def _jsonl(path: Path, column: str | None) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise RepolmError(
                    f"{path}:{n}: not JSON ({e.msg})", "give one JSON object per line"
                ) from None
            if not isinstance(row, dict):
                raise RepolmError(f"{path}:{n}: not a JSON object", "give one object per line")
            text = row.get(_pick(list(row), column, path))
            if isinstance(text, str) and text:
                yield text


def perplexity(
    model: str,
    data: Path,
    column: str | None = None,
    limit: int | None = None,
    trust_remote_code: bool = False,
    window: int | None = None,
) -> dict[str, Any]:
    """`repolm eval perplexity`: bits per byte and perplexity of any causal LM on any text,
    in windows of `window` tokens (None: the model's context) overlapping by half."""
    texts = []
    for text in read_texts(data, column):
        texts.append(text)
        if limit and len(texts) >= limit:
            break
    if not texts:
        raise RepolmError(f"no text to score in {data}", "give a file with non-empty texts")
    lm = load_model(model, trust_remote_code=trust_remote_code, max_len=window)
    return {"model": model, "data": str(data), "window": lm.max_len, **score_texts(lm, texts)}
