"""Model sources, as pure builders that return a model: a Llama-style decoder from scratch
(transformers' Llama classes, so the result is a standard Hugging Face model), or any Hugging
Face causal LM with repolm's special tokens added; LoRA and QLoRA adapters through peft;
`build_model`, which puts them together as a model's config asks.

The model is built on the CPU (a quantised base excepted: bitsandbytes quantises on the GPU);
devices and distribution are the training loop's business, not these functions'.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from repolm.config.schema import ModelConfig
from repolm.errors import RepolmError
from repolm.hardware.device import torch_dtype
from repolm.hub import local_model_dir
from repolm.train.distributed import local_device

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ARCHITECTURES_DIR = Path(__file__).parent / "architectures"
SHAPE_KEYS = ("layers", "hidden", "heads", "kv_heads", "intermediate", "context")


class Architecture(BaseModel):
    """A from-scratch Llama shape: one YAML file under `architectures/`, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    intermediate: int = Field(gt=0)
    context: int = Field(gt=0)
    rope_theta: float = Field(default=10000.0, gt=0)

    @model_validator(mode="after")
    def _heads_fit(self) -> Architecture:
        if self.hidden % self.heads:
            raise ValueError(f"hidden size {self.hidden} is not a multiple of {self.heads} heads")
        if self.heads % self.kv_heads:
            raise ValueError(
                f"{self.heads} heads cannot share {self.kv_heads} key/value heads evenly"
            )
        return self


def list_architectures() -> list[str]:
    return sorted(p.stem for p in ARCHITECTURES_DIR.glob("*.yaml"))


def architecture(cfg: ModelConfig) -> Architecture:
    """The model's architecture preset with its overrides, checked."""
    path = ARCHITECTURES_DIR / f"{cfg.architecture}.yaml"
    if not path.is_file():
        raise RepolmError(
            f"unknown architecture '{cfg.architecture}'",
            f"choose one of: {', '.join(list_architectures())}",
        )
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise RepolmError(
            f"architecture file {path} is not a mapping of shape keys",
            f"write {', '.join(SHAPE_KEYS)} as 'key: value' lines",
        )
    for key in SHAPE_KEYS:
        if getattr(cfg, key) is not None:
            data[key] = getattr(cfg, key)
    try:
        return Architecture(name=cfg.architecture, **data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise RepolmError(
                f"unknown key '{key}' in architecture file {path}",
                f"the keys are: {', '.join(SHAPE_KEYS)}, rope_theta",
            ) from None
        msg = err["msg"].removeprefix("Value error, ")
        raise RepolmError(
            f"architecture '{cfg.architecture}': {f'{key} ' if key else ''}{msg}",
            f"fix {path} or the models.<name> override",
        ) from None


def llama_config(arch: Architecture, tokenizer: PreTrainedTokenizerBase, attention: str):
    """transformers' LlamaConfig for an architecture and a tokenizer: RoPE, RMSNorm, SwiGLU,
    tied embeddings, GQA when kv_heads < heads."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden,
        intermediate_size=arch.intermediate,
        num_hidden_layers=arch.layers,
        num_attention_heads=arch.heads,
        num_key_value_heads=arch.kv_heads,
        max_position_embeddings=arch.context,
        rope_parameters={"rope_type": "default", "rope_theta": arch.rope_theta},
        hidden_act="silu",
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        initializer_range=0.02,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=False,
        attn_implementation=attention,
    )


def build_scratch(
    arch: Architecture, tokenizer: PreTrainedTokenizerBase, attention: str = "sdpa"
) -> PreTrainedModel:
    """A freshly initialised Llama model (fp32, on the CPU; the caller seeds torch first)."""
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(llama_config(arch, tokenizer, attention))


def new_token_ids(
    base: str, tokenizer: PreTrainedTokenizerBase, trust_remote_code: bool
) -> list[int]:
    """Ids of the tokens repolm added to a base model's tokenizer (its embeddings are new)."""
    from transformers import AutoTokenizer

    original = AutoTokenizer.from_pretrained(
        local_model_dir(base), trust_remote_code=trust_remote_code
    )
    known = set(original.get_vocab())
    return sorted(i for t, i in tokenizer.get_vocab().items() if t not in known)


def load_base(
    cfg: ModelConfig,
    tokenizer: PreTrainedTokenizerBase,
    dtype: torch.dtype,
    attention: str,
    quantization: Any = None,
    device_map: Any = None,
) -> PreTrainedModel:
    """A Hugging Face causal LM with its embeddings resized to the extended tokenizer (new rows
    start at the mean of the old ones)."""
    from transformers import AutoModelForCausalLM

    assert cfg.base is not None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            local_model_dir(cfg.base),
            dtype=dtype,
            attn_implementation=attention,
            quantization_config=quantization,
            device_map=device_map,
            trust_remote_code=cfg.trust_remote_code,
        )
    except OSError as e:
        raise RepolmError(
            f"cannot load base model {cfg.base!r}: {str(e).splitlines()[0]}",
            "give a local directory holding config.json and *.safetensors (or a hub id that "
            "is in the local Hugging Face cache)",
        ) from None
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def stored_dtype(cfg: ModelConfig) -> torch.dtype:
    """The precision a base checkpoint is stored in (its config's dtype; fp32 if unsaid)."""
    import torch
    from transformers import AutoConfig

    assert cfg.base is not None
    config = AutoConfig.from_pretrained(
        local_model_dir(cfg.base), trust_remote_code=cfg.trust_remote_code
    )
    dtype = getattr(config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def weight_files(base: Path) -> dict[str, Path]:
    """Each tensor name of a safetensors checkpoint to the file holding it ({} for none)."""
    import json

    from safetensors import safe_open

    index = base / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {k: base / v for k, v in weight_map.items()}
    single = base / "model.safetensors"
    if not single.is_file():
        return {}
    with safe_open(str(single), framework="pt") as f:
        return dict.fromkeys(f.keys(), single)


def quantization_config(bits: int, compute_dtype: torch.dtype) -> Any:
    """bitsandbytes settings for QLoRA: NF4 with double quantisation, or LLM.int8()."""
    import torch

    if not torch.cuda.is_available():
        raise RepolmError(
            "method qlora needs a CUDA GPU (bitsandbytes quantises on the GPU)",
            "use method lora on this machine: the same adapters on an unquantised base",
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise RepolmError("method qlora needs bitsandbytes", "pip install 'repolm[gpu]'") from None
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def add_adapters(
    model: PreTrainedModel, cfg: ModelConfig, added: list[int], gradient_checkpointing: bool
) -> PreTrainedModel:
    """LoRA adapters on every linear layer of the decoder (or cfg.lora.target_modules); the
    rows of the tokens repolm added are trained too (peft's trainable tokens), so the special
    tokens learn a meaning while the rest of the embedding stays frozen."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.method == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing
        )
    targets = cfg.lora.target_modules
    lora = LoraConfig(
        r=cfg.lora.rank,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules="all-linear" if targets == "auto" else targets,
        trainable_token_indices=added or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable), each tied tensor counted once; a 4-bit tensor counts its values."""
    import torch

    total = trainable = 0
    for p in model.parameters():  # parameters() yields a tied tensor once
        n = p.numel() * (2 if p.dtype == torch.uint8 else 1)  # bitsandbytes packs 2 per byte
        total += n
        if p.requires_grad:
            trainable += n
    return total, trainable


def context_length(cfg: ModelConfig) -> int:
    """The longest sequence the model takes (a base model's own limit transformers checks)."""
    if cfg.base is not None:
        return 1 << 30
    return architecture(cfg).context


def build_model(
    cfg: ModelConfig, added_tokens: list[int], tokenizer: PreTrainedTokenizerBase, precision: str
) -> PreTrainedModel:
    """The model to train: from scratch, or a base model (with adapters over it, whose
    `added_tokens` rows train too), with gradient checkpointing when the config asks."""
    tc = cfg.train
    attention = "sdpa" if tc.attention == "auto" else tc.attention
    if cfg.base is None:
        model = build_scratch(architecture(cfg), tokenizer, attention)
    else:
        quant = None
        if cfg.method == "qlora":
            compute = precision if precision != "fp32" else "bf16"
            quant = quantization_config(cfg.quant_bits, torch_dtype(compute))
        # adapters train in fp32 over a frozen base kept in the compute precision
        dtype = torch_dtype("fp32" if cfg.method == "full" else precision)
        device_map = {"": local_device()} if quant is not None else None
        model = load_base(cfg, tokenizer, dtype, attention, quant, device_map)
    if tc.gradient_checkpointing:
        reentrant = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=reentrant)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=reentrant)
    if cfg.method in ("lora", "qlora"):
        model = add_adapters(model, cfg, added_tokens, tc.gradient_checkpointing)
        if tc.gradient_checkpointing:
            model.enable_input_require_grads()
    return model
