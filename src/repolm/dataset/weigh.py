"""Pass 2 of the build stage: how many copies of each training document one epoch gets.

The documents are measured once (tokens, recency weights); each mix, the default `build.mix`
and every named one in `build.mixes`, then draws its copies from those sizes with the same seed,
so a named mix with the default's shares draws the default's copies.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from repolm.config.schema import BuildConfig, MixConfig
from repolm.errors import RepolmError
from repolm.formats import documents as dm

if TYPE_CHECKING:
    from repolm.dataset.corpus import Corpus, Encoder
    from repolm.split import Split

KINDS = ("files", "commits", "instructions", "qa")  # the mix's kinds


@dataclass
class Sizes:
    """The training documents as a mix sees them: tokens of each kind, and recency weights."""

    train: list[int]  # training commits with kept changes
    weights: np.ndarray  # recency weight of each
    file_pieces: int
    qa_pairs: int
    natural: dict[str, float]  # tokens of each kind, each document once
    weighted: dict[str, float]  # the same, recency-weighted


@dataclass
class Copies:
    """Copies of each training document in one epoch, and what the weighting decided."""

    records: dict[int, int]  # training commit -> copies of its record
    instructions: dict[int, int]  # training commit -> copies of its instruction pairs
    files: list[int]
    qa: list[int]
    shares: dict[str, dict[str, float]]
    weights: dict[str, float]


def _record_tokens(corpus: Corpus, i: int) -> int:
    return len(corpus.headers[i]) + sum(s.head + sum(s.hunks) for s in corpus.sections[i])


def _instruction_tokens(corpus: Corpus, i: int, prompts: tuple[int, int], budget: int) -> int:
    """Tokens of a commit's two instruction pairs as they will be packed (0 for one left out:
    see `implement_doc` and `describe_doc`)."""
    files = [s.head + sum(s.hunks) for s in corpus.sections[i]]
    msg = len(corpus.messages[i])
    implement = prompts[0] + msg + sum(files)
    room = budget - prompts[1] - msg
    kept = max(itertools.takewhile(lambda n: n <= room, itertools.accumulate(files)), default=0)
    return (implement if implement <= budget else 0) + (prompts[1] + kept + msg if kept else 0)


def measure(corpus: Corpus, cfg: BuildConfig, split: Split, enc: Encoder) -> Sizes:
    c = corpus.commits
    prompts = tuple(len(p) for p in enc.texts([dm.IMPLEMENT_PROMPT, dm.DESCRIBE_PROMPT]))
    train = [i for i in range(len(c.sha)) if c.split[i] == "train" and corpus.sections.get(i)]
    cutoff = split.cutoff_time.timestamp()
    w = np.asarray(
        [
            dm.recency_weight(
                (cutoff - c.time[i].timestamp()) / 86400,
                cfg.recency_half_life_days,
                cfg.recency_floor,
            )
            for i in train
        ],
        dtype=np.float64,
    )
    n_commit = np.asarray([_record_tokens(corpus, i) for i in train], dtype=np.float64)
    n_instr = np.asarray(
        [_instruction_tokens(corpus, i, prompts, cfg.seq_len - 1) for i in train], dtype=np.float64
    )
    n_file = np.asarray([len(ids) for ids, _ in corpus.files], dtype=np.float64)
    n_qa = np.asarray([len(ids) for ids, _ in corpus.qa], dtype=np.float64)
    natural = {
        "files": n_file.sum(),
        "commits": n_commit.sum(),
        "instructions": n_instr.sum(),
        "qa": n_qa.sum(),
    }
    weighted = {
        "files": n_file.sum(),
        "commits": (w * n_commit).sum(),
        "instructions": (w * n_instr).sum(),
        "qa": n_qa.sum(),
    }
    return Sizes(train, w, len(n_file), len(n_qa), natural, weighted)


def draw_copies(sizes: Sizes, mix: MixConfig, cfg: BuildConfig, where: str) -> Copies:
    """Copies for one mix: a document's expected copies are its kind's scale times its recency
    weight, so that each kind's tokens meet its share of the corpus's natural size. `where`
    names the mix in errors (`build.mix`, `build.mixes.NAME`)."""
    natural, weighted, w = sizes.natural, sizes.weighted, sizes.weights
    wanted = {k: getattr(mix, k) if natural[k] > 0 else 0.0 for k in KINDS}
    total_share = sum(wanted.values())
    if total_share <= 0:
        empty = ", ".join(k for k in KINDS if getattr(mix, k) > 0)
        raise RepolmError(
            f"{where} gives weight only to kinds with no documents in this repository ({empty})",
            f"set {where}.files / commits / instructions / qa above 0 for a kind with data",
        )
    size = sum(natural[k] for k in KINDS if wanted[k] > 0)
    # (weighted is 0 only when every weight underflowed: floor 0 and ancient history)
    scale = {
        k: (wanted[k] / total_share) * size / weighted[k] if wanted[k] and weighted[k] > 0 else 0.0
        for k in KINDS
    }
    gen = np.random.default_rng(cfg.seed)

    def draw(expected: np.ndarray) -> list[int]:
        base = np.floor(expected)
        extra = gen.random(len(expected)) < (expected - base)
        return np.minimum(base + extra, cfg.max_repeats).astype(int).tolist()

    return Copies(
        records=dict(zip(sizes.train, draw(scale["commits"] * w), strict=True)),
        instructions=dict(zip(sizes.train, draw(scale["instructions"] * w), strict=True)),
        files=draw(np.full(sizes.file_pieces, scale["files"])),
        qa=draw(np.full(sizes.qa_pairs, scale["qa"])),
        shares={"wanted": {k: round(wanted[k] / total_share, 4) for k in KINDS}},
        weights={
            "min": float(w.min()) if len(w) else 1.0,
            "mean": float(w.mean()) if len(w) else 1.0,
        },
    )
