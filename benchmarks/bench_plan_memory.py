"""`repolm plan`'s memory figure against the peak RSS of `repolm train` itself, on the same run
and shapes; prints both and their ratio (target: within 25%). A measurement of a whole
process, so it wants an idle machine: under load glibc's allocator opens more arenas and the
peak grows (seen: +36% with the two cores shared). tests/test_train_memory.py checks the
estimator's formulas against measured tensors.

    python benchmarks/bench_plan_memory.py RUN_DIR [--repo PATH] [--set KEY=VALUE ...]

RUN_DIR is a run directory through `build` (e.g. `repolm run --until build --out RUN_DIR`);
each shape trains 3 steps in a copy of it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MIB = 2**20
# the preset's own shape, and a wider one with a bigger batch
SHAPES = {
    "preset": [],
    "128 wide x 16": [
        "models.main.hidden=128",
        "models.main.heads=4",
        "models.main.kv_heads=4",
        "models.main.intermediate=256",
        "train.micro_batch=16",
    ],
}
# a fresh parent whose only child is the training run: its children's peak RSS is that run's
MEASURE = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
    "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_rss(repo: Path, run: Path, overrides: list[str]) -> int:
    args = [sys.executable, "-m", "repolm", "train", "--repo", str(repo), "--out", str(run)]
    for item in overrides:
        args += ["--set", item]
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1]) * 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    from repolm.config import load_config
    from repolm.layout import RunLayout
    from repolm.train.plan import plan_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    print(f"{'shape':<16} {'plan MiB':>9} {'peak MiB':>9} {'plan/peak':>9}")
    for name, shape in SHAPES.items():
        overrides = [*args.overrides, *shape, "train.max_steps=3"]
        config = load_config(overrides=overrides).config
        (plan,) = plan_models(args.run, config, measure=False)
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            shutil.copytree(args.run, run)  # copy2 keeps mtimes: the data stages stay cached
            shutil.rmtree(RunLayout(run).train_dir, ignore_errors=True)
            shutil.rmtree(RunLayout(run).models_dir, ignore_errors=True)
            peak = peak_rss(args.repo, run, overrides)
        ratio = plan.needed / peak
        flag = "" if abs(ratio - 1) <= 0.25 else "  (outside 25%)"
        print(f"{name:<16} {plan.needed / MIB:>9.0f} {peak / MIB:>9.0f} {ratio:>9.2f}{flag}")


if __name__ == "__main__":
    main()
