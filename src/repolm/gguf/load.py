"""A GGUF file as a Hugging Face directory: dequantized once with transformers into a cache
keyed by the file's sha256 (and this module's `CACHE_FORMAT`), written to a temporary directory
and renamed, so every later use (and every stage) reads plain safetensors.

The tokenizer is transformers' reading of the GGUF's vocabulary, with the split before the
merges that llama.cpp makes for the file's `tokenizer.ggml.pre` where transformers makes
another: for SmolLM's `smollm`, digits one by one before GPT-2's split, as SmolLM's own
tokenizer does (transformers gives GPT-2's split alone, which merges runs of digits the model
never saw merged).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from repolm.errors import RepolmError
from repolm.fsutil import file_digest
from repolm.gguf.vocab import SMOLLM_SPLIT, pre_tokenizer_name
from repolm.logs import log

SUFFIX = ".gguf"
DONE = "config.json"  # the directory appears whole (renamed into place); this marks it
CACHE_FORMAT = 2  # in the cache's directory names; 2: the tokenizer splits as llama.cpp does


def cache_root() -> Path:
    """repolm's cache of dequantized GGUF models: `$XDG_CACHE_HOME/repolm/gguf`, else
    `~/.cache/repolm/gguf`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "repolm" / "gguf"


def find_gguf(path: Path) -> Path | None:
    """The GGUF a path names: a `.gguf` file, or the one `.gguf` file in a directory without a
    Hugging Face `config.json`; None for anything else (a Hugging Face directory)."""
    if path.is_file():
        return path if path.suffix.lower() == SUFFIX else None
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == SUFFIX and p.is_file())
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise RepolmError(
            f"{path} holds {len(found)} GGUF files ({names})",
            "name the one to use: give the .gguf file's path instead of the directory",
        )
    return found[0] if found else None


@lru_cache(maxsize=32)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(Path(path))


def gguf_digest(path: Path) -> str:
    """The file's sha256, computed once per process for an unchanged file."""
    st = path.stat()
    return _digest(str(path.resolve()), st.st_size, st.st_mtime_ns)


def dequantized_dir(path: Path) -> Path:
    """The Hugging Face directory of a GGUF file, dequantizing it into the cache on first use."""
    where = cache_root() / f"{gguf_digest(path)}.{CACHE_FORMAT}"
    if (where / DONE).is_file():
        return where
    architecture = read_architecture(path)
    log.info(f"dequantizing {path.name} ({architecture}) into {where} (once)")
    where.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{where.name}.", suffix=".tmp", dir=where.parent))
    try:
        _dequantize(path, tmp)
        os.rename(tmp, where)
    except OSError:
        # another process (a rank of the same launch) renamed its copy first: use that one
        if not (where / DONE).is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return where


def read_field(path: Path, key: str) -> Any:
    """One metadata value of a GGUF file (None when absent)."""
    import gguf

    try:
        field = gguf.GGUFReader(path).get_field(key)
        return field.contents() if field is not None else None
    except Exception as e:  # a truncated or foreign file: numpy, struct and value errors
        raise RepolmError(
            f"{path} is not a readable GGUF file ({type(e).__name__}: {str(e)[:80]})",
            "check the file is complete (compare its size or sha256 with the source)",
        ) from None


def read_architecture(path: Path) -> str:
    """`general.architecture` of a GGUF file, checked against what transformers can read."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    architecture = read_field(path, "general.architecture")
    if architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise RepolmError(
            f"{path}: transformers cannot read the {architecture!r} architecture from GGUF",
            f"use a Hugging Face directory of this model; GGUF architectures transformers reads: "
            f"{', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}",
        )
    return str(architecture)


def _dequantize(path: Path, dest: Path) -> None:
    """Model and tokenizer of a GGUF, as fp32 safetensors and tokenizer files in `dest`.
    `save_pretrained` refuses a GGUF-loaded model, so the model class is rebuilt from a clean
    config and given the dequantized weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as e:
        raise RepolmError(
            f"transformers cannot read {path}: {str(e).splitlines()[0][:160]}",
            "use a Hugging Face directory of this model instead",
        ) from None
    config = _clean_config(loaded.config)
    model = type(loaded)(config)
    state = loaded.state_dict()
    del loaded
    missing = model.load_state_dict(state, strict=False)
    if missing.unexpected_keys or set(missing.missing_keys) - _tied_keys(model):
        raise RepolmError(
            f"{path}: the dequantized weights do not fit {type(model).__name__} "
            f"(missing {missing.missing_keys[:3]}, unexpected {missing.unexpected_keys[:3]})"
        )
    model.tie_weights()
    model.save_pretrained(dest, safe_serialization=True)
    restore_split(tokenizer, read_field(path, "tokenizer.ggml.pre"), path)
    tokenizer.save_pretrained(dest)


def restore_split(tokenizer: Any, pre: str | None, path: Path) -> None:
    """Give a GGUF-read tokenizer the split llama.cpp makes for `pre` (see the module's doc); a
    split neither matches nor can be rebuilt is only reported."""
    from tokenizers import pre_tokenizers

    backend = tokenizer.backend_tokenizer
    if pre is None or _split_name(json.loads(backend.to_str()), path) == pre:
        return
    if pre == SMOLLM_SPLIT:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True),
            ]
        )
        return
    log.warning(
        f"{path.name}: the tokenizer transformers reads splits text otherwise than llama.cpp's "
        f"{pre!r} pre-tokenizer: its tokens may differ from the ones the model was trained on"
    )


def _split_name(spec: dict[str, Any], path: Path) -> str | None:
    try:
        return pre_tokenizer_name(spec.get("pre_tokenizer"), path)
    except RepolmError:
        return None


def _clean_config(config: Any) -> Any:
    """A copy of a GGUF-loaded config without the GGUF quantization entry and source path."""
    config = config.__class__.from_dict(
        {k: v for k, v in config.to_dict().items() if k not in ("quantization_config",)}
    )
    config._name_or_path = ""
    return config


def _tied_keys(model: Any) -> set[str]:
    """Weights the model ties to another (a tied output head), absent from a GGUF."""
    tied = getattr(model, "_tied_weights_keys", None) or {}
    keys = set(tied) if isinstance(tied, (dict, list, tuple, set)) else set()
    if getattr(model.config, "tie_word_embeddings", False):
        keys.add("lm_head.weight")
    return keys
