"""Exact and near-duplicate detection (`repolm.filter.dedup`)."""

from __future__ import annotations

import numpy as np
import pytest
from datasketch import MinHash

from repolm.filter.dedup import (
    Deduper,
    lsh_bands,
    permutations,
    shingle_hashes,
    signature,
    signatures,
)


def source(n: int = 200, changed: range | set[int] = range(0), tag: str = "x") -> str:
    """A ~200-line Python file whose lines all differ; lines in `changed` are rewritten."""
    lines = []
    for i in range(n):
        if i in changed:
            lines.append(f"    other_{tag}_{i} = rewrite({tag!r}, gamma_{i * 7}) - {i * 31}")
        else:
            lines.append(f"    value_{i} = compute(alpha_{i % 7}, beta_{i}) + {i * 13}")
    return "def f():\n" + "\n".join(lines) + "\n"


def jaccard(a: str, b: str, k: int = 5) -> float:
    """The true Jaccard similarity of two texts' k-shingles, with the module's tokeniser."""
    from repolm.filter.dedup import _TOKEN

    def shingles(text: str) -> set[tuple[bytes, ...]]:
        tokens = _TOKEN.findall(text.encode())
        return {tuple(tokens[i : i + k]) for i in range(len(tokens) - k + 1)}

    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def test_exact_duplicates_point_at_the_first_copy() -> None:
    d = Deduper()
    assert d.check("a.py", source()) == ("unique", None)
    assert d.check("b.py", source()) == ("exact", "a.py")
    assert d.check("c.py", source()) == ("exact", "a.py")
    assert d.stats == {"unique": 1, "exact": 2, "near": 0}


def test_line_endings_and_trailing_whitespace_are_ignored() -> None:
    text = source()
    d = Deduper()
    d.check("lf", text)
    assert d.check("crlf", text.replace("\n", "\r\n")) == ("exact", "lf")
    assert d.check("cr", text.replace("\n", "\r")) == ("exact", "lf")
    assert d.check("spaces", text.replace("\n", "  \t\n")) == ("exact", "lf")
    assert d.check("no final newline", text.rstrip("\n")) == ("exact", "lf")
    assert d.check("blank lines at end", text + "\n\n\n") == ("exact", "lf")
    # Indentation is code: not an exact copy, but the same tokens, so a near one.
    assert d.check("dedented", text.replace("\n    ", "\n")) == ("near", "lf")


def test_a_few_lines_changed_is_near_half_changed_is_unique() -> None:
    original = source()
    few = source(changed={10, 60, 110, 160, 190}, tag="few")
    half = source(changed=set(range(0, 200, 2)), tag="half")
    assert jaccard(original, few) > 0.9
    assert jaccard(original, half) < 0.5
    d = Deduper()
    assert d.check("orig.py", original) == ("unique", None)
    assert d.check("few.py", few) == ("near", "orig.py")
    assert d.check("half.py", half) == ("unique", None)
    assert d.stats == {"unique": 2, "exact": 0, "near": 1}


def test_threshold_decides_the_same_pair() -> None:
    original = source()
    edited = source(changed=set(range(0, 200, 12)), tag="t")  # 17 lines of 200
    assert 0.7 < jaccard(original, edited) < 0.85
    for threshold, verdict in ((0.6, "near"), (0.95, "unique")):
        d = Deduper(threshold=threshold)
        d.check("orig", original)
        assert d.check("edited", edited)[0] == verdict, threshold


def test_short_documents_are_never_near() -> None:
    short = "x = compute(alpha, beta) + gamma(1, 2)"  # 17 tokens
    d = Deduper(min_tokens=20)
    assert d.check("a", short) == ("unique", None)
    assert d.check("b", short.replace("gamma", "delta")) == ("unique", None)
    assert d.check("c", short + "\n") == ("exact", "a")
    # With a lower floor the same pair is near.
    d = Deduper(min_tokens=5, threshold=0.3)  # 8 of 18 shingles shared
    d.check("a", short)
    assert d.check("b", short.replace("gamma", "delta")) == ("near", "a")


def test_near_keys_point_at_kept_documents() -> None:
    d = Deduper()
    d.check("v1", source())
    d.check("v2", source(changed={5}, tag="a"))
    # v3 is close to v2 (a near duplicate, not kept): it points at the kept v1.
    assert d.check("v3", source(changed={5, 6}, tag="a")) == ("near", "v1")
    # A copy of a near duplicate gets that one's verdict without a new MinHash.
    assert d.check("v2 copy", source(changed={5}, tag="a")) == ("near", "v1")
    assert d.stats == {"unique": 1, "exact": 0, "near": 3}


def test_same_inputs_same_decisions() -> None:
    docs = [
        (f"d{i}", source(changed=set(range(i, 200, 9 - i % 5)), tag=f"t{i % 3}")) for i in range(12)
    ]
    docs += [("copy", docs[0][1]), ("crlf", docs[7][1].replace("\n", "\r\n"))]
    runs = []
    for _ in range(2):
        d = Deduper(threshold=0.5)
        runs.append(([d.check(k, t) for k, t in docs], dict(d.stats)))
    assert runs[0] == runs[1]
    assert {"unique", "exact", "near"} <= {v for v, _ in runs[0][0]}


def test_seed_changes_the_permutations() -> None:
    a, b = Deduper(seed=1), Deduper(seed=2)
    assert not np.array_equal(a._permutations, b._permutations)


def test_signature_is_datasketchs_minhash() -> None:
    tokens = np.random.default_rng(0).integers(0, 2**63, size=3000, dtype=np.uint64)
    hashes = shingle_hashes(tokens, 5)
    assert hashes.dtype == np.uint32 and len(hashes) == 2996
    reference = MinHash(num_perm=64, seed=7, hashfunc=int, scheme="affine32")
    reference.update_batch(hashes.tolist())
    ours = signature(hashes, reference.permutations)
    assert np.array_equal(ours, reference.hashvalues)


def test_fewer_tokens_than_a_shingle_make_one_shingle() -> None:
    tokens = np.array([1, 2, 3], dtype=np.uint64)
    assert len(shingle_hashes(tokens, 5)) == 1


def test_repeated_key_and_bad_settings_are_rejected() -> None:
    d = Deduper()
    d.check("a", source())
    with pytest.raises(ValueError, match="'a' was already registered"):
        d.check("a", source(tag="other", changed={1}))
    for bad in ({"threshold": 0.0}, {"threshold": 1.5}, {"shingle": 0}, {"num_perm": 1}):
        with pytest.raises(ValueError):
            Deduper(**bad)


def test_permutations_are_datasketchs() -> None:
    for num_perm, seed in ((128, 1), (64, 7), (3, 0)):
        reference = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
        assert np.array_equal(permutations(num_perm, seed), reference)


def test_lsh_bands_are_datasketchs() -> None:
    from datasketch.lsh import _optimal_param

    for num_perm in (16, 64, 128):
        for threshold in (0.05, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0):
            ours = lsh_bands(threshold, num_perm)
            assert ours == _optimal_param(threshold, num_perm, 0.5, 0.5), (threshold, num_perm)
    assert lsh_bands(0.85, 128) == (8, 16)


def test_lsh_candidates_are_datasketchs() -> None:
    """Our band tables propose the same candidates as `MinHashLSH` for the same signatures."""
    from datasketch import LeanMinHash, MinHashLSH

    from repolm.filter.dedup import _TOKEN

    d = Deduper(threshold=0.5)
    lsh = MinHashLSH(threshold=0.5, num_perm=128)
    docs = [source(changed=set(range(i, 200, 3 + i)), tag=f"t{i % 2}") for i in range(8)]
    for i, text in enumerate(docs):
        d.check(f"d{i}", text)
        _, minhash = d._kept.get(f"d{i}", (0, None))
        if minhash is not None:
            lsh.insert(f"d{i}", LeanMinHash(seed=1, hashvalues=minhash, scheme="affine32"))
    probe = d._minhashes([_TOKEN.findall(source(changed={3, 4}).encode())])[0]
    ours = set()
    for table, (start, end) in zip(d._index, d._bands, strict=True):
        ours.update(table.get(probe[start:end].tobytes(), ()))
    theirs = set(lsh.query(LeanMinHash(seed=1, hashvalues=probe, scheme="affine32")))
    assert ours == theirs and ours


def test_signatures_of_many_sets_at_once() -> None:
    rng = np.random.default_rng(1)
    sets = [rng.integers(0, 2**32, size=n, dtype=np.uint32) for n in (1, 5, 3000, 9000, 17, 2)]
    perms = permutations(128, 1)
    together = signatures(sets, perms)
    for row, hashes in zip(together, sets, strict=True):
        reference = MinHash(num_perm=128, seed=1, hashfunc=int, scheme="affine32")
        reference.update_batch(hashes.tolist())
        assert np.array_equal(row, reference.hashvalues)


def test_check_many_decides_as_check_one_by_one() -> None:
    docs = [
        (f"d{i}", source(changed=set(range(i, 200, 7 + i % 4)), tag=f"t{i % 3}")) for i in range(10)
    ]
    docs += [("copy", docs[2][1]), ("short", "x = 1"), ("short copy", "x = 1\n")]
    docs += [("tiny", "a b"), ("near copy", docs[0][1].replace("value_7 ", "value_7x "))]
    one = Deduper(threshold=0.6, min_tokens=2, shingle=3)
    many = Deduper(threshold=0.6, min_tokens=2, shingle=3)
    expected = [one.check(k, t) for k, t in docs]
    assert many.check_many(docs[:4]) + many.check_many(docs[4:]) == expected
    assert one.stats == many.stats
    assert {"unique", "exact", "near"} <= {v for v, _ in expected}
