"""What the hardware can do: device, memory, native bf16, peak FLOPs for MFU.

Precision is chosen from what the hardware does natively, never assumed: on a CPU without
bf16 instructions (AVX2 only), bf16 autocast made a training step 16× slower than fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repolm.errors import RepolmError

# Dense bf16 peak TFLOP/s per GPU (vendor datasheets), matched on the device name (in this
# order: "H100 PCIe" before "H100"). Kept as rows (fmt: skip): one pair a line would be a
# 14-line column that hides the order.
PEAK_BF16_TFLOPS = (
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0), ("B200", 2250.0),
    ("A100", 312.0), ("A10G", 125.0), ("A10", 125.0), ("L40S", 362.0), ("L4", 121.0),
    ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("V100", 125.0), ("T4", 65.0),
)  # fmt: skip


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # cuda | cpu
    name: str
    memory_bytes: int  # one device's memory (the machine's RAM for a CPU)
    bf16: bool  # native bf16 arithmetic
    count: int = 1

    @property
    def peak_flops(self) -> float | None:
        """Dense bf16 peak FLOP/s of one device, when known (for MFU)."""
        if self.kind != "cuda":
            return None
        for key, tflops in PEAK_BF16_TFLOPS:
            if key in self.name:
                return tflops * 1e12
        return None


def train_flops_per_token(
    trainable: int, total: int, layers: int, hidden: int, seq_len: int
) -> int:
    """FLOPs of one training step per token, forward and backward (PaLM, appendix B):

        6 * trainable + 4 * (total - trainable) + 12 * layers * hidden * seq_len

    A trained weight costs 2 FLOPs forward and 4 backward (input and weight gradients); a
    frozen one (LoRA's base) 2 forward and 2 for the input gradients. Attention's scores and
    weighted sum cost 4 * hidden * seq_len per token and layer forward, twice that backward,
    counted over the whole sequence (no discount for the causal mask). `hidden` is the
    attention width: heads x head dimension (a Llama's hidden size)."""
    frozen = total - trainable
    return 6 * trainable + 4 * frozen + 12 * layers * hidden * seq_len


def model_flops_utilization(
    flops_per_token: float, tokens_per_s: float, peak_flops: float
) -> float:
    """MFU: the model's FLOPs per second at this throughput over the hardware's peak."""
    return flops_per_token * tokens_per_s / peak_flops


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPU computes in bf16 natively."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def detect() -> DeviceInfo:
    import psutil
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return DeviceInfo(
            kind="cuda",
            name=props.name,
            memory_bytes=props.total_memory,
            bf16=torch.cuda.is_bf16_supported(),
            count=torch.cuda.device_count(),
        )
    import platform

    name = platform.processor() or platform.machine()
    return DeviceInfo(
        kind="cpu",
        name=f"{name} ({psutil.cpu_count(logical=True)} threads)",
        memory_bytes=psutil.virtual_memory().total,
        bf16=cpu_has_bf16(),
    )


def available_memory(device: DeviceInfo) -> int:
    """Bytes a run may use: one GPU's memory, or the RAM free now on a CPU."""
    if device.kind == "cuda":
        return device.memory_bytes
    import psutil

    return psutil.virtual_memory().available


def choose_precision(requested: str, device: DeviceInfo) -> str:
    """fp32 | bf16 | fp16 for the run: `auto` picks what the device does natively."""
    if requested == "auto":
        if device.bf16:
            return "bf16"
        return "fp16" if device.kind == "cuda" else "fp32"
    if requested == "fp16" and device.kind == "cpu":
        raise RepolmError(
            "precision fp16 needs a CUDA GPU", "use precision auto (fp32 or bf16 on a CPU)"
        )
    return requested


def torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
