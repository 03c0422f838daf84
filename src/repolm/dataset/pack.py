"""Packing documents into fixed-length training sequences.

Each document is followed by EOS and never split (the stage cuts long documents into pieces of
at most `seq_len` tokens first). A bounded best-fit packer keeps `window` sequences open and
puts each document into the open one it fills best, so padding stays small while the stream's
order (chronological for commit records) is kept within the window.

Per sequence: `input_ids` (padded with `pad_id`), `labels` (Hugging Face convention, shifted
inside the model: -100 where no loss is taken — on padding, on each document's first token, so
nothing is predicted across a document boundary, and on an instruction's prompt),
`position_ids` (restarting at 0 with each document, which flash-attention's variable-length
kernels read as document boundaries) and `doc_lengths` (tokens of each document, EOS included).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IGNORE = -100


@dataclass(eq=False)
class Doc:
    ids: np.ndarray  # int32, without EOS
    prompt: int = 0  # leading tokens that take no loss (an instruction's prompt)
    meta: tuple[Any, ...] = ()  # (kind, sha, time) for inspection


@dataclass(eq=False)
class _Bin:
    docs: list[Doc] = field(default_factory=list)
    used: int = 0


class Packer:
    """Feed documents with `add`; completed sequences come out of `add` and `flush`."""

    def __init__(self, seq_len: int, eos_id: int, pad_id: int, window: int = 16) -> None:
        self.seq_len, self.eos_id, self.pad_id, self.window = seq_len, eos_id, pad_id, window
        self.open: list[_Bin] = []

    def add(self, doc: Doc) -> Iterator[dict[str, Any]]:
        need = len(doc.ids) + 1
        if need > self.seq_len:
            raise ValueError(f"document of {need} tokens exceeds seq_len {self.seq_len}")
        fits = [b for b in self.open if self.seq_len - b.used >= need]
        if fits:
            best = min(fits, key=lambda b: self.seq_len - b.used)
        else:
            if len(self.open) >= self.window:
                fullest = max(self.open, key=lambda b: b.used)
                self.open.remove(fullest)
                yield self._emit(fullest)
            best = _Bin()
            self.open.append(best)
        best.docs.append(doc)
        best.used += need
        if best.used == self.seq_len:
            self.open.remove(best)
            yield self._emit(best)

    def flush(self) -> Iterator[dict[str, Any]]:
        for b in self.open:
            yield self._emit(b)
        self.open = []

    def _emit(self, b: _Bin) -> dict[str, Any]:
        ids = np.full(self.seq_len, self.pad_id, dtype=np.int32)
        labels = np.full(self.seq_len, IGNORE, dtype=np.int32)
        positions = np.zeros(self.seq_len, dtype=np.int32)
        lengths = []
        o = 0
        for d in b.docs:
            n = len(d.ids) + 1
            ids[o : o + n - 1] = d.ids
            ids[o + n - 1] = self.eos_id
            masked = max(1, min(d.prompt, n))  # the first token, and the prompt
            labels[o + masked : o + n] = ids[o + masked : o + n]
            positions[o : o + n] = np.arange(n, dtype=np.int32)
            lengths.append(n)
            o += n
        return {
            "input_ids": ids,
            "labels": labels,
            "position_ids": positions,
            "doc_lengths": lengths,
            "meta": [d.meta for d in b.docs],
        }
