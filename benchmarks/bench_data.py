#!/usr/bin/env python3
"""Time the data stages (chunk, filter, tokenize, build: whichever are built) against mining
of the same repository, in the same run.

    python benchmarks/bench_data.py REPO [--runs N] [--set KEY=VALUE]... [--json FILE]

Each run mines the repository from scratch into a fresh run directory, then runs every
registered data stage after it, and reads each stage's wall time from the manifest. Prints the
median seconds per stage and its ratio to the mining time; the issue's target is the data
stages together at most 5x mining.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

DATA_STAGES = ("chunk", "filter", "tokenize", "build")


def one_run(repo: Path, overrides: list[str]) -> dict[str, float]:
    from repolm.config import load_config
    from repolm.layout import RunLayout
    from repolm.pipeline.registry import REGISTRY
    from repolm.pipeline.runner import run_pipeline

    stages = [s for s in DATA_STAGES if s in REGISTRY]
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        out = Path(tmp) / "run"
        t0 = time.perf_counter()
        run_pipeline(out, repo, load_config(overrides=overrides), until=stages[-1], force=True)
        total = time.perf_counter() - t0
        manifest = json.loads(RunLayout(out).manifest.read_text())
    times = {name: manifest["stages"][name]["seconds"] for name in ("mine", *stages)}
    times["total"] = total
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override, e.g. --set chunk.jobs=2 (repeatable)",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    runs = []
    for i in range(args.runs):
        runs.append(one_run(args.repo, args.overrides))
        print(
            f"run {i + 1}/{args.runs}: " + ", ".join(f"{k} {v:.2f}s" for k, v in runs[-1].items()),
            file=sys.stderr,
        )
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    mine = med["mine"]
    data = [k for k in med if k in DATA_STAGES]
    print(f"## Data stages vs mining: {args.repo.name}\n")
    print(
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}; median of {args.runs} runs; "
        f"overrides: {' '.join(args.overrides) or 'none'}\n"
    )
    print("| stage | seconds | × mine |")
    print("|---|--:|--:|")
    for k in ("mine", *data):
        print(f"| {k} | {med[k]:.2f} | {med[k] / mine:.2f}× |")
    together = sum(med[k] for k in data)
    print(f"| **data stages together** | {together:.2f} | **{together / mine:.2f}×** |")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median": med}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
