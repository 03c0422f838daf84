#!/usr/bin/env python3
"""Benchmark repolm's deduplicator against the exact-only floor on real documents, in one run.

    python benchmarks/bench_dedup.py [--repo PATH] [--source files|diffs|versions|all]
                                     [--mb N] [--runs N] [--naive-docs N]

Documents, from --repo (default: this repository), per --source (default: all three, in turn):

  files      every tracked file at HEAD (binary files skipped)
  diffs      `git log --all -p` split into per-file diffs, cut to --mb megabytes
  versions   every version of every file in history, oldest first (the post-image blob of each
             change in `git log --all --reverse --raw`), cut to --mb megabytes: many near copies

Rows, each the best of --runs runs (default 3) over the same documents:

  sha256     hashlib.sha256(text.encode()) of each document: the exact-only floor
  deduper    Deduper().check(key, text) for each document, in a fresh Deduper
  batched    Deduper().check_many(docs) on runs of 1,000 documents (what the filter stage does:
             MinHashes computed for a run at once), same decisions
  naive      the same, but each MinHash built the textbook way (datasketch's default SHA-1
             hashfunc over shingle strings, MinHash.update_batch), on the first --naive-docs
             documents only (default 2000; 0 skips it), for scale

Prints documents/s, MB/s (10^6 bytes of UTF-8), ratios to the floor, the verdict counts, and the
memory a Deduper holds after a run (traced allocations, in one more untimed run).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

from timing import best_of

MB = 1e6


def git(repo: str, *args: str, input: bytes | None = None) -> bytes:
    return subprocess.run(
        ["git", "-C", repo, *args], input=input, capture_output=True, check=True
    ).stdout


def decode(data: bytes) -> str | None:
    return None if b"\0" in data[:8192] else data.decode("utf-8", "replace")


def load_files(repo: str, mb: float) -> list[tuple[str, str]]:
    docs = []
    for path in git(repo, "ls-files", "-z").decode().split("\0"):
        p = Path(repo) / path
        if path and p.is_file() and not p.is_symlink():
            text = decode(p.read_bytes())
            if text is not None:
                docs.append((path, text))
    return docs


def load_diffs(repo: str, mb: float) -> list[tuple[str, str]]:
    log = git(repo, "log", "--all", "-p", "--format=")[: int(mb * MB)].decode("utf-8", "replace")
    parts = re.split(r"^(?=diff --git )", log, flags=re.M)
    return [(f"diff{i}", p) for i, p in enumerate(parts) if p.startswith("diff --git ")]


def load_versions(repo: str, mb: float) -> list[tuple[str, str]]:
    raw = git(repo, "log", "--all", "--reverse", "--raw", "--no-abbrev", "--format=").decode()
    changes = []  # (blob, path) of each change's post-image, oldest first
    for line in raw.splitlines():
        if line.startswith(":"):
            meta, *paths = line.split("\t")
            blob = meta.split()[3]
            if set(blob) != {"0"}:
                changes.append((blob, paths[-1]))
    out = git(repo, "cat-file", "--batch", input="".join(f"{b}\n" for b, _ in changes).encode())
    docs, pos, size = [], 0, 0
    for i, (_blob, path) in enumerate(changes):
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        length = int(header[2]) if len(header) == 3 else 0
        data = out[end + 1 : end + 1 + length]
        pos = end + 1 + length + (1 if len(header) == 3 else 0)
        text = decode(data) if len(header) == 3 and header[1] == b"blob" else None
        if text is not None:
            docs.append((f"{path}@{i}", text))
            size += length
            if size >= mb * MB:
                break
    return docs


def naive_check(docs: list[tuple[str, str]]) -> object:
    """Exact by sha256, near with MinHash over shingle strings hashed by datasketch's SHA-1."""
    from datasketch import MinHash, MinHashLSH

    from repolm.filter.dedup import _TOKEN

    lsh, seen, sketches = MinHashLSH(threshold=0.85, num_perm=128), set(), {}
    for key, text in docs:
        digest = hashlib.sha256(text.encode()).digest()
        if digest in seen:
            continue
        seen.add(digest)
        tokens = _TOKEN.findall(text.encode())
        if len(tokens) < 20:
            continue
        m = MinHash(num_perm=128, seed=1)
        m.update_batch(b" ".join(tokens[i : i + 5]) for i in range(len(tokens) - 4))
        if not any(m.jaccard(sketches[c]) >= 0.85 for c in lsh.query(m)):
            lsh.insert(key, m)
            sketches[key] = m
    return None


def bench(name: str, docs: list[tuple[str, str]], runs: int, naive_docs: int) -> None:
    from repolm.filter.dedup import Deduper

    size = sum(len(t.encode("utf-8", "surrogatepass")) for _, t in docs) / MB
    print(f"\n## {name}: {len(docs)} documents, {size:.1f} MB\n")

    def floor() -> object:
        return [hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest() for _, t in docs]

    def dedup() -> Deduper:
        d = Deduper()
        for key, text in docs:
            d.check(key, text)
        return d

    def batched() -> Deduper:
        d = Deduper()
        for start in range(0, len(docs), 1000):
            d.check_many(docs[start : start + 1000])
        return d

    t_floor, _ = best_of(runs, floor)
    t_dedup, one_by_one = best_of(runs, dedup)
    t_batched, in_runs = best_of(runs, batched)
    assert one_by_one.stats == in_runs.stats
    tracemalloc.start()  # one more, untimed run: what a Deduper holds once it has seen them all
    deduper = dedup()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    rows = [
        ("sha256 (floor)", t_floor, len(docs), size),
        ("deduper", t_dedup, len(docs), size),
        ("deduper, batched", t_batched, len(docs), size),
    ]
    if naive_docs:
        sub = docs[:naive_docs]
        t_naive, _ = best_of(1, lambda: naive_check(sub))
        sub_size = sum(len(t.encode("utf-8", "surrogatepass")) for _, t in sub) / MB
        rows.append((f"naive datasketch ({len(sub)} docs)", t_naive, len(sub), sub_size))
    print("| row | seconds | docs/s | MB/s | slower than floor |")
    print("|---|---:|---:|---:|---:|")
    floor_rate = len(docs) / t_floor
    for label, seconds, n, mb in rows:
        print(
            f"| {label} | {seconds:.3f} | {n / seconds:,.0f} | {mb / seconds:.1f} "
            f"| {floor_rate / (n / seconds):.1f}x |"
        )
    stats = deduper.stats
    print(f"\nverdicts: {dict(stats)}")
    print(
        f"memory held by the Deduper (tracemalloc): {held / MB:.1f} MB, "
        f"{held / max(1, stats['unique']):,.0f} bytes per kept document, "
        f"of which {len(deduper._token_hashes):,} cached token hashes"
    )


LOADERS = {"files": load_files, "diffs": load_diffs, "versions": load_versions}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--source", choices=[*LOADERS, "all"], default="all")
    ap.add_argument("--mb", type=float, default=40.0, help="cut diffs/versions to this many MB")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--naive-docs", type=int, default=2000)
    args = ap.parse_args(argv)

    print(
        f"# bench_dedup: {args.repo}\n\n{platform.platform()}, Python {platform.python_version()}"
        f", {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f} at start"
    )
    for name in LOADERS if args.source == "all" else [args.source]:
        docs = LOADERS[name](args.repo, args.mb)
        bench(name, docs, args.runs, args.naive_docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
