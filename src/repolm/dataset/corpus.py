"""What the build stage's first pass encodes into: the run's tokenizer (`Encoder`), the
commits' metadata (`Commits`), file sections spooled to disk as token ids (`Spool`, `Section`)
and the encoded documents of every kind (`Corpus`)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from repolm.dataset.assemble import EMPTY
from repolm.errors import RepolmError
from repolm.formats import documents as dm
from repolm.formats import special as sp

BATCH_CHARS = 2_000_000  # text encoded per library call


class Encoder:
    """The run's tokenizer (OUT/tokenizer/tokenizer.json) through the `tokenizers` library:
    batched, on every core. Special tokens are inserted by id only; text that spells one is
    encoded as text."""

    def __init__(self, tok_dir: Path) -> None:
        from tokenizers import Tokenizer

        path = tok_dir / "tokenizer.json"
        if not path.exists():
            raise RepolmError(f"missing {path}", "run the tokenize stage first")
        self.tok = Tokenizer.from_file(str(path))
        self.tok.encode_special_tokens = True
        missing = [t for t in sp.SPECIAL_TOKENS if t != sp.PAD and self.tok.token_to_id(t) is None]
        if missing:
            raise RepolmError(
                f"the tokenizer in {tok_dir} lacks repolm's special tokens {missing[:3]}",
                "run the tokenize stage again (--stage tokenize --force)",
            )
        self.ids = {t: self.tok.token_to_id(t) for t in sp.SPECIAL_TOKENS}
        config = json.loads((tok_dir / "tokenizer_config.json").read_text())
        eos, pad = self._id(config.get("eos_token")), self._id(config.get("pad_token"))
        self.eos_id: int = self.ids[sp.ENDOFTEXT] if eos is None else eos  # ids may be 0
        self.pad_id: int = next(i for i in (pad, self.ids[sp.PAD], self.eos_id) if i is not None)
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)

    def _id(self, token: Any) -> int | None:
        content = token.get("content") if isinstance(token, dict) else token
        return self.tok.token_to_id(content) if content else None

    def texts(self, texts: list[str]) -> list[np.ndarray]:
        """Ids of each text, encoded in batches of about BATCH_CHARS: a library `Encoding` holds
        tens of bytes per token, so a whole row group at once would cost gigabytes."""
        out: list[np.ndarray] = []
        start, size = 0, 0
        for end, text in enumerate(texts, 1):
            size += len(text)
            if size >= BATCH_CHARS or end == len(texts):
                batch = self.tok.encode_batch_fast(texts[start:end], add_special_tokens=False)
                out += [np.asarray(e.ids, dtype=np.int32) for e in batch]
                start, size = end, 0
        return out

    def docs(self, docs: list[list[dm.Segment]]) -> list[np.ndarray]:
        """Each document's segments as one id array."""
        encoded = iter(self.texts([s for d in docs for s in d if isinstance(s, str) and s]))
        out = []
        for d in docs:
            parts = [
                np.asarray([self.ids[s.token]], dtype=np.int32)
                if isinstance(s, dm.Tok)
                else next(encoded)
                for s in d
                if isinstance(s, dm.Tok) or s
            ]
            out.append(np.concatenate(parts) if parts else EMPTY)
        return out

    def decode(self, seqs: list[np.ndarray]) -> list[str]:
        return self.tok.decode_batch([s.tolist() for s in seqs], skip_special_tokens=False)


def render(segments: list[dm.Segment]) -> str:
    """A document as text, special tokens spelled out."""
    return "".join(s.token if isinstance(s, dm.Tok) else s for s in segments)


@dataclass
class Commits:
    """filter/commits.parquet, in memory (metadata and messages only)."""

    sha: list[str]
    author: list[str | None]
    time: list[datetime]
    message: list[str]
    split: list[str]
    merge: list[bool]
    index: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Commits:
        t = pq.read_table(
            path, columns=["sha", "author_name", "commit_time", "message", "split", "is_merge"]
        )
        c = cls(*(t.column(n).to_pylist() for n in t.column_names))
        c.index = {s: i for i, s in enumerate(c.sha)}
        return c

    def chronological(self) -> list[int]:
        # the file is parents-first, so a stable sort keeps parents first among equal times
        return sorted(range(len(self.sha)), key=lambda i: self.time[i])


class Spool:
    """Token ids of file sections, appended to a scratch file and read back by memory map."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = path.open("wb")
        self.size = 0
        self._map: np.ndarray | None = None

    def add(self, ids: np.ndarray) -> int:
        offset = self.size
        self._f.write(ids.astype(np.int32, copy=False).tobytes())
        self.size += len(ids)
        return offset

    def seal(self) -> None:
        self._f.close()
        if self.size:
            # a plain array view: slicing a memmap subclass costs more than the copy
            self._map = np.memmap(self.path, dtype=np.int32, mode="r").view(np.ndarray)

    def get(self, offset: int, n: int) -> np.ndarray:
        assert self._map is not None
        return self._map[offset : offset + n]


@dataclass
class Section:
    """One file of a commit: its head and hunks, spooled; `key` finds an identical diff in
    another split (cherry-picks, reverts)."""

    offset: int
    head: int
    hunks: list[int]
    key: bytes


class Corpus:
    """Everything pass 1 encoded."""

    def __init__(self, commits: Commits, spool: Spool) -> None:
        self.commits = commits
        self.spool = spool
        self.headers: list[np.ndarray] = []
        self.messages: list[np.ndarray] = []  # <|message|> MESSAGE
        self.sections: dict[int, list[Section]] = defaultdict(list)
        self.files: list[tuple[np.ndarray, str]] = []  # snapshot pieces: ids, FIM mode
        self.qa: list[tuple[np.ndarray, int]] = []  # ids, prompt length
        self.counts: Counter[str] = Counter()

    def section_ids(self, s: Section) -> tuple[np.ndarray, list[np.ndarray]]:
        head = self.spool.get(s.offset, s.head)
        hunks, at = [], s.offset + s.head
        for n in s.hunks:
            hunks.append(self.spool.get(at, n))
            at += n
        return head, hunks
