"""Estimate the memory one training run needs, before it runs, and the micro-batch that
`micro_batch: auto` starts from (what to change when a run won't fit: suggest.py).

The estimate adds up what a Llama-like decoder holds at its worst moment, the loss's backward:
weights, gradients, AdamW states, every tensor the forward pass saved for backward, and four
vocabulary-sized loss tensors. Activations are padded by the allocator's slack (glibc's heap on
CPU, PyTorch's caching allocator on CUDA, keep freed blocks).

Measured on torch 2.13 CPU, transformers 5.23, SDPA, rows of packed documents:
- transformers builds the block-diagonal mask from packed ``position_ids`` only when it makes no
  KV cache: training must pass ``use_cache=False``, or documents attend to each other.
- With that mask CPU SDPA still runs the fused kernel, which saves a per-head logsumexp, not the
  heads x L x L probabilities; but every layer converts the boolean mask to an L x L float mask
  in the compute dtype and saves it. A mask also makes transformers repeat grouped k/v heads.
  Assumed the same on CUDA (flash takes no mask; the mem-efficient kernel saves the float bias).
- Per token a Llama layer saves 4h + 2a + 2k + 4I values in the compute dtype (a: q and output
  width, k: saved k and v width, I: MLP width), 2h + heads + 2 in fp32 (RMSNorm upcasts,
  logsumexp, rsqrt) and L for the mask: exact against saved-tensor hooks, fp32 and bf16.
- The loss's backward holds logits (kept by the model output), log-probs and both gradients.
- Peak RSS above the RSS after imports, over two fp32 AdamW steps (vocab 8192, hidden 256,
  4 layers, 5.26 M params, 2 threads), against ``total() - import_overhead_bytes("cpu")``:

  =====================  ==============  =========
  micro_batch x seq_len  measured (4x)   estimated
  =====================  ==============  =========
  4 x 256                348-377 MiB     365 MiB
  8 x 512                1101-1144 MiB   1094 MiB
  8 x 512, checkpointed  826-900 MiB     895 MiB
  =====================  ==============  =========

  Six more runs (GQA with vocab 16000; hidden 512, 6 layers; seq 1024) land within 10 %.

Not measured here (no GPU): the CUDA context and autocast's cached bf16 weight copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from repolm.config.schema import ModelConfig
from repolm.hardware import device as dev

Method = Literal["full", "lora", "qlora"]
Device = Literal["cpu", "cuda"]

MIB = 2**20
GIB = 2**30

# RSS of repolm's train process before the model exists (CPU): torch, transformers, peft,
# accelerate, tensorboardX, pyarrow and the CLI, with the Accelerator made (measured 421 MiB).
CPU_IMPORT_BYTES = 430 * MIB
# What a run adds that scales with nothing: thread pools, kernels' first-use buffers, module
# objects, RoPE tables (measured: a 1 x 64 step on CPU). On CUDA: context plus cuBLAS workspace.
RUNTIME_BYTES = {"cpu": 48 * MIB, "cuda": 768 * MIB}
# Freed-but-kept memory, as a fraction of the activation bytes. Fitted on nine CPU runs of three
# model shapes (0.15-0.2 keeps them all within 10 %); a caching allocator behaves alike.
ALLOCATOR_SLACK = 0.2
# bitsandbytes keeps one fp32 absmax per 64-value block of a quantized weight.
QUANT_BYTES_PER_PARAM = 4 / 64
ADAPTER_BYTES = 4  # peft keeps adapter weights in fp32 even over a bf16 or 4-bit base


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder that decide its training memory; parameter counts from the caller."""

    vocab_size: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    tied_embeddings: bool
    total_params: int
    trainable_params: int
    head_dim: int = 0  # 0: hidden // heads
    gated_mlp: bool = True  # Llama's SwiGLU; GPT-2's MLP is a plain fc -> gelu -> fc

    @property
    def attention_head_dim(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def embedding_params(self) -> int:
        """Input embedding plus an untied output head: never quantized by bitsandbytes."""
        return self.vocab_size * self.hidden * (1 if self.tied_embeddings else 2)

    @classmethod
    def from_config(cls, config: Any, total_params: int, trainable_params: int) -> ModelShape:
        """Read a transformers config (Llama names, GPT-2 names as the fallback)."""
        if hasattr(config, "get_text_config"):
            config = config.get_text_config()

        def first(*names: str, default: Any = None) -> Any:
            for name in names:
                value = getattr(config, name, None)
                if value is not None:
                    return value
            return default

        hidden = int(first("hidden_size", "n_embd", "d_model"))
        heads = int(first("num_attention_heads", "n_head"))
        intermediate = first("intermediate_size", "n_inner", "ffn_dim")
        return cls(
            vocab_size=int(config.vocab_size),
            hidden=hidden,
            layers=int(first("num_hidden_layers", "n_layer")),
            heads=heads,
            kv_heads=int(first("num_key_value_heads", default=heads)),
            intermediate=int(intermediate) if intermediate is not None else 4 * hidden,
            tied_embeddings=bool(first("tie_word_embeddings", default=True)),
            total_params=int(total_params),
            trainable_params=int(trainable_params),
            head_dim=int(first("head_dim", default=0)),
            gated_mlp=getattr(config, "intermediate_size", None) is not None,
        )


@dataclass
class MemoryEstimate:
    """Bytes per kind of tensor; ``total()`` is the predicted peak of one training step."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    activations_checkpointed: int
    logits: int
    overhead: int
    checkpointing: bool = False
    slack: float = ALLOCATOR_SLACK

    def transient(self, checkpointing: bool | None = None) -> int:
        """Activations, padded by the allocator's slack, plus the loss tensors.

        The loss tensors are few and large (mmapped by glibc, own segments under CUDA's caching
        allocator), so they are returned whole; the many mid-sized activations fragment.
        """
        ckpt = self.checkpointing if checkpointing is None else checkpointing
        acts = self.activations_checkpointed if ckpt else self.activations
        return round(acts * (1 + self.slack)) + self.logits

    def total(self, checkpointing: bool | None = None) -> int:
        """Peak bytes; ``checkpointing`` overrides the setting the estimate was made for."""
        resident = self.weights + self.gradients + self.optimizer + self.overhead
        return resident + self.transient(checkpointing)


def import_overhead_bytes(device: Device) -> int:
    """What the imports cost in the memory ``total()`` is compared with (host RSS on CPU only)."""
    return CPU_IMPORT_BYTES if device == "cpu" else 0


def lora_params(shape: ModelShape, rank: int = 16) -> int:
    """Adapter parameters of rank ``rank`` on every linear layer of every decoder layer."""
    h, mlp, d = shape.hidden, shape.intermediate, shape.attention_head_dim
    q_out, kv_out = shape.heads * d, shape.kv_heads * d
    attention = (h + q_out) + 2 * (h + kv_out) + (q_out + h)
    mlp_pairs = 3 if shape.gated_mlp else 2
    return rank * shape.layers * (attention + mlp_pairs * (h + mlp))


def layer_activation_bytes(
    shape: ModelShape, micro_batch: int, seq_len: int, compute_bytes: float, packed: bool
) -> float:
    """Bytes one decoder layer saves for backward (see the module docstring for the count)."""
    h, heads, d = shape.hidden, shape.heads, shape.attention_head_dim
    width = heads * d
    kv_width = width if packed else shape.kv_heads * d  # a mask makes transformers repeat k/v
    mlp = (4 if shape.gated_mlp else 2) * shape.intermediate
    low = 4 * h + 2 * width + 2 * kv_width + mlp
    fp32 = 2 * h + heads + 2
    mask = seq_len * compute_bytes if packed else 0  # the L x L float mask, per token
    return micro_batch * seq_len * (low * compute_bytes + fp32 * 4 + mask)


def _outside_layers_bytes(shape: ModelShape, tokens: int, compute_bytes: float) -> float:
    """Final norm, lm_head input, RoPE tables and token ids: small, but counted."""
    d = shape.attention_head_dim
    return tokens * ((2 * shape.hidden + 2 * d) * compute_bytes + (shape.hidden + 1) * 4 + 16)


def _weight_bytes(shape: ModelShape, param_bytes: float, compute_bytes: float, method: str) -> int:
    """Stored weights; a quantized base keeps embeddings unquantized and adds absmax blocks."""
    if method == "full":
        stored = shape.total_params * param_bytes
        if compute_bytes < param_bytes:  # autocast caches a low-precision copy of each matrix
            stored += (shape.total_params - shape.embedding_params) * compute_bytes
        return round(stored)
    base = shape.total_params - shape.trainable_params
    adapters = shape.trainable_params * ADAPTER_BYTES
    if param_bytes >= 2:
        return round(base * param_bytes + adapters)
    quantized = base - shape.embedding_params
    per_param = param_bytes + QUANT_BYTES_PER_PARAM
    return round(quantized * per_param + shape.embedding_params * compute_bytes + adapters)


def estimate_memory(
    shape: ModelShape,
    micro_batch: int,
    seq_len: int,
    param_bytes: float = 4,
    compute_bytes: float = 4,
    method: Method = "full",
    optimizer_bytes_per_param: float = 8,
    *,
    device: Device = "cpu",
    checkpointing: bool = False,
    packed: bool = True,
) -> MemoryEstimate:
    """Predict one training step's peak memory for ``micro_batch`` rows of ``seq_len`` tokens.

    ``param_bytes`` is the stored weight size (4 fp32, 2 bf16, 1 int8, 0.5 nf4); ``compute_bytes``
    the activation size (2 under bf16 autocast). ``optimizer_bytes_per_param`` is 8 for AdamW's
    two fp32 states; pass ``2 * param_bytes`` when torch keeps them in a bf16 param's dtype.
    No fp32 master copy is added: autocast trains the fp32 parameters themselves. Adapters
    (lora, qlora) are fp32 with fp32 states. ``packed`` rows carry a block-diagonal mask.
    """
    if method == "full" and param_bytes < 2:
        raise ValueError("full training needs fp32 or bf16 weights (param_bytes 4 or 2)")
    tokens = micro_batch * seq_len
    grad_bytes = param_bytes if method == "full" else ADAPTER_BYTES
    layer = layer_activation_bytes(shape, micro_batch, seq_len, compute_bytes, packed)
    outside = _outside_layers_bytes(shape, tokens, compute_bytes)
    layer_inputs = shape.layers * tokens * shape.hidden * compute_bytes
    return MemoryEstimate(
        weights=_weight_bytes(shape, param_bytes, compute_bytes, method),
        gradients=round(shape.trainable_params * grad_bytes),
        optimizer=round(shape.trainable_params * optimizer_bytes_per_param),
        activations=round(shape.layers * layer + outside),
        # each layer's input is kept; backward recomputes one layer at a time and holds its
        # activations and their gradients (about as large) at once
        activations_checkpointed=round(layer_inputs + 2 * layer + outside),
        logits=round(tokens * shape.vocab_size * (compute_bytes + 12)),
        overhead=import_overhead_bytes(device) + RUNTIME_BYTES[device],
        checkpointing=checkpointing,
    )


def fits(estimate: MemoryEstimate, available_bytes: int, margin: float = 0.0) -> bool:
    """Whether the estimated peak fits, leaving ``margin`` (a fraction) of the memory free."""
    return estimate.total() <= available_bytes * (1 - margin)


def tensor_bytes(mc: ModelConfig, precision: str) -> tuple[float, float]:
    """Bytes per weight and per activation: fp32 weights for full training (autocast keeps
    fp32 masters), the compute precision for a frozen LoRA base, 4 or 8 bits for QLoRA."""
    compute = 4 if precision == "fp32" else 2
    if mc.method == "full":
        return 4, compute
    if mc.method == "qlora":
        return {4: 0.5, 8: 1}[mc.quant_bits], compute
    return compute, compute


AUTO_MAX_MICRO = 64


def estimated_micro_batch(
    mc: ModelConfig,
    shape: ModelShape,
    seq_len: int,
    sequences: int,
    device: dev.DeviceInfo,
    precision: str,
) -> int:
    """The largest power of two (at most 64 and `sequences`) whose estimated peak fits in 90%
    of the device's free memory; 1 when none does."""
    param_bytes, compute_bytes = tensor_bytes(mc, precision)
    room = 0.9 * dev.available_memory(device)

    def need(micro: int) -> int:
        return estimate_memory(
            shape,
            micro,
            seq_len,
            param_bytes,
            compute_bytes,
            mc.method,
            device=device.kind,
            checkpointing=mc.train.gradient_checkpointing,
        ).total()

    micro = 1
    while micro * 2 <= min(AUTO_MAX_MICRO, sequences) and need(micro * 2) <= room:
        micro *= 2
    return micro
