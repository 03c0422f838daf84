"""Scrubbing a whole history's texts: each distinct line is scanned once, only texts that may
hold a finding are scrubbed, and the work is spread over processes by file path.

    with BatchScrubber(emails=True, ips=True, jobs=2) as scrub:
        pending = scrub.submit(texts, keys=paths)   # a pyarrow string array; returns at once
        ...                                         # other work while the processes scrub
        clean = pending.result()                    # the same texts, scrubbed
        scrub.found                                 # Counter of findings by type

The result is exactly `Scrubber.scrub` of every text: history repeats the same lines in many
texts (every version of a unit, a patch's context), most texts hold no finding, and a text none
of whose lines is suspect (`Scrubber.suspect_lines`) scrubs to itself. Each process remembers the
lines it has seen, so texts are sent to processes by a key (the file path): every version of a
file goes to the process that has seen its lines.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from repolm.filter.secrets import LINE_PREFIX, Scrubber

Changed = tuple[list[int], list[str], Counter[str]]  # positions, their scrubbed texts, counts


class LineScrubber:
    """Scrubs lists of texts, remembering which lines it has seen and which are suspect.

    The texts to scrub are joined with a separator no pattern can match across (the scrubber's
    cost is mostly per call: one regex pass per pattern), scrubbed at once and split again; if a
    finding ever spans a separator, that batch is scrubbed text by text instead."""

    SEP = "\n\x00\x1e\x00\n"
    MAX_LINES = 4_000_000  # lines and contents remembered (~0.4 GB at most) before starting afresh
    BATCH_CHARS = 1_000_000

    def __init__(self, emails: bool, ips: bool) -> None:
        self.scrubber = Scrubber(emails=emails, ips=ips)
        self._clean: set[str] = set()  # lines seen, not suspect
        self._suspect: set[str] = set()  # lines seen, suspect
        self._contents: set[str] = set()  # the lines' contents (`line_content`), scanned
        self._triggers: dict[str, tuple[int, ...]] = {}  # of those, the ones some trigger matched

    def scrub(self, texts: Sequence[str | None]) -> Changed:
        """The texts that scrubbing changes: their positions, scrubbed texts, and all counts."""
        known_clean = self._clean
        unknown = []  # (position, lines) of texts with a line not known to be clean
        for i, text in enumerate(texts):
            if text:
                lines = text.split("\n")
                if not known_clean.issuperset(lines):
                    unknown.append((i, lines))
        new = set().union(*(lines for _, lines in unknown))
        new -= known_clean
        new -= self._suspect
        if len(known_clean) + len(self._contents) + len(new) > self.MAX_LINES:
            for cache in (known_clean, self._suspect, self._contents, self._triggers):
                cache.clear()
            new = set().union(*(lines for _, lines in unknown))
        self._learn(new)
        suspect = self._suspect
        flagged = [i for i, lines in unknown if not suspect.isdisjoint(lines)]
        counts: Counter[str] = Counter()
        changed: list[int] = []
        clean_texts: list[str] = []
        for batch in self._batches(flagged, texts):
            for i, clean in zip(
                batch, self._scrub_joined([texts[i] for i in batch], counts), strict=True
            ):
                if clean != texts[i]:
                    changed.append(i)
                    clean_texts.append(clean)
        return changed, clean_texts, counts

    def _learn(self, lines: set[str]) -> None:
        """Sort lines not seen before into clean and suspect, scanning the contents not seen
        before (lines of other indentation or diff sides may share them)."""
        new_lines = list(lines)
        contents = [line.lstrip(LINE_PREFIX) for line in new_lines]  # `line_content`, inlined
        unscanned = set(contents)
        unscanned -= self._contents
        self._contents |= unscanned
        triggers = self._triggers
        triggers.update(self.scrubber.line_triggers(unscanned))
        for line, content in zip(new_lines, contents, strict=True):
            if content in triggers and self.scrubber.is_suspect(line, triggers[content]):
                self._suspect.add(line)
                lines.discard(line)
        self._clean |= lines

    def _batches(self, positions: list[int], texts: Sequence[str | None]) -> list[list[int]]:
        """`positions` cut into runs of about BATCH_CHARS characters of text."""
        batches: list[list[int]] = []
        size = self.BATCH_CHARS
        for i in positions:
            if size >= self.BATCH_CHARS:
                batches.append([])
                size = 0
            batches[-1].append(i)
            size += len(texts[i] or "")
        return batches

    def _scrub_joined(self, texts: list[str | None], counts: Counter[str]) -> list[str]:
        clean, found = self.scrubber.scrub(self.SEP.join(t or "" for t in texts))
        parts = clean.split(self.SEP)
        if len(parts) == len(texts):
            counts.update(found)
            return parts
        out = []
        for t in texts:
            clean, found = self.scrubber.scrub(t or "")
            counts.update(found)
            out.append(clean)
        return out


class Pending:
    """Texts being scrubbed; `result()` waits for them."""

    def __init__(
        self, owner: BatchScrubber, texts: pa.Array, parts: list[tuple[np.ndarray, Future[Changed]]]
    ) -> None:
        self._owner = owner
        self._texts = texts
        self._parts = parts

    def result(self) -> pa.Array:
        positions: list[int] = []
        clean: list[str] = []
        for shard_positions, future in self._parts:
            changed, texts, counts = future.result()
            positions += shard_positions[changed].tolist()
            clean += texts
            self._owner.found.update(counts)
        if not positions:
            return self._texts
        order = np.argsort(positions, kind="stable")
        mask = np.zeros(len(self._texts), dtype=bool)
        mask[positions] = True
        replacements = pa.array([clean[i] for i in order], pa.string())
        return pc.replace_with_mask(self._texts, pa.array(mask), replacements)


class BatchScrubber:
    """Scrubs arrays of texts in `jobs` processes (in this one when `jobs` is 1); texts with the
    same key always go to the same process. Use as a context manager."""

    def __init__(self, emails: bool, ips: bool, jobs: int) -> None:
        self.found: Counter[str] = Counter()
        self._local: LineScrubber | None = None
        self._shards: list[ProcessPoolExecutor] = []
        if jobs <= 1:
            self._local = LineScrubber(emails, ips)
            return
        Scrubber()  # imports detect-secrets here, once, before the forks
        self._shards = [
            ProcessPoolExecutor(1, initializer=_init_worker, initargs=(emails, ips))
            for _ in range(jobs)
        ]
        # Start the processes now (submitting forks them): a process forked later would inherit
        # the pipes of whatever subprocess is open then (`git cat-file`), which would then never
        # see its input close.
        for shard in self._shards:
            shard.submit(_ready)

    def __enter__(self) -> BatchScrubber:
        return self

    def __exit__(self, *exc: object) -> None:
        for shard in self._shards:
            shard.shutdown(cancel_futures=True)

    def submit(self, texts: pa.Array, keys: Sequence[str]) -> Pending:
        """Start scrubbing `texts` (a string array), one key per text; returns at once."""
        if self._local is not None:
            future: Future[Changed] = Future()
            future.set_result(self._local.scrub(texts.to_pylist()))
            return Pending(self, texts, [(np.arange(len(texts)), future)])
        n = len(self._shards)
        shard_of = np.fromiter((zlib.crc32(k.encode()) % n for k in keys), np.int64, len(keys))
        parts = []
        for i, shard in enumerate(self._shards):
            positions = np.flatnonzero(shard_of == i)
            if len(positions):
                parts.append((positions, shard.submit(_scrub, texts.take(positions))))
        return Pending(self, texts, parts)

    def many(self, texts: list[str | None], keys: Sequence[str]) -> list[str | None]:
        """`texts` scrubbed (waits for them)."""
        return self.submit(pa.array(texts, pa.string()), keys).result().to_pylist()


_worker: LineScrubber | None = None


def _init_worker(emails: bool, ips: bool) -> None:
    global _worker
    _worker = LineScrubber(emails, ips)


def _ready() -> None:
    assert _worker is not None


def _scrub(texts: pa.Array) -> Changed:
    assert _worker is not None, "called outside a worker process"
    return _worker.scrub(texts.to_pylist())
