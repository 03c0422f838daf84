"""HardwareMonitor: samples by the clock, exact peaks, prompt stop, optional NVML (faked here)."""

from __future__ import annotations

import hashlib
import sys
import time
import types
from typing import Any

import pytest

from repolm.hardware.monitor import HardwareMonitor, _visible_indices

INTERVAL = 0.05


def burn(seconds: float) -> None:
    """Busy CPU with the GIL released (hashlib drops it for large buffers), like torch kernels;
    a pure-Python loop would also starve the monitor thread of the GIL."""
    block, end = bytes(2**20), time.monotonic() + seconds
    while time.monotonic() < end:
        hashlib.sha256(block).digest()


@pytest.fixture
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError


def test_samples_by_time_with_exact_peaks(no_nvml: None) -> None:
    seen: list[dict[str, float]] = []
    with HardwareMonitor(interval_s=INTERVAL, on_sample=seen.append) as mon:
        burn(0.4)
    samples, latest, peaks = mon.samples, mon.latest(), mon.peaks()
    assert len(samples) >= 3
    assert seen == samples and latest == samples[-1]  # the callback saw every sample
    times = [s["t"] for s in samples]
    gaps = [b - a for a, b in zip(times[:-1], times[1:], strict=True)]
    assert all(g > 0 for g in gaps) and sorted(gaps)[len(gaps) // 2] >= 0.8 * INTERVAL
    assert times[0] >= 0.8 * INTERVAL  # the first sample comes one interval in, not at once
    assert all(peaks[k] >= max(s[k] for s in samples) for k in latest if k != "t")
    assert all(peaks[k] >= latest[k] for k in latest if k != "t")
    assert latest["rss_bytes"] > 0 and 0 < latest["system_memory_percent"] < 100
    assert peaks["cpu_percent"] > 20  # the burning loop shows up as this process's CPU
    assert not any(k.startswith("gpu") for k in peaks)


def test_stop_is_prompt_and_takes_a_final_sample(no_nvml: None) -> None:
    mon = HardwareMonitor(interval_s=5).start()
    time.sleep(0.05)
    t0 = time.monotonic()
    mon.stop()
    assert time.monotonic() - t0 < 0.5
    assert len(mon.samples) == 1 and mon.latest()["t"] < 1  # a short run still has its end state
    mon.stop()  # stopping twice is harmless


def test_keeps_at_most_max_samples_but_peaks_stay_exact(no_nvml: None) -> None:
    seen: list[dict[str, float]] = []
    with HardwareMonitor(interval_s=0.005, on_sample=seen.append, max_samples=4) as mon:
        blocks = [bytearray(2**20 * i) for i in range(1, 30)]  # noqa: F841 — RSS grows
        time.sleep(0.15)
    assert len(seen) > 8 and len(mon.samples) < 4
    times = [s["t"] for s in mon.samples]
    assert times == sorted(times) and times[0] == seen[0]["t"]  # thinned, still spans the run
    assert mon.peaks()["rss_bytes"] == max(s["rss_bytes"] for s in seen)
    assert mon.latest() == seen[-1]


def test_a_failing_callback_does_not_stop_sampling(no_nvml: None) -> None:
    def broken(sample: dict[str, float]) -> None:
        raise RuntimeError("sink down")

    with HardwareMonitor(interval_s=0.01, on_sample=broken) as mon:
        time.sleep(0.1)
    assert len(mon.samples) >= 3


def fake_nvml(used: list[int], fail_power: bool = False) -> types.ModuleType:
    """A pynvml stand-in with len(used) GPUs whose memory use is ``used``."""
    nvml = types.ModuleType("pynvml")
    ns = types.SimpleNamespace
    nvml.NVML_TEMPERATURE_GPU = 0
    nvml.calls = {"shutdown": 0}
    nvml.nvmlInit = lambda: None
    nvml.nvmlShutdown = lambda: nvml.calls.__setitem__("shutdown", nvml.calls["shutdown"] + 1)
    nvml.nvmlDeviceGetCount = lambda: len(used)
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetUUID = lambda i: f"GPU-{i}abc".encode()
    nvml.nvmlDeviceGetMemoryInfo = lambda i: ns(used=used[i], total=80 * 2**30)
    nvml.nvmlDeviceGetUtilizationRates = lambda i: ns(gpu=10 * (i + 1))
    nvml.nvmlDeviceGetTemperature = lambda i, sensor: 40 + i

    def power(i: int) -> int:
        if fail_power:
            raise RuntimeError("not supported")
        return 300_000 + i

    nvml.nvmlDeviceGetPowerUsage = power
    return nvml


def test_gpu_fields_per_visible_device_in_cuda_order(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_nvml([1 * 2**30, 5 * 2**30, 3 * 2**30])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-1")
    with HardwareMonitor(interval_s=0.01) as mon:
        time.sleep(0.05)
    latest, peaks = mon.latest(), mon.peaks()
    assert latest["gpu0_memory_bytes"] == 3 * 2**30 and latest["gpu1_memory_bytes"] == 5 * 2**30
    assert latest["gpu0_memory_total_bytes"] == 80 * 2**30
    assert (latest["gpu0_util"], latest["gpu0_temp_c"], latest["gpu0_power_w"]) == (30, 42, 300.002)
    assert "gpu2_memory_bytes" not in latest
    assert peaks["gpu_memory_bytes"] == 5 * 2**30 and peaks["gpu_util"] == 30
    assert nvml.calls["shutdown"] == 1


def test_an_unsupported_gpu_query_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([2**30], fail_power=True))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with HardwareMonitor(interval_s=0.01) as mon:
        time.sleep(0.03)
    latest: dict[str, Any] = mon.latest()
    assert "gpu0_power_w" not in latest and latest["gpu0_memory_bytes"] == 2**30


@pytest.mark.parametrize(
    ("visible", "expected"),
    [(None, [0, 1, 2]), ("", []), ("1,0", [1, 0]), ("GPU-2", [2]), ("0,7,1", [0]), ("GPU-", [])],
)
def test_visible_indices_follow_cuda_rules(visible: str | None, expected: list[int]) -> None:
    """Integers or unique UUID prefixes, in order; CUDA stops at the first it can't resolve."""
    assert _visible_indices(visible, ["GPU-0abc", "GPU-1abc", "GPU-2abc"]) == expected
