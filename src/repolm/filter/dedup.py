"""Exact and near-duplicate detection for the filter stage, one document at a time.

A document is first an *exact* duplicate if its normalised text was seen before: line endings
(CRLF, CR) and trailing whitespace on each line are ignored, and so are blank lines at the end
and the final newline, because checkouts and editors change those without changing the code.
Indentation and case are kept: both carry meaning in code.

Otherwise it is a *near* duplicate if its MinHash (datasketch's "affine32" scheme) over word
shingles (`shingle` consecutive tokens) estimates a Jaccard similarity of at least `threshold`
with a document kept earlier. A `MinHashLSH` index proposes candidates and every candidate is
confirmed with the estimated Jaccard, since LSH has false positives. Tokens are identifiers and
numbers (runs of word bytes; any non-ASCII byte counts as a word byte, so UTF-8 letters stay in
their words) and single punctuation bytes; whitespace only separates them. Tokens keep their case.

Only kept documents are remembered, and only as a 16-byte content digest and, for documents of at
least `min_tokens` tokens, a `LeanMinHash` in the LSH index; never their text.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np
    from datasketch import LeanMinHash, MinHashLSH

Verdict = Literal["unique", "exact", "near"]

# One regex over UTF-8 bytes: a bytes pattern is ~40% faster than the same over str.
_TOKEN = re.compile(rb"[\w\x80-\xff]+|[^\w\s\x80-\xff]")
_SCHEME = "affine32"
_CHUNK = 2048  # shingles permuted at once: caps the temporary array at 2048 x num_perm x 4 bytes
_TOKEN_CACHE_SIZE = 1 << 19  # tokens' hashes kept before the cache is emptied (~60 MB at most)
_MULTIPLIER = 0x9E3779B97F4A7C15  # odd: combining token hashes stays a bijection mod 2^64


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


def shingle_hashes(token_hashes: np.ndarray, shingle: int) -> np.ndarray:
    """One 32-bit hash per run of `shingle` consecutive tokens (all tokens as one shingle when
    there are fewer), given each token's 64-bit hash; sorted, repeats removed (code repeats itself,
    and a sort costs less than permuting the repeats; numpy 2's hash-based np.unique is slower)."""
    import numpy as np

    k = min(shingle, len(token_hashes))
    n = len(token_hashes) - k + 1
    h = token_hashes[:n].copy()
    for j in range(1, k):  # polynomial in uint64: wrap-around is the intended mod 2^64
        h *= np.uint64(_MULTIPLIER)
        h += token_hashes[j : j + n]
    # 32 bits suffice: a document has ~10^3-10^4 shingles, so collisions within one are ~10^-3
    # events, and datasketch's affine32 scheme keeps signatures at half affine64's memory.
    folded = (h ^ (h >> np.uint64(32))).astype(np.uint32)
    folded.sort()
    first = np.empty(len(folded), dtype=bool)
    first[0] = True
    np.not_equal(folded[1:], folded[:-1], out=first[1:])
    return folded[first]


def signature(hashes: np.ndarray, permutations: np.ndarray) -> np.ndarray:
    """The MinHash values of a set of 32-bit hashes under datasketch's affine32 scheme, computed
    as `MinHash(hashfunc=int, scheme="affine32").update_batch(hashes)` does, in chunks."""
    import numpy as np

    a, b = permutations
    h = hashes ^ (hashes >> np.uint32(16))  # datasketch's _fmix (MurmurHash3's finaliser)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    values = np.full(len(a), np.iinfo(np.uint32).max, dtype=np.uint32)
    for start in range(0, len(h), _CHUNK):
        permuted = np.multiply.outer(h[start : start + _CHUNK], a)
        permuted += b
        np.minimum(values, permuted.min(axis=0), out=values)
    return values


class Deduper:
    """Streaming exact + near-duplicate detection (see the module docstring for what counts).

    `check(key, text)` is called once per document, in a fixed order; the first of a group of
    duplicates is kept and the later ones point at it. Same inputs in the same order give the
    same decisions: the permutations come from `seed` and no step depends on `hash()`.
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
        from datasketch import MinHash, MinHashLSH

        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle = shingle
        self.min_tokens = min_tokens
        self.seed = seed
        self.stats: Counter[str] = Counter(unique=0, exact=0, near=0)
        self._permutations = MinHash(num_perm=num_perm, seed=seed, scheme=_SCHEME).permutations
        self._lsh: MinHashLSH = MinHashLSH(threshold=threshold, num_perm=num_perm)
        # digest of normalised text -> the verdict its later copies get (("exact", kept key) or,
        # for the text of a near duplicate, ("near", the key that one pointed at)).
        self._seen: dict[bytes, tuple[Verdict, str]] = {}
        # kept key -> (arrival order, its MinHash or None when too short to have one)
        self._kept: dict[str, tuple[int, LeanMinHash | None]] = {}
        self._token_hashes = _TokenHashes()

    def check(self, key: str, text: str) -> tuple[Verdict, str | None]:
        """Register `text` under `key` unless it duplicates an earlier document. Returns
        ("unique", None), ("exact", key_of_original) or ("near", key_of_original), where the
        original is always a document that was kept ("unique"). Documents shorter than
        `min_tokens` tokens are only checked for exact duplicates (MinHash is noise on tiny
        texts). Keys of kept documents must be unique."""
        if key in self._kept:
            raise ValueError(f"key {key!r} was already registered")
        data = normalise(text).encode("utf-8", "surrogatepass")
        # 128 bits of SHA-256 (the fastest hashlib digest here): collisions are out of reach.
        digest = hashlib.sha256(data).digest()[:16]
        seen = self._seen.get(digest)
        if seen is not None:
            self.stats[seen[0]] += 1
            return seen

        tokens = _TOKEN.findall(data)
        minhash = None
        if len(tokens) >= self.min_tokens:
            minhash = self._minhash(tokens)
            original = self._nearest(minhash)
            if original is not None:
                self._seen[digest] = ("near", original)
                self.stats["near"] += 1
                return "near", original
            self._lsh.insert(key, minhash, check_duplication=False)
        self._seen[digest] = ("exact", key)
        self._kept[key] = (len(self._kept), minhash)
        self.stats["unique"] += 1
        return "unique", None

    def _minhash(self, tokens: list[bytes]) -> LeanMinHash:
        import numpy as np
        from datasketch import LeanMinHash

        # (a list first: np.array on a list is faster than np.fromiter on the map)
        token_hashes = np.array(list(map(self._token_hashes.__getitem__, tokens)), np.uint64)
        values = signature(shingle_hashes(token_hashes, self.shingle), self._permutations)
        return LeanMinHash(seed=self.seed, hashvalues=values, scheme=_SCHEME)

    def _nearest(self, minhash: LeanMinHash) -> str | None:
        """The most similar kept document at or above the threshold (the earliest on a tie), as
        estimated by MinHash among the LSH's candidates."""
        best: tuple[float, int, str] | None = None
        for candidate in self._lsh.query(minhash):
            order, other = self._kept[candidate]
            assert other is not None  # only documents with a MinHash are in the index
            similarity = minhash.jaccard(other)
            if similarity >= self.threshold and (
                best is None or (similarity, -order) > (best[0], -best[1])
            ):
                best = (similarity, order, candidate)
        return None if best is None else best[2]
