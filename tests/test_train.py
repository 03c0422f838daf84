"""The train stage on CPU with tiny models (2 layers, hidden 32) built from configs: parameters
change, LoRA touches only adapters, merging is exact, a SIGKILLed run resumes to the same
weights, early stopping, outputs that plain transformers loads, two processes with gloo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_MODEL, calc_run, save_base_model
from repolm.config import load_config
from repolm.pipeline.runner import run_pipeline
from repolm.train.data import Schedule

DATA = [
    "tokenize.vocab_size=400",
    "build.seq_len=64",
    "build.batch_size=4",
    "split.test_fraction=0.12",
    "split.val_fraction=0.08",
]
TINY = [
    *TINY_MODEL,
    "train.micro_batch=4",
    "train.eval_every=2",
    "train.eval_sequences=8",
    "train.log_every=1",
    "train.hardware_every_s=0.2",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(repository, run directory through build), shared by the module's tests."""
    return calc_run(tmp_path_factory, "train", DATA, until="build")


def fresh_run(built: tuple[Path, Path], tmp_path: Path, name: str = "run") -> Path:
    out = tmp_path / name
    shutil.copytree(built[1], out)  # copy2 keeps mtimes: the data stages stay cached
    return out


def train(repo: Path, out: Path, *extra: str, options: dict | None = None) -> dict:
    run_pipeline(
        out, repo, load_config(overrides=[*DATA, *TINY, *extra]), only=["train"], options=options
    )
    return json.loads((out / "train" / "report.json").read_text())["models"]["main"]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_schedule_covers_every_sequence_and_splits_by_process() -> None:
    s1 = Schedule(sequences=10, micro_batch=2, grad_accum=2, world=1, seed=3)
    s2 = Schedule(sequences=10, micro_batch=2, grad_accum=1, world=2, seed=3)
    assert s1.steps_per_epoch == 3 and s1.global_batch == 4
    seen = np.concatenate([np.concatenate(s1.micro_batches(step, 0)) for step in range(3)])
    assert set(seen.tolist()) == set(range(10))  # the last step is topped up from the start
    for step in range(6):  # one process accumulating = two processes, the same sequences
        one = np.sort(np.concatenate(s1.micro_batches(step, 0)))
        two = np.sort(np.concatenate([s2.micro_batches(step, r)[0] for r in (0, 1)]))
        assert one.tolist() == two.tolist()
    assert not np.array_equal(s1.permutation(0), s1.permutation(1))


def test_from_scratch_every_parameter_changes_and_outputs_load(built, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    repo, _ = built
    out = fresh_run(built, tmp_path)
    report = train(repo, out, "train.max_steps=1", "train.save=merged")
    model_dir = out / "models" / "main"
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= {
        p.name for p in model_dir.iterdir()
    }
    # how to prompt it: the data held FIM samples (build.fim_rate 0.5 of the file samples)
    assert json.loads((model_dir / "config.json").read_text())["repolm"] == {"fim": True}
    # the initial weights: the same seed and architecture, no step taken
    from repolm.train.models import architecture, build_scratch

    torch.manual_seed(0)
    cfg = load_config(overrides=[*DATA, *TINY]).config.models["main"]
    tok = AutoTokenizer.from_pretrained(model_dir)
    from accelerate.utils import set_seed

    set_seed(0)
    initial = build_scratch(architecture(cfg), tok).state_dict()
    trained = weights(model_dir)
    for name, tensor in trained.items():
        assert not torch.equal(tensor, initial[name]), f"{name} did not change"
    assert report["parameters"]["total"] == report["parameters"]["trainable"] > 0
    assert report["steps"] == 1 and report["validation"]["final"]["loss"] > 0
    # 6 per parameter and 12 x layers x hidden x seq_len of attention (device.py)
    n = report["parameters"]["total"]
    assert report["flops_per_token"] == 6 * n + 12 * 2 * 32 * 64

    model = AutoModelForCausalLM.from_pretrained(model_dir)  # plain transformers
    assert model.config.model_type == "llama" and model.config.tie_word_embeddings
    ids = tok("def op_1(a, b):", return_tensors="pt").input_ids
    gen = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] == ids.shape[1] + 4
    # the run is summarised in the manifest
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["main"]["steps"] == 1


def test_early_stopping_on_patience(built, tmp_path: Path) -> None:
    repo, _ = built
    out = fresh_run(built, tmp_path)
    # every evaluation after the first fails to improve by 100 nats
    report = train(
        repo,
        out,
        "train.max_steps=20",
        "train.eval_every=1",
        "train.patience=2",
        "train.min_delta=100",
    )
    assert report["early_stopping"]["stopped"] == "patience"
    assert report["steps"] == 3 and report["early_stopping"]["best_step"] == 1
    assert [e["step"] for e in report["validation"]["evaluations"]] == [1, 2, 3]


def test_learning_reduces_validation_loss_below_unigram(built, tmp_path: Path) -> None:
    repo, _ = built
    out = fresh_run(built, tmp_path)
    report = train(repo, out, "train.max_steps=60", "train.eval_every=30", "train.lr=0.01")
    v = report["validation"]
    assert v["best"]["loss"] < v["evaluations"][0]["loss"]
    assert v["best"]["loss"] < v["unigram_loss"]
    assert report["lr"]["max"] > report["lr"]["min"] and report["grad_norm"]["max"] > 0
    assert len(report["loss"]["per_step"]) == 60
    assert list((out / "train" / "main" / "tensorboard").glob("events.out.tfevents.*"))


def cli(repo: Path, out: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "repolm", "train", "--repo", str(repo), "--out", str(out)]
    for item in [*DATA, *TINY, *extra]:
        args += ["--set", item]
    return args


@pytest.mark.slow  # subprocess runs of the CLI: seconds each
def test_sigkill_then_resume_gives_the_same_weights(built, tmp_path: Path) -> None:
    repo, _ = built
    # 30 steps: the run is still going when its step-6 checkpoint appears and it is killed
    steps = ["train.max_steps=30", "train.checkpoint_every=3", "train.eval_every=4"]
    whole = fresh_run(built, tmp_path, "whole")
    subprocess.run(cli(repo, whole, *steps), check=True, capture_output=True)

    cut = fresh_run(built, tmp_path, "cut")
    proc = subprocess.Popen(
        cli(repo, cut, *steps), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpts = cut / "train" / "main" / "checkpoints"
    deadline = time.monotonic() + 120
    while not (ckpts / "step-00000006" / "state.json").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "models" / "main").exists()
    done = subprocess.run(cli(repo, cut, *steps), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed from step-0000000" in done.stderr
    a, b = weights(whole / "models" / "main"), weights(cut / "models" / "main")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    ra = json.loads((whole / "train" / "report.json").read_text())["models"]["main"]
    rb = json.loads((cut / "train" / "report.json").read_text())["models"]["main"]
    assert ra["loss"]["per_step"] == rb["loss"]["per_step"]


@pytest.mark.slow  # subprocess runs of the CLI: seconds each
def test_sigterm_saves_a_checkpoint_and_exits_130(built, tmp_path: Path) -> None:
    repo, _ = built
    out = fresh_run(built, tmp_path)
    args = cli(repo, out, "train.epochs=100000", "train.eval_every=100000")  # runs until stopped
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tb = out / "train" / "main" / "tensorboard"
    deadline = time.monotonic() + 120
    while not tb.exists():  # training has started
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    ckpts = list((out / "train" / "main" / "checkpoints").glob("step-*"))
    assert len(ckpts) == 1 and (ckpts[0] / "state.json").is_file()
    assert not list((out / "train" / "main" / "checkpoints").glob(".*tmp"))


def test_resume_requires_a_checkpoint(built, tmp_path: Path) -> None:
    repo, _ = built
    out = fresh_run(built, tmp_path)
    done = subprocess.run(
        cli(repo, out, "train.max_steps=1") + ["--resume"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "no checkpoint of this configuration" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_model_configs_fail_clearly(built, tmp_path: Path) -> None:
    from repolm.errors import ConfigError, RepolmError

    repo, _ = built
    out = fresh_run(built, tmp_path)
    with pytest.raises(RepolmError, match="unknown architecture 'huge'"):
        train(repo, out, "models.main.architecture=huge")
    with pytest.raises(RepolmError, match="not a multiple of"):
        train(repo, out, "models.main.hidden=30", "models.main.heads=4")
    with pytest.raises(ConfigError, match="method lora trains adapters on a base model"):
        load_config(overrides=["models.main.method=lora"])
    with pytest.raises(RepolmError, match="the run's tokenizer is trained from scratch"):
        train(repo, out, "models.main.base=/nonexistent")
    with pytest.raises(RepolmError, match="mix 'chat', which the build did not make"):
        train(repo, out, "models.main.mix=chat")


# -- a locally saved Hugging Face base model ------------------------------------------------


@pytest.fixture(scope="module")
def built_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(repository, run directory through build with the base's tokenizer, base model)."""
    base = save_base_model(tmp_path_factory.mktemp("base") / "base")
    return (*calc_run(tmp_path_factory, "train-base", base_data(base), until="build"), base)


def base_data(base: Path) -> list[str]:
    return [*DATA, "tokenize.kind=base", f"tokenize.base_model={base}", f"models.main.base={base}"]


def train_base(built_base, out: Path, *extra: str) -> dict:
    repo, _, base = built_base
    small = [
        "train.micro_batch=4",
        "train.eval_every=2",
        "train.eval_sequences=8",
        "train.hardware_every_s=0.2",
    ]
    run_pipeline(
        out, repo, load_config(overrides=[*base_data(base), *small, *extra]), only=["train"]
    )
    return json.loads((out / "train" / "report.json").read_text())["models"]["main"]


def test_full_fine_tuning_of_a_local_model_resizes_embeddings(built_base, tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    shutil.copytree(built_base[1], out)
    report = train_base(built_base, out, "train.max_steps=2")
    model_dir = out / "models" / "main"
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert "<|commit|>" in tok.get_vocab()
    assert model.get_input_embeddings().weight.shape[0] >= len(tok) > 300
    base = AutoModelForCausalLM.from_pretrained(built_base[2])
    changed = [
        n
        for n, p in base.named_parameters()
        if not torch.equal(p, model.state_dict()[n][: p.shape[0]])
    ]
    assert len(changed) == len(list(base.parameters()))
    assert report["source"] == str(built_base[2]) and report["method"] == "full"


def test_lora_changes_only_adapters_and_merging_is_exact(built_base, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    shutil.copytree(built_base[1], out)
    # bf16 over an fp32 checkpoint (what `auto` picks on a CPU with AVX512-BF16): the frozen
    # rows peft saves with the resized embeddings must still be the checkpoint's own
    report = train_base(
        built_base,
        out,
        "models.main.method=lora",
        "models.main.lora.rank=4",
        "train.max_steps=3",
        "train.lr=0.01",
        "train.precision=bf16",
    )
    assert report["parameters"]["trainable"] < report["parameters"]["total"] / 4
    model_dir = out / "models" / "main"
    adapter = model_dir / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert json.loads((model_dir / "config.json").read_text())["repolm"] == {"fim": True}
    assert (adapter / "adapter_model.safetensors").is_file()

    tok = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(built_base[2])
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    base.resize_token_embeddings(len(tok), pad_to_multiple_of=64)
    # peft stores the resized embedding and head in the adapter (their new rows are new)
    with_adapter = PeftModel.from_pretrained(base, str(adapter))
    lora_b = [p for n, p in with_adapter.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # adapters trained (B starts at 0)
    frozen = 0
    for n, p in with_adapter.get_base_model().named_parameters():
        if "lora_" in n or "trainable_tokens_delta" in n:
            continue
        old = before[n.replace(".token_adapter", "").replace(".base_layer", "")]
        assert torch.equal(p[: old.shape[0]], old), f"frozen weight {n} changed"
        frozen += 1
    assert frozen >= len(before)

    merged = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = torch.tensor([tok("def op_3(a, b):\n    return <|commit|>").input_ids])
    with torch.no_grad():
        a = with_adapter(ids).logits
        b = merged(ids).logits
    assert (a - b).abs().max().item() <= 1e-5
    # the new special tokens' rows were trained through peft's trainable tokens
    deltas = [p for n, p in with_adapter.named_parameters() if "trainable_tokens_delta" in n]
    assert deltas and all(d.abs().sum() > 0 for d in deltas)


@pytest.mark.slow  # subprocess runs of the CLI: seconds each
def test_two_processes_with_gloo_match_one_process_accumulating(built, tmp_path: Path) -> None:
    repo, _ = built
    steps = ["train.max_steps=3", "train.micro_batch=2", "train.eval_every=3", "train.save=merged"]
    one = fresh_run(built, tmp_path, "one")
    subprocess.run(cli(repo, one, *steps, "train.grad_accum=2"), check=True, capture_output=True)
    two = fresh_run(built, tmp_path, "two")
    args = cli(repo, two, *steps)
    # the shipped accelerate config, as a user launches it
    config = Path(__file__).parents[1] / "configs" / "accelerate" / "cpu-2-processes.yaml"
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--main_process_port",
        str(29500 + os.getpid() % 1000),
        "-m",
        "repolm",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch + args[3:], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((two / "train" / "report.json").read_text())["models"]["main"]
    assert report["device"]["processes"] == 2
    a, b = weights(one / "models" / "main"), weights(two / "models" / "main")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name


def test_every_parameter_group_follows_the_schedule() -> None:
    from repolm.train.schedule import Budget, lr_factor, set_schedule

    w, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([{"params": [w]}, {"params": [b], "weight_decay": 0.0}], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    budget = Budget(
        steps_per_epoch=10, epochs=1, total_steps=10, warmup_steps=2, lr=1.0, global_batch=1
    )
    set_schedule(sched, budget, floor=0.1)
    seen = []
    for _ in range(10):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert all(a == b for a, b in seen)
    assert [a for a, _ in seen] == [lr_factor(s, 2, 10, 0.1) for s in range(10)]
    assert seen[0][0] > 0 and seen[-1][0] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("steps", "seconds", "due"),
    [
        (2, 75.0, True),  # a pretrained base on 2 cores: 10 steps would be 12.5 of 8 minutes
        (2, 0.3, False),  # a small model reaches step 10 in seconds: fitted there
        (10, 0.3, True),
        (50, 75.0, True),
        (3, 75.0, False),
        (4, 75.0, True),  # fitted again as it goes: a first fit of 9 steps never sees step 10
        (8, 20.0, True),
        (4, 0.3, False),
    ],
)
def test_a_slow_model_fits_its_schedule_to_the_clock_early(steps, seconds, due) -> None:
    from repolm.train.schedule import fit_due

    assert fit_due(steps, seconds, max_minutes=8) is due
    assert fit_due(steps, seconds, max_minutes=None) is False


def test_plan_counts_times_and_suggests(built, tmp_path: Path, monkeypatch) -> None:
    from repolm.hardware import device as device_mod
    from repolm.train import plan as plan_mod

    _, run = built
    config = load_config(overrides=[*DATA, *TINY]).config
    (p,) = plan_mod.plan_models(run, config, measure=True)
    from transformers import AutoTokenizer

    from repolm.train.models import architecture, build_scratch, count_parameters

    model = build_scratch(
        architecture(config.models["main"]), AutoTokenizer.from_pretrained(run / "tokenizer")
    )
    assert (p.total_params, p.trainable_params) == count_parameters(model)
    stats = json.loads((run / "dataset" / "stats.json").read_text())
    assert p.sequences == stats["sequences"]["train"] and p.seq_len == 64
    assert p.budget.steps_per_epoch == -(-p.sequences // 4)
    assert p.fits and p.seconds_per_step > 0 and p.epoch_seconds > 0 and not p.suggestions
    # on a device with 50 MB free it does not fit, and says what would
    monkeypatch.setattr(device_mod, "available_memory", lambda device: 50 * 2**20)
    (q,) = plan_mod.plan_models(run, config, measure=True)
    assert not q.fits and q.seconds_per_step is None and "would not fit" in q.note
    assert q.suggestions and all("est." in s or "smaller model" in s for s in q.suggestions)


def test_accelerate_configs_are_valid() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    configs = sorted((Path(__file__).parents[1] / "configs" / "accelerate").glob("*.yaml"))
    assert len(configs) >= 5
    kinds = {str(load_config_from_file(str(c)).distributed_type).split(".")[-1] for c in configs}
    assert {"MULTI_GPU", "FSDP", "DEEPSPEED"} <= kinds


def test_two_named_models_from_one_build(built, tmp_path: Path) -> None:
    repo, _ = built
    out = fresh_run(built, tmp_path)
    tiny = [t.replace("models.main.", "models.code.") for t in TINY if t.startswith("models.")]
    two = [
        *tiny,
        *(t.replace("models.code.", "models.reasoning.") for t in tiny),
        "build.mixes.reasoning.commits=0.5",
        "build.mixes.reasoning.qa=0.5",
        "models.reasoning.mix=reasoning",
        "models.reasoning.train.max_steps=1",
        "train.max_steps=2",
        "train.micro_batch=4",
        "train.eval_every=2",
        "train.eval_sequences=8",
    ]
    run_pipeline(out, repo, load_config(overrides=[*DATA, *two]), until="train")
    reports = json.loads((out / "train" / "report.json").read_text())["models"]
    assert set(reports) == {"code", "reasoning"}
    assert reports["code"]["steps"] == 2 and reports["reasoning"]["steps"] == 1
    assert reports["reasoning"]["mix"] == "reasoning"
    for name in reports:
        assert (out / "models" / name / "model.safetensors").is_file()
    stats = json.loads((out / "dataset" / "stats.json").read_text())
    assert reports["reasoning"]["plan"]["steps_per_epoch"] == -(
        -stats["mixes"]["reasoning"]["sequences"] // 4
    )


def test_qlora_without_cuda_is_a_clear_error(built_base, tmp_path: Path) -> None:
    from repolm.errors import RepolmError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    shutil.copytree(built_base[1], out)
    with pytest.raises(RepolmError, match="method qlora needs a CUDA GPU"):
        train_base(built_base, out, "models.main.method=qlora", "train.max_steps=1")


def test_gradient_checkpointing_gives_the_same_step(built, tmp_path: Path) -> None:
    repo, _ = built
    a = train(repo, fresh_run(built, tmp_path, "a"), "train.max_steps=2")
    b = train(
        repo,
        fresh_run(built, tmp_path, "b"),
        "train.max_steps=2",
        "train.gradient_checkpointing=true",
    )
    assert a["loss"]["per_step"] == pytest.approx(b["loss"]["per_step"], abs=1e-5)


@pytest.mark.slow  # subprocess runs of the CLI: seconds each
def test_max_minutes_fits_the_schedule_to_the_clock(built, tmp_path: Path) -> None:
    repo, _ = built
    out = fresh_run(built, tmp_path)
    report = train(repo, out, "train.epochs=1000", "train.max_minutes=0.1", "train.eval_every=500")
    planned = report["plan"]["steps_per_epoch"] * 1000
    assert 10 < report["plan"]["total_steps"] < planned
    assert report["steps"] <= report["plan"]["total_steps"]
    # a wall-clock bound that must hold on a shared machine too: the final evaluation and save
    # come after the clock stops training (1.96x the budget seen at load 3.7 on 2 cores)
    assert report["seconds"] < 0.1 * 60 * 2.5
    if report["early_stopping"]["stopped"] == "completed":  # the schedule ran to its end
        assert report["lr"]["min"] < 0.2 * report["lr"]["max"]  # annealed, not cut off


def test_a_deleted_model_makes_the_train_stage_stale(built, tmp_path: Path) -> None:
    from repolm.pipeline.runner import outputs_intact

    repo, _ = built
    out = fresh_run(built, tmp_path)
    train(repo, out, "train.max_steps=1")
    entry = json.loads((out / "manifest.json").read_text())["stages"]["train"]
    assert "models/main/model.safetensors" in entry["outputs"]
    assert outputs_intact(out, entry["outputs"])
    (out / "models" / "main" / "model.safetensors").unlink()
    assert not outputs_intact(out, entry["outputs"])


def test_auto_micro_batch_follows_the_memory(built, tmp_path: Path, monkeypatch) -> None:
    from repolm.hardware import device as device_mod
    from repolm.train import plan as plan_mod

    repo, _ = built
    auto = ["train.micro_batch=auto", "train.max_steps=1"]
    monkeypatch.setattr(device_mod, "available_memory", lambda device: 64 * 2**30)
    big = train(repo, fresh_run(built, tmp_path, "big"), *auto)
    monkeypatch.setattr(device_mod, "available_memory", lambda device: 420 * 2**20)
    small = train(repo, fresh_run(built, tmp_path, "small"), *auto)
    sequences = json.loads((built[1] / "dataset" / "stats.json").read_text())["sequences"]
    assert big["plan"]["global_batch"] == min(64, 2 ** int(np.log2(sequences["train"])))
    assert small["plan"]["global_batch"] == 1
    (p,) = plan_mod.plan_models(
        built[1], load_config(overrides=[*DATA, *TINY, *auto]).config, measure=False
    )
    assert p.budget.global_batch == 1 and "micro_batch auto → 1" in p.note


def test_auto_micro_batch_halves_until_a_step_fits() -> None:
    from contextlib import nullcontext
    from types import SimpleNamespace

    from repolm.train.step import _largest_that_runs

    class Tokens:  # PackedData's interface: 100 sequences of 8 tokens
        def __len__(self) -> int:
            return 100

        def batch(self, index: np.ndarray) -> dict[str, np.ndarray]:
            return {"input_ids": np.zeros((len(index), 8), dtype=np.int32)}

    class FitsEight(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))
            self.tried: list[int] = []

        def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
            self.tried.append(input_ids.shape[0])
            if input_ids.shape[0] > 8:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            return SimpleNamespace(loss=(self.w * input_ids.float()).sum())

    model = FitsEight()
    accelerator = SimpleNamespace(device=torch.device("cpu"), autocast=nullcontext)
    assert _largest_that_runs(model, Tokens(), 64, accelerator) == 8
    assert model.tried == [64, 32, 16, 8]  # halved, not accelerate's 10% a try
    assert model.w.grad is None  # the probe leaves no gradient behind


# -- CUDA only (pytest -m gpu on a machine with a GPU) ------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
def test_bf16_training_and_auto_micro_batch_on_cuda(built, tmp_path: Path) -> None:
    repo, _ = built
    report = train(repo, fresh_run(built, tmp_path), "train.max_steps=3", "train.micro_batch=auto")
    assert report["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert report["device"]["kind"] == "cuda" and report["plan"]["global_batch"] >= 1
    assert report["validation"]["final"]["loss"] > 0


@pytest.mark.gpu
@needs_cuda
def test_qlora_on_cuda(built_base, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    shutil.copytree(built_base[1], out)
    report = train_base(built_base, out, "models.main.method=qlora", "train.max_steps=2")
    assert report["method"] == "qlora"
    assert report["parameters"]["trainable"] < report["parameters"]["total"] / 4
    assert (out / "models" / "main" / "adapter" / "adapter_model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out / "models" / "main")
    assert merged.config.model_type == "llama"


@pytest.mark.slow  # subprocess runs of the CLI: seconds each
def test_lora_from_the_cli_deterministic(built_base, tmp_path: Path) -> None:
    repo, run, base = built_base
    out = tmp_path / "run"
    shutil.copytree(run, out)
    args = [
        sys.executable,
        "-m",
        "repolm",
        "train",
        "--repo",
        str(repo),
        "--out",
        str(out),
        "--deterministic",
    ]
    small = ["train.micro_batch=4", "train.eval_every=2", "train.eval_sequences=8"]
    for item in [*base_data(base), "models.main.method=lora", "train.max_steps=2", *small]:
        args += ["--set", item]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "validation loss" in done.stderr and str(out / "models" / "main") in done.stderr
    assert (out / "models" / "main" / "adapter" / "adapter_model.safetensors").is_file()
    config = (out / "config.yaml").read_text()
    assert "deterministic: true" in config
