#!/usr/bin/env python3
"""Benchmark repolm's secrets scrubber against two references on the same text, in one run.

    python benchmarks/bench_scrub.py [FILE_OR_DIR ...] [--repo PATH] [--run OUT] [--mb N]
                                     [--runs N]

Text: the given files (directories are walked, binary files skipped); else, with --run, the
texts the filter stage scrubs most of, from a run directory that has been through `chunk`
(history's patches, OUT/mine/changes.parquet, then units, OUT/chunk/chunks.parquet); else
`git log --all -p` of --repo (default: this repository), cut to --mb megabytes (default 50).
Rows:

  floor        text.count("\\n"): reading the text once in C
  alternation  one compiled `re` alternation of the precise token patterns alone, over the
               str (what a naive single-regex scrubber costs, before any key-value parsing)
  scrubber     Scrubber().scrub(text): every pass, findings replaced
  line cache   the filter stage's way, on the same text as pieces (files, patches and units,
               or per-file diffs): each distinct line scanned once, only pieces with a suspect
               line scrubbed (`LineScrubber.scrub`, one process, a fresh cache each run).
               `git log -p` is its worst case: each piece starts with a commit header whose
               author email makes it suspect, and diffs repeat few lines

Each row is the best of --runs runs (default 3). Prints MB/s (10^6 bytes of UTF-8 per
second), ratios to the floor, and the counts by finding type (types only, never values).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from timing import best_of

MB = 1e6


def load_run(run: str, limit: int) -> list[str]:
    import pyarrow.parquet as pq

    pieces, size = [], 0
    for path, column in (("mine/changes.parquet", "patch"), ("chunk/chunks.parquet", "text")):
        for text in pq.read_table(Path(run) / path, columns=[column]).column(column).to_pylist():
            if text and size < limit:
                pieces.append(text)
                size += len(text.encode("utf-8", "surrogatepass"))
    return pieces


def load_text(paths: list[str], repo: str, run: str | None, mb: float) -> tuple[list[str], str]:
    """The text as pieces (files, patches and units, or per-file diffs of `git log -p`) and
    where it came from."""
    limit = int(mb * MB)
    if run and not paths:
        pieces = load_run(run, limit)
        return pieces, f"{len(pieces)} patches and units of {run} (first {mb:g} MB)"
    if paths:
        chunks, size = [], 0
        for p in paths:
            files = sorted(Path(p).rglob("*")) if Path(p).is_dir() else [Path(p)]
            for f in files:
                if size >= limit or not f.is_file() or ".git" in f.parts:
                    continue
                data = f.read_bytes()
                if b"\0" in data[:8192]:
                    continue
                chunks.append(data.decode("utf-8", "replace"))
                size += len(data)
        return chunks, f"{len(chunks)} file(s) under {', '.join(paths)}"
    proc = subprocess.Popen(
        ["git", "-C", repo, "log", "--all", "-p"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    data = proc.stdout.read(limit)
    proc.kill()
    proc.wait()
    pieces = re.split(r"(?=\ndiff --git )", data.decode("utf-8", "replace"))
    return pieces, f"git log --all -p of {repo} (first {mb:g} MB)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("paths", nargs="*", help="files or directories to scrub (default: --repo)")
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--run", help="a run directory that has been through the chunk stage")
    ap.add_argument("--mb", type=float, default=50.0, help="cut the text to this many MB")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)

    from repolm.filter import patterns
    from repolm.filter.batch import LineScrubber
    from repolm.filter.secrets import Scrubber

    pieces, source = load_text(args.paths, args.repo, args.run, args.mb)
    text = "".join(pieces)
    size = len(text.encode("utf-8", "surrogatepass")) / MB
    alternation = re.compile(
        "|".join(f"(?:{p.regex.pattern.decode()})" for p in patterns.TOKEN_PATTERNS)
    )
    scrubber = Scrubber()

    print(f"# bench_scrub: {source}")
    print(f"{size:.1f} MB, {text.count(chr(10)):,} lines, ascii={text.isascii()}")
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPU(s)")
    rows = [
        ("floor: text.count('\\n')", lambda: text.count("\n")),
        ("alternation of token patterns", lambda: sum(1 for _ in alternation.finditer(text))),
        ("Scrubber().scrub", lambda: scrubber.scrub(text)),
        ("LineScrubber().scrub(pieces)", lambda: LineScrubber(True, True).scrub(pieces)),
    ]
    print(f"\n| {'row':32} | {'seconds':>8} | {'MB/s':>9} | {'x floor':>8} |")
    print(f"|{'-' * 34}|{'-' * 10}|{'-' * 11}|{'-' * 10}|")
    floor = None
    counts = None
    for name, fn in rows:
        secs, result = best_of(args.runs, fn)
        floor = floor or secs
        print(f"| {name:32} | {secs:8.3f} | {size / secs:9.1f} | {secs / floor:8.1f} |")
        if isinstance(result, tuple) and isinstance(result[1], Counter):
            counts = result[1]
    print(f"\nfindings by type: {dict(sorted(counts.items())) if counts else {}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
