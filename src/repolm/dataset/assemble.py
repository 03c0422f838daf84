"""Token-level assembly of documents that fit a sequence: pure functions on id arrays.

A commit record longer than a sequence is cut at file boundaries (then hunk boundaries), each
piece repeating the commit's header so it stays a readable record; instruction pairs are kept
whole (message -> diff) or their diff cut at file boundaries (diff -> message).
"""

from __future__ import annotations

import numpy as np

from repolm.dataset.pack import Doc

EMPTY = np.zeros(0, dtype=np.int32)


def cut(ids: np.ndarray, budget: int) -> list[np.ndarray]:
    """`ids` in consecutive pieces of at most `budget` tokens."""
    return [ids[i : i + budget] for i in range(0, len(ids), budget)] or [EMPTY]


def record_pieces(
    header: np.ndarray,
    sections: list[tuple[np.ndarray, list[np.ndarray]]],
    end: np.ndarray,
    budget: int,
) -> list[np.ndarray]:
    """A commit record (`header`, then per file its head and hunks, then `end`) in pieces of at
    most `budget` tokens. Every piece starts with the header; a file too long for one piece is
    cut between hunks, each part repeating the file's head; a hunk too long is cut anywhere."""
    room = budget - len(header) - len(end)
    if room < 8:  # a header that fills the sequence: keep what fits
        return [np.concatenate([header, end])[:budget]]
    parts: list[np.ndarray] = []
    for head, hunks in sections:
        whole = np.concatenate([head, *hunks]) if hunks else head
        if len(whole) <= room:
            parts.append(whole)
            continue
        for hunk in hunks or [EMPTY]:
            piece = np.concatenate([head, hunk])
            parts += cut(piece, room) if len(piece) > room else [piece]
    pieces: list[np.ndarray] = []
    current: list[np.ndarray] = []
    used = 0
    for part in parts:
        if current and used + len(part) > room:
            pieces.append(np.concatenate([header, *current]))
            current, used = [], 0
        current.append(part)
        used += len(part)
    pieces.append(np.concatenate([header, *current, end]))
    return pieces


def implement_doc(
    prompt: np.ndarray, sections: list[np.ndarray], budget: int, meta: tuple[object, ...]
) -> Doc | None:
    """message -> diff: the whole diff is the answer, so the pair is left out (None) when it
    does not fit; loss only on the diff."""
    response = np.concatenate(sections) if sections else EMPTY
    if not len(response) or len(prompt) + len(response) > budget:
        return None
    return Doc(np.concatenate([prompt, response]), prompt=len(prompt), meta=meta)


def describe_doc(
    instruction: np.ndarray,
    sections: list[np.ndarray],
    response: np.ndarray,
    budget: int,
    meta: tuple[object, ...],
) -> Doc | None:
    """diff -> message: as many whole files of the diff as fit before the message; None when
    not even one does (or the message alone is too long); loss only on the message."""
    room = budget - len(instruction) - len(response)
    kept: list[np.ndarray] = []
    used = 0
    for s in sections:
        if used + len(s) > room:
            break
        kept.append(s)
        used += len(s)
    if not kept or not len(response):
        return None
    prompt = np.concatenate([instruction, *kept])
    return Doc(np.concatenate([prompt, response]), prompt=len(prompt), meta=meta)
