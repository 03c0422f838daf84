"""Behavioural evaluation during training: at each evaluation the model continues a few fixed
prompts (the first lines of files of the snapshot, in the training format) and each sample is
checked with tree-sitter, so the report shows when the model starts writing code that parses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repolm.formats.documents import file_document_header
from repolm.lm import generate, wrap
from repolm.syntax import parses

PROMPT_LINES = 6


@dataclass(frozen=True)
class SamplePrompt:
    path: str
    language: str
    text: str  # the file's first lines


def sample_prompts(filter_dir: Path, k: int) -> list[SamplePrompt]:
    """`k` files of the snapshot in a language with a grammar, the most common such language
    first, picked by a hash of their path (the same files every run); their first lines."""
    import pyarrow.parquet as pq

    if k <= 0 or not (filter_dir / "files.parquet").is_file():
        return []
    rows = pq.read_table(filter_dir / "files.parquet", columns=["path", "language"]).to_pylist()
    counts: dict[str, int] = {}
    for r in rows:
        if r["language"] and parses("", r["language"]) is not None:
            counts[r["language"]] = counts.get(r["language"], 0) + 1
    if not counts:
        return []
    language = max(counts, key=lambda lang: (counts[lang], lang))
    paths = sorted(
        (r["path"] for r in rows if r["language"] == language),
        key=lambda p: hashlib.blake2b(p.encode(), digest_size=8).digest(),
    )
    picked = set(paths[: 4 * k])
    texts = {
        r["path"]: r["text"]
        for r in pq.read_table(
            filter_dir / "files.parquet",
            columns=["path", "text"],
            filters=[("path", "in", sorted(picked))],
        ).to_pylist()
    }
    out = []
    for p in paths[: 4 * k]:
        head = "".join((texts.get(p) or "").splitlines(keepends=True)[:PROMPT_LINES])
        if head.strip():
            out.append(SamplePrompt(p, language, head))
        if len(out) == k:
            break
    return out


def take_samples(
    model: Any, tokenizer: Any, prompts: list[SamplePrompt], max_new_tokens: int
) -> list[dict[str, Any]]:
    """Greedy continuations of the prompts by `model` (left in the mode it was in), each with
    whether prompt + sample parse (a valid prefix: see `repolm.syntax.parses`; None for
    a blank sample, which proves nothing)."""
    if not prompts:
        return []
    lm = wrap(model, tokenizer)
    ids = [lm.encode_segments([*file_document_header(p.path, p.language), p.text]) for p in prompts]
    budget = min(max_new_tokens, lm.max_len // 2)
    training = model.training
    model.eval()
    try:
        texts = generate(lm, ids, budget)
    finally:
        model.train(training)
    return [
        {
            "path": p.path,
            "sample": t,
            "parses": parses(p.text + t, p.language) if t.strip() else None,
        }
        for p, t in zip(prompts, texts, strict=True)
    ]
