"""A byte-level BPE tokenizer as GGUF metadata, the way llama.cpp's converter writes it: the
tokens in id order (padded to the model's vocabulary with unused `[PADn]` entries), their
types (special added tokens, repolm's among them, as control tokens), the merges, the
pre-tokenizer's name, the special token ids, the BOS/EOS flags and the chat template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repolm.errors import RepolmError

# llama.cpp's token types (gguf.TokenType)
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5

# The pre-tokenizers llama.cpp knows by name, by the split they make before merging.
GPT2_SPLIT = "gpt-2"  # GPT-2's byte-level regex (repolm's `tokenize.pre_tokenizer: gpt2`)
LLAMA3_SPLIT = "llama-bpe"  # GPT-4's / Llama 3's split (repolm's default, `gpt4`)
SMOLLM_SPLIT = "smollm"  # digits one by one, then GPT-2's regex (SmolLM's own tokenizer)
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    special_ids: dict[str, int]  # bos, eos, unk, pad, sep... -> id
    add_bos: bool = False
    add_eos: bool = False
    chat_template: str | None = None
    control: list[str] = field(default_factory=list)  # the special added tokens, in id order


def read_vocab(model_dir: Path, vocab_size: int) -> Vocab:
    """The tokenizer of a Hugging Face directory as GGUF metadata for a model of `vocab_size`
    rows."""
    from transformers import AutoTokenizer

    file = model_dir / "tokenizer.json"
    if not file.is_file():
        raise RepolmError(f"{model_dir} has no tokenizer.json", "GGUF export needs one")
    spec = json.loads(file.read_text(encoding="utf-8"))
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not _byte_level(spec):
        raise RepolmError(
            f"{model_dir}: only byte-level BPE tokenizers export to GGUF (this one is "
            f"{model.get('type')})"
        )
    by_id: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    types = {i: NORMAL for i in by_id}
    control = []
    for added in spec.get("added_tokens") or ():
        by_id[added["id"]] = added["content"]
        types[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
        if added.get("special"):
            control.append(added["content"])
    size = max(vocab_size, max(by_id) + 1)
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(size)]
    kinds = [types.get(i, UNUSED) for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or ()]
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = {
        name: getattr(tok, f"{name}_token_id", None) for name in ("bos", "eos", "unk", "pad", "sep")
    }
    probe = tok("a")["input_ids"]
    plain = tok("a", add_special_tokens=False)["input_ids"]
    return Vocab(
        tokens=tokens,
        types=kinds,
        merges=merges,
        pre=pre_tokenizer_name(spec.get("pre_tokenizer"), model_dir),
        special_ids={k: v for k, v in ids.items() if v is not None},
        add_bos=len(probe) > len(plain) and probe[0] == ids["bos"],
        add_eos=len(probe) > len(plain) and probe[-1] == ids["eos"],
        chat_template=tok.chat_template if isinstance(tok.chat_template, str) else None,
        control=control,
    )


def _byte_level(spec: dict[str, Any]) -> bool:
    return "ByteLevel" in json.dumps(spec.get("pre_tokenizer")) and "ByteLevel" in json.dumps(
        spec.get("decoder")
    )


def pre_tokenizer_name(pre: dict[str, Any] | None, where: Path) -> str:
    """llama.cpp's name for the split a tokenizer makes before its merges."""
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps if s]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return GPT2_SPLIT
    if kinds == ["Split", "ByteLevel"]:
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        if pattern == LLAMA3_PATTERN and not steps[1].get("use_regex", True):
            return LLAMA3_SPLIT
    digits = kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits")
    if digits and steps[1].get("use_regex", True):
        return SMOLLM_SPLIT
    raise RepolmError(
        f"{where}: llama.cpp has no name for this tokenizer's pre-tokenizer ({kinds})",
        "GGUF export knows GPT-2's split, GPT-4's/Llama 3's split and SmolLM's",
    )
