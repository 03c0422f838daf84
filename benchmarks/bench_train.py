"""Training loop overhead: repolm's loop against a minimal plain-PyTorch loop on the same model,
batch and data, in the same process, alternating; prints tokens/s of each and their ratio
(target >= 0.9). On a CUDA GPU it also prints repolm's MFU.

    python benchmarks/bench_train.py RUN_DIR [--steps 30] [--rounds 2] [--set KEY=VALUE ...]

RUN_DIR is a run directory through `build` (e.g. `repolm run --until build --out RUN_DIR`);
`--set` overrides the config as on the CLI (e.g. `--set models.main.architecture=small`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

WARMUP = 3  # steps left out of every median


def plain_loop(
    run: Path, overrides: list[str], steps: int, preset: str | None = None
) -> list[float]:
    """The reference: the same model, the same batches, AdamW, clipping, nothing else."""
    import torch
    from accelerate.utils import set_seed
    from transformers import AutoTokenizer

    from repolm.config import load_config
    from repolm.train.data import PackedData, Schedule
    from repolm.train.models import architecture, build_scratch

    config = load_config(preset, overrides=overrides).config
    mc = config.models["main"]
    tc = mc.train
    set_seed(tc.seed)
    tok = AutoTokenizer.from_pretrained(run / "tokenizer")
    data = PackedData.read(run / "dataset" / "train")
    model = build_scratch(architecture(mc), tok)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    sched = Schedule(len(data), tc.micro_batch, tc.grad_accum, 1, tc.seed)
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else None
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        for index in sched.micro_batches(step, 0):
            batch = {k: torch.from_numpy(v).long().to(device) for k, v in data.batch(index).items()}
            with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
                loss = model(**batch).loss / tc.grad_accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def repolm_loop(run: Path, overrides: list[str], steps: int) -> tuple[list[float], dict]:
    """repolm's train stage on a copy of the run, timed per step by its own report."""
    from repolm.config import load_config
    from repolm.pipeline.runner import run_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        top = str(run)  # the run's own train/ and models/, not dataset/train
        shutil.copytree(run, out, ignore=lambda d, names: {"train", "models"} if d == top else ())
        extra = [
            f"train.max_steps={steps}",
            f"train.eval_every={steps}",
            f"train.checkpoint_every={steps}",
            "train.log_every=1000000",
        ]
        resolved = load_config(overrides=[*overrides, *extra])
        repo = Path(json.loads((run / "manifest.json").read_text())["repo_path"])
        run_pipeline(out, repo, resolved, only=["train"])
        report = json.loads((out / "train" / "report.json").read_text())["models"]["main"]
    tokens = (
        report["plan"]["global_batch"]
        * json.loads((run / "dataset" / "stats.json").read_text())["seq_len"]
    )
    return [tokens / tps for tps in report["tokens_per_s_per_step"]], report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    seq_len = json.loads((args.run / "dataset" / "stats.json").read_text())["seq_len"]
    plain, ours, mfu = [], [], []
    for _ in range(args.rounds):
        p = plain_loop(args.run, args.overrides, args.steps)
        plain.append(statistics.median(p[WARMUP:]))
        o, report = repolm_loop(args.run, args.overrides, args.steps)
        ours.append(statistics.median(o[WARMUP:]))
        if report.get("mfu") is not None:
            mfu.append(report["mfu"])
    tokens = report["plan"]["global_batch"] * seq_len
    tp, to = tokens / min(plain), tokens / min(ours)
    print(
        f"model {report['source']}: {report['parameters']['total']:,} parameters, "
        f"{report['precision']}, batch {report['plan']['global_batch']} x {seq_len} tokens, "
        f"{args.steps} steps x {args.rounds} rounds (median step, best round)"
    )
    print(f"plain PyTorch loop: {tp:,.0f} tokens/s")
    print(f"repolm loop:        {to:,.0f} tokens/s")
    print(f"ratio repolm/plain: {to / tp:.3f}  (target >= 0.9)")
    if mfu:
        print(f"repolm MFU: {max(mfu):.1%}")


if __name__ == "__main__":
    main()
