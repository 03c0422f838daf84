"""The text every bits-per-byte figure is measured on, read back from the build's shards.

Held-out text: the whole commit records of the validation and test commits (the repository's
future; diffs that also occur in training left out by the build), oldest first, from
`dataset/eval/future_records.parquet`; `sample` keeps a deterministic budget of them. Training
text: every distinct training document, decoded from the shards, in the order training saw it
(the conditioning text of the compressor baselines). Documents are text with repolm's special
tokens spelled out, so any tokenizer and any compressor can be given exactly the same bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from repolm.errors import RepolmError
from repolm.formats import special as sp
from repolm.formats.documents import Segment, Tok
from repolm.layout import RunLayout

_SPECIAL = re.compile("|".join(re.escape(t) for t in sorted(sp.SPECIAL_TOKENS, key=len)[::-1]))


@dataclass(frozen=True)
class Document:
    text: str
    sha: str

    @property
    def n_bytes(self) -> int:
        return len(self.text.encode("utf-8"))

    @property
    def subject(self) -> str:
        """The first line of the record's commit message."""
        _, _, message = self.text.partition(sp.MESSAGE)
        return _SPECIAL.split(message, maxsplit=1)[0].strip().split("\n", 1)[0]


def segments(text: str) -> list[Segment]:
    """A document's text back as segments: each spelled special token becomes a `Tok`."""
    out: list[Segment] = []
    at = 0
    for m in _SPECIAL.finditer(text):
        if m.start() > at:
            out.append(text[at : m.start()])
        out.append(Tok(m.group()))
        at = m.end()
    if at < len(text):
        out.append(text[at:])
    return out


def _shards(split_dir: Path) -> list[Path]:
    shards = sorted(split_dir.glob("shard-*.parquet"))
    if not shards:
        raise RepolmError(f"no dataset shards in {split_dir}", "run the build stage first")
    return shards


def _decoder(path: Path):
    from tokenizers import Tokenizer

    if not path.exists():
        raise RepolmError(f"missing {path}", "run the tokenize stage first")
    return Tokenizer.from_file(str(path))


def _texts(split_dir: Path, tokenizer: Path) -> Iterator[str]:
    """The text of each packed document of a split (EOS left out), decoded, shard by shard."""
    import pyarrow.parquet as pq

    tok = _decoder(tokenizer)
    for shard in _shards(split_dir):
        pf = pq.ParquetFile(shard)
        for g in range(pf.num_row_groups):
            t = pf.read_row_group(g, columns=["input_ids", "doc_lengths"])
            ids = []
            for row_ids, lengths in zip(
                *(t.column(c).to_pylist() for c in t.column_names), strict=True
            ):
                at = 0
                for n in lengths:
                    ids.append(row_ids[at : at + n - 1])
                    at += n
            yield from tok.decode_batch(ids, skip_special_tokens=False)


def held_out(layout: RunLayout, split: str) -> list[Document]:
    """The whole commit records of a future split, oldest first."""
    import pyarrow.parquet as pq

    path = layout.eval_set("future_records")
    if not path.exists():
        raise RepolmError(f"missing {path}", "run the build stage again (repolm run)")
    t = pq.read_table(path, columns=["sha", "text"], filters=[("split", "=", split)])
    shas, texts = t.column("sha").to_pylist(), t.column("text").to_pylist()
    return [Document(text, sha) for sha, text in zip(shas, texts, strict=True)]


def sample(docs: Sequence[Document], max_bytes: int | None) -> list[Document]:
    """Whole records of `docs` within `max_bytes` (all of them for None or 0), in their own
    order: the records ranked by a hash of their commit and position among its records, each
    taken if it still fits (the first alone when none fits). Deterministic and the same for
    every model. Skipping a record that doesn't fit fills the budget (stopping at the first
    one measured 12.6 of 48 KiB on this repository's 23 KB-a-record test split) at the cost of
    strict nesting: a larger budget's sample holds a smaller one's unless a long record the
    smaller one skipped now takes the room."""
    if not max_bytes or sum(d.n_bytes for d in docs) <= max_bytes:
        return list(docs)
    nth: dict[str, int] = {}
    keys = []
    for d in docs:
        nth[d.sha] = nth.get(d.sha, -1) + 1
        keys.append(hashlib.blake2b(f"{d.sha}:{nth[d.sha]}".encode(), digest_size=8).digest())
    ranking = sorted(range(len(docs)), key=lambda i: keys[i])
    kept: set[int] = set()
    size = 0
    for i in ranking:
        if size + docs[i].n_bytes <= max_bytes:
            kept.add(i)
            size += docs[i].n_bytes
    return [d for i, d in enumerate(docs) if i in (kept or {ranking[0]})]


def training_text(layout: RunLayout, max_bytes: int) -> tuple[bytes, int]:
    """Every distinct training document's text, in training order, cut to its last
    `max_bytes` (a compressor's window can't reach further back anyway); and the total bytes
    before the cut."""
    seen: set[bytes] = set()
    kept: deque[bytes] = deque()
    size = total = 0
    for text in _texts(layout.shards_dir("train"), layout.tokenizer_file):
        data = text.encode("utf-8")
        key = hashlib.blake2b(data, digest_size=16).digest()
        if key in seen:
            continue
        seen.add(key)
        kept.append(data)
        size += len(data)
        total += len(data)
        while size - len(kept[0]) >= max_bytes:
            size -= len(kept.popleft())
    joined = b"".join(kept)
    return joined[-max_bytes:] if len(joined) > max_bytes else joined, total
