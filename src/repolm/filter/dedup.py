"""Exact and near-duplicate detection for the filter stage, documents checked in order.

A document is first an *exact* duplicate if its normalised text was seen before: line endings
(CRLF, CR) and trailing whitespace on each line are ignored, and so are blank lines at the end
and the final newline, because checkouts and editors change those without changing the code.
Indentation and case are kept: both carry meaning in code.

Otherwise it is a *near* duplicate if its MinHash (datasketch's "affine32" scheme) over word
shingles (`shingle` consecutive tokens) estimates a Jaccard similarity of at least `threshold`
with a document kept earlier. An LSH index (datasketch's `MinHashLSH` banding) proposes candidates
and every candidate is confirmed with the estimated Jaccard, since LSH has false positives. Tokens
are identifiers and numbers (runs of word bytes; any non-ASCII byte counts as a word byte, so
UTF-8 letters stay in their words) and single punctuation bytes; whitespace only separates them.
Tokens keep their case.

MinHash values, permutations and LSH bands are computed here as datasketch computes them (the
tests compare them), without importing datasketch: its LSH module pulls in scipy, 0.7 s of
start-up for one parameter search. A batch of documents is hashed at once (`check_many`).

Only kept documents are remembered, and only as a 16-byte content digest and, for documents of at
least `min_tokens` tokens, their MinHash values in the LSH index; never their text.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from itertools import chain
from typing import Literal

import numpy as np

Verdict = Literal["unique", "exact", "near"]

# One regex over UTF-8 bytes: a bytes pattern is ~40% faster than the same over str.
_TOKEN = re.compile(rb"[\w\x80-\xff]+|[^\w\s\x80-\xff]")
_CHUNK = 8192  # shingles permuted at once: caps the temporary array at 8192 x num_perm x 4 bytes
_TOKEN_CACHE_SIZE = 1 << 19  # tokens' hashes kept before the cache is emptied (~60 MB at most)
_MULTIPLIER = 0x9E3779B97F4A7C15  # odd: combining token hashes stays a bijection mod 2^64
_EMPTY = np.iinfo(np.uint32).max  # a MinHash value before any shingle


class _TokenHashes(dict[bytes, int]):
    """A stable 64-bit hash per token (blake2b, unlike `hash()` the same in every process),
    memoised: code reuses a small vocabulary, so most lookups are hits."""

    def __missing__(self, token: bytes) -> int:
        if len(self) >= _TOKEN_CACHE_SIZE:
            self.clear()
        value = self[token] = int.from_bytes(
            hashlib.blake2b(token, digest_size=8).digest(), "little"
        )
        return value


def normalise(text: str) -> str:
    """The text that exact duplicates share: LF line endings, no trailing whitespace on any line,
    no trailing blank lines or final newline."""
    return "\n".join([line.rstrip() for line in text.splitlines()]).rstrip("\n")


def permutations(num_perm: int, seed: int) -> np.ndarray:
    """`MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations`: (a, b) rows of
    uint32, `a` odd."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return np.array([a, b])


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) as `MinHashLSH(threshold, num_perm)` picks them: the pair that
    minimises the mean of the false-positive and false-negative probability mass. The integrands
    are polynomials of degree at most num_perm, which Gauss-Legendre quadrature with
    num_perm / 2 + 1 nodes integrates exactly (datasketch calls scipy's `quad`)."""
    x, w = np.polynomial.legendre.leggauss(num_perm // 2 + 1)
    pairs = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    b, r = (np.array(v, dtype=float)[:, None] for v in zip(*pairs, strict=True))
    below = threshold / 2 * (x + 1)  # nodes on [0, threshold] and on [threshold, 1]
    above = threshold + (1 - threshold) / 2 * (x + 1)
    false_positive = threshold / 2 * ((1 - (1 - below**r) ** b) @ w)
    false_negative = (1 - threshold) / 2 * (((1 - above**r) ** b) @ w)
    return pairs[int(np.argmin(false_positive * 0.5 + false_negative * 0.5))]


def shingle_hashes(token_hashes: np.ndarray, shingle: int) -> np.ndarray:
    """One 32-bit hash per run of `shingle` consecutive tokens (all tokens as one shingle when
    there are fewer), given each token's 64-bit hash; sorted, repeats removed."""
    return np.unique(_windows(token_hashes, shingle))


def _windows(token_hashes: np.ndarray, shingle: int) -> np.ndarray:
    """The 32-bit hash of every run of `shingle` tokens, in order, repeats included."""
    k = min(shingle, len(token_hashes))
    n = len(token_hashes) - k + 1
    h = token_hashes[:n].copy()
    for j in range(1, k):  # polynomial in uint64: wrap-around is the intended mod 2^64
        h *= np.uint64(_MULTIPLIER)
        h += token_hashes[j : j + n]
    # 32 bits suffice: a document has ~10^3-10^4 shingles, so collisions within one are ~10^-3
    # events, and datasketch's affine32 scheme keeps signatures at half affine64's memory.
    return (h ^ (h >> np.uint64(32))).astype(np.uint32)


def _mix(hashes: np.ndarray) -> np.ndarray:
    """datasketch's _fmix (MurmurHash3's 32-bit finaliser), applied before the permutations."""
    h = hashes ^ (hashes >> np.uint32(16))
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def signature(hashes: np.ndarray, permutations: np.ndarray) -> np.ndarray:
    """The MinHash values of a set of 32-bit hashes under datasketch's affine32 scheme, computed
    as `MinHash(hashfunc=int, scheme="affine32").update_batch(hashes)` does."""
    return signatures([hashes], permutations)[0]


def signatures(hash_sets: Sequence[np.ndarray], permutations: np.ndarray) -> np.ndarray:
    """`signature` of each non-empty array of 32-bit hashes (repeats allowed), one row each,
    computed together: `_CHUNK` rows of hashes at a time, each row's minimum per document."""
    a, b = permutations
    values = np.full((len(hash_sets), len(a)), _EMPTY, dtype=np.uint32)
    if not hash_sets:
        return values
    h = _mix(np.concatenate(hash_sets))
    ends = np.cumsum([len(s) for s in hash_sets])
    starts = ends - np.array([len(s) for s in hash_sets])
    for lo in range(0, len(h), _CHUNK):
        hi = min(lo + _CHUNK, len(h))
        # the documents with hashes in [lo, hi), and where each starts in it
        first, last = np.searchsorted(ends, lo, "right"), np.searchsorted(starts, hi, "left")
        offsets = np.maximum(starts[first:last], lo) - lo
        # permutations x hashes: each document's hashes are contiguous in a row (5x faster)
        permuted = np.multiply.outer(a, h[lo:hi])
        permuted += b[:, None]
        rows = values[first:last]  # a view: updated in place
        np.minimum(rows, np.minimum.reduceat(permuted, offsets, axis=1).T, out=rows)
    return values


class Deduper:
    """Streaming exact + near-duplicate detection (see the module docstring for what counts).

    `check(key, text)` is called once per document, in a fixed order (or `check_many` on a run
    of them); the first of a group of duplicates is kept and the later ones point at it. Same
    inputs in the same order give the same decisions: the permutations come from `seed` and no
    step depends on `hash()`.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.85,
        num_perm: int = 128,
        shingle: int = 5,
        min_tokens: int = 20,
        seed: int = 1,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if num_perm < 2:
            raise ValueError(f"num_perm must be at least 2, got {num_perm}")
        if shingle < 1:
            raise ValueError(f"shingle must be at least 1, got {shingle}")
        if min_tokens < 1:
            raise ValueError(f"min_tokens must be at least 1, got {min_tokens}")
        bands, rows = lsh_bands(threshold, num_perm)
        if bands < 2:
            raise ValueError(f"threshold {threshold} leaves the LSH index fewer than 2 bands")

        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle = shingle
        self.min_tokens = min_tokens
        self.seed = seed
        self.stats: Counter[str] = Counter(unique=0, exact=0, near=0)
        self._permutations = permutations(num_perm, seed)
        self._bands = [(i * rows, (i + 1) * rows) for i in range(bands)]
        # One table per band: the band's MinHash values -> keys of kept documents.
        self._index: list[dict[bytes, list[str]]] = [{} for _ in range(bands)]
        # digest of normalised text -> the verdict its later copies get (("exact", kept key) or,
        # for the text of a near duplicate, ("near", the key that one pointed at)).
        self._seen: dict[bytes, tuple[Verdict, str]] = {}
        # kept key -> (arrival order, its MinHash values or None when too short to have them)
        self._kept: dict[str, tuple[int, np.ndarray | None]] = {}
        self._token_hashes = _TokenHashes()

    def check(self, key: str, text: str) -> tuple[Verdict, str | None]:
        """Register `text` under `key` unless it duplicates an earlier document. Returns
        ("unique", None), ("exact", key_of_original) or ("near", key_of_original), where the
        original is always a document that was kept ("unique"). Documents shorter than
        `min_tokens` tokens are only checked for exact duplicates (MinHash is noise on tiny
        texts). Keys of kept documents must be unique."""
        return self.check_many([(key, text)])[0]

    def check_many(self, docs: Sequence[tuple[str, str]]) -> list[tuple[Verdict, str | None]]:
        """`check` of each (key, text) in order; the MinHashes are computed together."""
        digests = []
        hashed: dict[bytes, int] = {}  # digest -> row in `minhashes`, for documents to hash
        token_sets = []
        for _, text in docs:
            data = normalise(text).encode("utf-8", "surrogatepass")
            # 128 bits of SHA-256 (the fastest hashlib digest here): collisions are out of reach.
            digest = hashlib.sha256(data).digest()[:16]
            digests.append(digest)
            if digest in self._seen or digest in hashed:
                continue
            tokens = _TOKEN.findall(data)
            if len(tokens) >= self.min_tokens:
                hashed[digest] = len(token_sets)
                token_sets.append(tokens)
        minhashes = self._minhashes(token_sets)
        out = []
        for (key, _), digest in zip(docs, digests, strict=True):
            row = hashed.get(digest)
            out.append(self._decide(key, digest, None if row is None else minhashes[row]))
        return out

    def _decide(
        self, key: str, digest: bytes, minhash: np.ndarray | None
    ) -> tuple[Verdict, str | None]:
        if key in self._kept:
            raise ValueError(f"key {key!r} was already registered")
        seen = self._seen.get(digest)
        if seen is not None:
            self.stats[seen[0]] += 1
            return seen
        if minhash is not None:
            original = self._nearest(minhash)
            if original is not None:
                self._seen[digest] = ("near", original)
                self.stats["near"] += 1
                return "near", original
            for table, (start, end) in zip(self._index, self._bands, strict=True):
                table.setdefault(minhash[start:end].tobytes(), []).append(key)
        self._seen[digest] = ("exact", key)
        self._kept[key] = (len(self._kept), minhash)
        self.stats["unique"] += 1
        return "unique", None

    def _minhashes(self, token_sets: list[list[bytes]]) -> np.ndarray:
        """The MinHash values of each list of tokens, one row each."""
        if not token_sets:
            return np.empty((0, self.num_perm), dtype=np.uint32)
        lookup = self._token_hashes.__getitem__
        # All documents' tokens at once: few numpy calls per batch rather than per document.
        # (a list first: np.array on a list is faster than np.fromiter on the map)
        token_hashes = np.array(list(map(lookup, chain.from_iterable(token_sets))), np.uint64)
        k = self.shingle
        windows = _windows(token_hashes, k)
        hash_sets = []
        start = 0
        for tokens in token_sets:
            n = len(tokens)
            if n >= k:  # its runs of k tokens: those that start and end inside it
                hash_sets.append(windows[start : start + n - k + 1])
            else:
                hash_sets.append(_windows(token_hashes[start : start + n], k))
            start += n
        return signatures(hash_sets, self._permutations)

    def _nearest(self, minhash: np.ndarray) -> str | None:
        """The most similar kept document at or above the threshold (the earliest on a tie), as
        estimated by MinHash among the LSH's candidates."""
        candidates: set[str] = set()
        for table, (start, end) in zip(self._index, self._bands, strict=True):
            candidates.update(table.get(minhash[start:end].tobytes(), ()))
        best: tuple[float, int, str] | None = None
        for candidate in candidates:
            order, other = self._kept[candidate]
            assert other is not None  # only documents with a MinHash are in the index
            similarity = float(np.count_nonzero(minhash == other)) / float(len(minhash))
            if similarity >= self.threshold and (
                best is None or (similarity, -order) > (best[0], -best[1])
            ):
                best = (similarity, order, candidate)
        return None if best is None else best[2]
