"""A Llama-family Hugging Face model directory as one GGUF file, written the way llama.cpp's
`convert_hf_to_gguf.py` writes it: GGUF tensor names (`gguf.get_tensor_name_map`), the query
and key rows permuted from Hugging Face's rotary layout to llama.cpp's, `general.*` and
`llama.*` hyperparameters, and the tokenizer (`repolm.gguf.vocab`).

Precision: f32, f16 (norms stay f32, as llama.cpp keeps them) or q8_0 (`gguf.quants`, on
matrices whose rows divide into 32-value blocks; the rest f16 or f32).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repolm.errors import RepolmError
from repolm.fsutil import atomic_path
from repolm.gguf.vocab import Vocab, read_vocab

DTYPES = ("f32", "f16", "q8_0")
LLAMA_FAMILY = ("llama", "mistral")  # Hugging Face model types llama.cpp runs as `llama`
Q8_BLOCK = 32


@dataclass(frozen=True)
class Hyper:
    """What llama.cpp needs to know about a Llama model's shape."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    context: int
    vocab_size: int
    rms_eps: float
    rope_theta: float
    tied: bool


def read_hyper(config: dict[str, Any], where: Path) -> Hyper:
    if config.get("model_type") not in LLAMA_FAMILY:
        raise RepolmError(
            f"{where}: GGUF export writes Llama-family models; this one is "
            f"{config.get('model_type')!r}",
            "export --format merged gives a Hugging Face directory of any model",
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind != "default":
        raise RepolmError(f"{where}: GGUF export does not write {kind!r} RoPE scaling yet")
    heads = config["num_attention_heads"]
    return Hyper(
        layers=config["num_hidden_layers"],
        hidden=config["hidden_size"],
        intermediate=config["intermediate_size"],
        heads=heads,
        kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        context=config.get("max_position_embeddings") or 2048,
        vocab_size=config["vocab_size"],
        rms_eps=config.get("rms_norm_eps", 1e-6),
        rope_theta=float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0),
        tied=bool(config.get("tie_word_embeddings", False)),
    )


def permute(weights: Any, heads: int) -> Any:
    """Rows of a query or key projection from Hugging Face's rotary layout (the two halves of
    each head apart) to llama.cpp's (interleaved pairs): convert_hf_to_gguf.py's `permute`."""
    rows = weights.shape[0]
    return (
        weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def hf_tensors(model_dir: Path) -> Iterator[tuple[str, Any]]:
    """(name, float32 numpy array) for every weight of the directory's safetensors files."""
    import torch
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise RepolmError(f"{model_dir} has no safetensors weights")
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has keys(), not iteration)
                yield name, f.get_tensor(name).to(torch.float32).numpy()


def write_gguf(model_dir: Path, dest: Path, dtype: str = "f16", name: str = "") -> dict[str, Any]:
    """Write `model_dir`'s model as the GGUF file `dest` (atomically); what was written."""
    import gguf

    if dtype not in DTYPES:
        raise RepolmError(f"unknown GGUF dtype {dtype!r}", f"choose from {', '.join(DTYPES)}")
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    hyper = read_hyper(config, model_dir)
    vocab = read_vocab(model_dir, hyper.vocab_size)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, hyper.layers)
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[dtype]
    with atomic_path(dest) as tmp:
        writer = gguf.GGUFWriter(tmp, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        _add_general(writer, name or model_dir.name, file_type)
        _add_hyper(writer, hyper)
        _add_vocab(writer, vocab)
        count = 0
        for hf_name, data in hf_tensors(model_dir):
            if hf_name == "lm_head.weight" and hyper.tied:
                continue  # llama.cpp reuses token_embd for a tied head
            new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if new is None:
                raise RepolmError(f"{model_dir}: no GGUF name for tensor {hf_name}")
            if hf_name.endswith("q_proj.weight"):
                data = permute(data, hyper.heads)
            elif hf_name.endswith("k_proj.weight"):
                data = permute(data, hyper.kv_heads)
            data, qtype = _convert(data, dtype)
            writer.add_tensor(new, data, raw_dtype=qtype)
            count += 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return {"file": str(dest), "dtype": dtype, "tensors": count, "bytes": dest.stat().st_size}


def _convert(data: Any, dtype: str) -> tuple[Any, Any]:
    """The tensor in the file's precision, and its quantization type where not a numpy one."""
    import gguf
    import numpy as np

    if data.ndim <= 1 or dtype == "f32":
        return data.astype(np.float32), None
    if dtype == "q8_0" and data.shape[-1] % Q8_BLOCK == 0:
        q8 = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(data.astype(np.float32), q8), q8
    return data.astype(np.float16), None


def _add_general(writer: Any, name: str, file_type: Any) -> None:
    import gguf

    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_hyper(writer: Any, h: Hyper) -> None:
    writer.add_vocab_size(h.vocab_size)
    writer.add_context_length(h.context)
    writer.add_embedding_length(h.hidden)
    writer.add_block_count(h.layers)
    writer.add_feed_forward_length(h.intermediate)
    writer.add_head_count(h.heads)
    writer.add_head_count_kv(h.kv_heads)
    writer.add_rope_dimension_count(h.head_dim)
    writer.add_rope_freq_base(h.rope_theta)
    writer.add_layer_norm_rms_eps(h.rms_eps)
    if h.head_dim != h.hidden // h.heads:
        writer.add_key_length(h.head_dim)
        writer.add_value_length(h.head_dim)


def _add_vocab(writer: Any, v: Vocab) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(v.pre)
    writer.add_token_list(v.tokens)
    writer.add_token_types(v.types)
    writer.add_token_merges(v.merges)
    ids = v.special_ids
    for key, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("unk", writer.add_unk_token_id),
        ("pad", writer.add_pad_token_id),
        ("sep", writer.add_sep_token_id),
    ):
        if key in ids:
            add(ids[key])
    writer.add_add_bos_token(v.add_bos)
    writer.add_add_eos_token(v.add_eos)
    writer.add_add_space_prefix(False)  # byte-level BPE: a leading space is a byte of its own
    if v.chat_template:
        writer.add_chat_template(v.chat_template)
