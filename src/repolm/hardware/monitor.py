"""Sample the hardware a run uses, by the clock rather than by step, on a daemon thread.

Each sample is a flat dict of numbers (ready for TensorBoard scalars): ``t`` (seconds since
start), ``cpu_percent`` (this process and its children; 100 = one core), ``system_cpu_percent``
(0-100 over all cores), ``rss_bytes`` (process and children), ``system_memory_percent`` and,
where NVML answers, per visible GPU ``gpu{i}_memory_bytes``, ``gpu{i}_memory_total_bytes``,
``gpu{i}_util``, ``gpu{i}_temp_c``, ``gpu{i}_power_w`` (``i`` as CUDA numbers the device).

    with HardwareMonitor(interval_s=5, on_sample=write_scalars) as monitor:
        train()
    report["hardware"] = monitor.peaks()
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Sample = dict[str, float]


class HardwareMonitor:
    """Samples every ``interval_s`` seconds until stopped; peaks stay exact however long it runs.

    At most ``max_samples`` are kept: when full, every other one is dropped and later samples are
    kept at half the rate, so the list spans the whole run. ``on_sample`` (called on the monitor
    thread) sees every sample, kept or not; an exception in it is logged, not raised.
    """

    def __init__(
        self,
        interval_s: float = 5.0,
        on_sample: Callable[[Sample], None] | None = None,
        max_samples: int = 10_000,
        gpu: bool = True,
    ) -> None:
        if interval_s <= 0 or max_samples < 2:
            raise ValueError("interval_s must be positive and max_samples at least 2")
        self.interval_s = interval_s
        self.on_sample = on_sample
        self.max_samples = max_samples
        self._gpu_wanted = gpu
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples: list[Sample] = []
        self._stride = 1  # keep every stride-th sample once thinned
        self._seen = 0
        self._peaks: Sample = {}
        self._latest: Sample | None = None
        self._probe: _Probe | None = None

    def __enter__(self) -> HardwareMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> HardwareMonitor:
        """Take the baseline readings and start the sampling thread."""
        if self._thread is not None:
            raise RuntimeError("HardwareMonitor already started")
        self._probe = _Probe(gpu=self._gpu_wanted)
        self._thread = threading.Thread(target=self._run, name="hardware-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (returns within one sample's time) and take a final sample."""
        if self._thread is None or self._probe is None:
            return
        self._stop.set()
        self._thread.join()
        if self._probe.elapsed() - self._last_t() > 0.01:  # a short run still gets its end state
            self._record(self._probe.read())
        self._probe.close()

    @property
    def samples(self) -> list[Sample]:
        """The kept samples, oldest first (a copy)."""
        with self._lock:
            return list(self._samples)

    def latest(self) -> Sample | None:
        """The most recent sample, kept or not; None before the first."""
        with self._lock:
            return None if self._latest is None else dict(self._latest)

    def peaks(self) -> Sample:
        """The maximum of every field over all samples; ``gpu_*`` keys are the max over GPUs."""
        with self._lock:
            return dict(self._peaks)

    def _run(self) -> None:
        assert self._probe is not None
        deadline = self.interval_s
        while not self._stop.wait(max(0.0, deadline - self._probe.elapsed())):
            self._record(self._probe.read())
            deadline += self.interval_s
            deadline = max(deadline, self._probe.elapsed())  # after a stall, don't burst

    def _record(self, sample: Sample) -> None:
        with self._lock:
            self._latest = sample
            _update_peaks(self._peaks, sample)
            if self._seen % self._stride == 0:
                self._samples.append(sample)
                if len(self._samples) >= self.max_samples:
                    self._samples = self._samples[::2]
                    self._stride *= 2
            self._seen += 1
        if self.on_sample is not None:
            try:
                self.on_sample(sample)
            except Exception:  # a broken sink must not stop the monitor or the run
                log.exception("hardware monitor: on_sample failed")

    def _last_t(self) -> float:
        with self._lock:
            return -1.0 if self._latest is None else self._latest["t"]


def _update_peaks(peaks: Sample, sample: Sample) -> None:
    """Fold one sample into the running maxima, adding ``gpu_*`` maxima over all GPUs."""
    for key, value in sample.items():
        if key != "t":
            peaks[key] = max(peaks.get(key, value), value)
        if key.startswith("gpu") and key[3:4].isdigit():
            name = "gpu_" + key.split("_", 1)[1]
            peaks[name] = max(peaks.get(name, value), value)


class _Probe:
    """Reads the counters; CPU percentages come from deltas of cumulative CPU times."""

    def __init__(self, gpu: bool) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
        self._prev_cpu = self._tree_usage()[0]
        self._prev_system = psutil.cpu_times()
        self._t0 = self._prev_wall = time.monotonic()
        self._nvml, self._gpus = _open_nvml() if gpu else (None, [])

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def read(self) -> Sample:
        cpu_seconds, rss = self._tree_usage()
        system = self._psutil.cpu_times()
        now = time.monotonic()  # after the counters: a thread starved of the GIL stays right
        wall = max(now - self._prev_wall, 1e-6)
        sample: Sample = {
            "t": round(now - self._t0, 3),
            "cpu_percent": round(max(0.0, 100 * (cpu_seconds - self._prev_cpu) / wall), 1),
            "system_cpu_percent": _busy_percent(self._prev_system, system),
            "rss_bytes": float(rss),
            "system_memory_percent": self._psutil.virtual_memory().percent,
        }
        self._prev_wall, self._prev_cpu, self._prev_system = now, cpu_seconds, system
        for index, handle in enumerate(self._gpus):
            sample.update(_gpu_reading(self._nvml, handle, index))
        return sample

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None

    def _tree_usage(self) -> tuple[float, int]:
        """CPU seconds and RSS of the process and its live descendants. Each adds its reaped
        children's CPU time, where a child's time goes when it is waited for."""
        try:
            procs = [self._process, *self._process.children(recursive=True)]
        except self._psutil.Error:
            procs = [self._process]
        cpu, rss = 0.0, 0
        for proc in procs:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    rss += proc.memory_info().rss
            except self._psutil.Error:  # exited between listing and reading
                continue
            cpu += t.user + t.system + t.children_user + t.children_system
        return cpu, rss


def _busy_percent(before: Any, after: Any) -> float:
    """Share of all cores' time not idle between two ``psutil.cpu_times()`` readings."""

    def idle_and_total(t: Any) -> tuple[float, float]:
        # Linux counts guest time inside user time too (psutil's cpu_percent does the same)
        guest = getattr(t, "guest", 0) + getattr(t, "guest_nice", 0)
        return t.idle + getattr(t, "iowait", 0), sum(t) - guest

    idle0, total0 = idle_and_total(before)
    idle1, total1 = idle_and_total(after)
    total = total1 - total0
    return round(100 * (1 - (idle1 - idle0) / total), 1) if total > 0 else 0.0


def _open_nvml() -> tuple[Any, list[Any]]:
    """NVML and handles of the GPUs CUDA will see, in CUDA's order; (None, []) without it."""
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        uuids = [_text(pynvml.nvmlDeviceGetUUID(h)) for h in handles]
    except Exception:  # no package, no driver, no device: silently no GPU fields
        return None, []
    order = _visible_indices(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids)
    return pynvml, [handles[i] for i in order]


def _visible_indices(visible: str | None, uuids: list[str]) -> list[int]:
    """NVML indices named by CUDA_VISIBLE_DEVICES (integers or UUID prefixes), in its order.

    CUDA stops at the first entry it cannot resolve, and so does this.
    """
    if visible is None:
        return list(range(len(uuids)))
    order: list[int] = []
    for entry in (e.strip() for e in visible.split(",")):
        if entry.isdigit() and int(entry) < len(uuids):
            order.append(int(entry))
            continue
        match = [i for i, u in enumerate(uuids) if entry and u.startswith(entry)]
        if len(match) != 1:
            break
        order.append(match[0])
    return order


def _gpu_reading(nvml: Any, handle: Any, index: int) -> Sample:
    """One GPU's fields; a query the device does not support is left out."""
    queries = {
        "memory_bytes": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used,
        "memory_total_bytes": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).total,
        "util": lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
        "temp_c": lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
        "power_w": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000,
    }
    out: Sample = {}
    for name, query in queries.items():
        try:
            out[f"gpu{index}_{name}"] = float(query())
        except Exception:
            continue
    return out


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
