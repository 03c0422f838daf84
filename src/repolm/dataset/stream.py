"""Pass 3 of the build: each split's documents in packing order, from the encoded corpus and
the copies drawn for it; the future's records as text for the eval stage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

from repolm.config.schema import BuildConfig
from repolm.dataset.assemble import describe_doc, implement_doc, record_pieces
from repolm.dataset.corpus import Corpus, Encoder, Section
from repolm.dataset.evalsets import FUTURE
from repolm.dataset.pack import Doc
from repolm.dataset.shards import SPLITS
from repolm.dataset.weigh import Copies
from repolm.formats import documents as dm
from repolm.formats import special as sp
from repolm.split import Split


def training_diffs(corpus: Corpus, copies: Copies) -> set[bytes]:
    """The keys of every file diff in the training commits' records."""
    return {s.key for i in copies.records for s in corpus.sections[i] if s.hunks}


def held_out_sections(corpus: Corpus, i: int, seen: set[bytes]) -> list[Section]:
    """A future commit's file sections less the diffs that also occur in training."""
    return [s for s in corpus.sections[i] if not (s.hunks and s.key in seen)]


def future_records(corpus: Corpus, enc: Encoder, copies: Copies) -> list[tuple[Any, ...]]:
    """Each validation and test commit's whole record as text (header once, every kept file,
    end), oldest first: the text the eval stage measures bits per byte on. Unlike the packed
    pieces it repeats no header, so it doesn't depend on `seq_len`."""
    c = corpus.commits
    seen = training_diffs(corpus, copies)
    end = np.asarray([enc.ids[sp.COMMIT_END]], dtype=np.int32)
    rows, ids = [], []
    for i in c.chronological():
        if c.split[i] not in FUTURE or not corpus.sections.get(i):
            continue
        sections = [corpus.section_ids(s) for s in held_out_sections(corpus, i, seen)]
        if sections:
            files = [np.concatenate([head, *hunks]) for head, hunks in sections]
            ids.append(np.concatenate([corpus.headers[i], *files, end]))
            rows.append((c.sha[i], c.time[i], c.split[i]))
    return [(*r, text) for r, text in zip(rows, enc.decode(ids), strict=True)]


def stream_docs(
    corpus: Corpus,
    enc: Encoder,
    cfg: BuildConfig,
    part: str,
    copies: Copies,
    split: Split,
    tally: Counter[str],
) -> Iterator[Doc]:
    """The documents of one split in packing order. Training: round r holds the documents with
    at least r copies; in each round commit records run oldest to newest and the other kinds
    sit at random positions among them. Validation and test: each commit once, in order, with
    file diffs that also occur in training left out. FIM modes and documents left out are
    counted in `tally` (the corpus's for the default mix, one of its own for a named one)."""
    c = corpus.commits
    order = [i for i in c.chronological() if c.split[i] == part and corpus.sections.get(i)]
    budget = cfg.seq_len - 1
    implement = enc.texts([dm.IMPLEMENT_PROMPT])[0]
    describe = enc.texts([dm.DESCRIBE_PROMPT])[0]
    end = np.asarray([enc.ids[sp.COMMIT_END]], dtype=np.int32)
    train_keys = training_diffs(corpus, copies)
    gen = np.random.default_rng([cfg.seed, SPLITS.index(part)])
    dropped: set[tuple[str, int]] = set()

    def commit_docs(i: int, what: str) -> Iterator[Doc]:
        sections = corpus.sections[i]
        if part != "train":
            kept = held_out_sections(corpus, i, train_keys)
            if what == "record":
                tally[f"{part}_diffs_seen_in_train"] += len(sections) - len(kept)
            sections = kept
            if not sections:
                return
        ids = [corpus.section_ids(s) for s in sections]
        meta = lambda kind: (kind, c.sha[i], c.time[i])  # noqa: E731
        if what == "record":
            for piece in record_pieces(corpus.headers[i], ids, end, budget):
                yield Doc(piece, 0, meta("commit"))
            return
        whole = [np.concatenate([h, *hs]) for h, hs in ids]
        msg = corpus.messages[i]
        if what == "implement":
            doc = implement_doc(np.concatenate([implement, msg]), whole, budget, meta(what))
        else:
            doc = describe_doc(describe, whole, msg, budget, meta(what))
        if doc is None:
            if (what, i) not in dropped:  # counted once, not once per copy
                dropped.add((what, i))
                tally[f"{what}_too_long"] += 1
        else:
            yield doc

    if part != "train":
        for i in order:
            yield from commit_docs(i, "record")
        for i in order:
            yield from commit_docs(i, "implement")
            yield from commit_docs(i, "describe")
        return
    rank = {i: (n + 0.5) / len(order) for n, i in enumerate(order)}
    cutoff = (split.cutoff_sha, split.cutoff_time)
    for r in range(1, cfg.max_repeats + 1):
        refs: list[tuple[float, str, int]] = []
        refs += [(rank[i], "record", i) for i in order if copies.records[i] >= r]
        for kind, counts in (("implement", copies.instructions), ("describe", copies.instructions)):
            refs += [(-1.0, kind, i) for i in order if counts[i] >= r]
        refs += [(-1.0, "file", k) for k, n in enumerate(copies.files) if n >= r]
        refs += [(-1.0, "qa", k) for k, n in enumerate(copies.qa) if n >= r]
        if not refs:
            break
        keys = np.asarray([k for k, _, _ in refs])
        keys = np.where(keys < 0, gen.random(len(keys)), keys)
        for n in np.argsort(keys, kind="stable"):
            _, what, i = refs[n]
            if what == "file":
                ids, mode = corpus.files[i]
                tally[f"fim_{mode}"] += 1
                yield Doc(ids, 0, ("file", *cutoff))
            elif what == "qa":
                ids, prompt = corpus.qa[i]
                yield Doc(ids, prompt, ("qa", *cutoff))
            else:
                yield from commit_docs(i, what)
