"""A causal LM ready for inference: loaded from a directory (or the local hub cache) on the
best device in the precision it computes natively, or wrapped while it is in memory (the
model being trained). Every user of a model (eval, training's samples, serving) holds it as a
`LoadedModel`, so they agree on the device, precision, context length and special tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repolm.errors import RepolmError
from repolm.formats.documents import Segment
from repolm.formats.special import ENDOFTEXT, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, MODEL_INFO
from repolm.hardware.device import choose_precision, detect, torch_dtype
from repolm.hub import local_model_dir
from repolm.lm import encoding


@dataclass
class LoadedModel:
    """A causal LM ready for inference, with its tokenizer."""

    path: str
    model: Any  # transformers PreTrainedModel, in eval mode on `device`
    tokenizer: Any  # transformers tokenizer
    device: Any  # torch.device
    max_len: int  # the longest sequence the model takes (prompt + generation)
    eos_ids: tuple[int, ...] = ()
    special: dict[str, int] = field(default_factory=dict)  # repolm's tokens the vocabulary has
    fim: bool = False  # prompt fill-in-the-middle: it has FIM tokens and learned them
    fim_header: bool = True  # FIM after repolm's file header, or bare (a base's own FIM tokens)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.eos_ids[0]

    def encode(self, text: str) -> list[int]:
        """Plain text: a special token's spelling stays text."""
        return encoding.encode_text(self.tokenizer, text)

    def encode_segments(self, segments: Sequence[Segment]) -> list[int]:
        """A document or prompt in repolm's format: special tokens by id where the vocabulary
        has them (spelled as text for a model that never saw them)."""
        return encoding.encode_segments(self.tokenizer, self.special, segments)

    def decode(self, ids: Sequence[int]) -> str:
        return encoding.decode(self.tokenizer, ids)


def load_model(
    path: str | Path,
    precision: str = "auto",
    trust_remote_code: bool = False,
    max_len: int | None = None,
) -> LoadedModel:
    """A Hugging Face causal LM from a local directory (or the local hub cache), on the best
    device, in the precision it computes natively (fp32 on a CPU without bf16). `max_len`
    caps the sequences it is given (prompt + generation, a scoring window) below its own
    context: evaluation keeps to what training saw, and a long context costs quadratically.
    A LoRA adapter directory (a run saved `train.save: adapter`) is merged onto its base."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = local_model_dir(str(path))
    info = detect()
    dtype = torch_dtype(choose_precision(precision, info))
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
        if _is_adapter(Path(where)):
            model = _merged_adapter(Path(where), len(tokenizer), dtype, trust_remote_code)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                where, dtype=dtype, trust_remote_code=trust_remote_code
            )
    except (OSError, ValueError) as e:
        raise RepolmError(
            f"cannot load a causal language model from {path}: {str(e).splitlines()[0]}",
            "give a Hugging Face model directory (config.json, weights, tokenizer files)",
        ) from None
    device = torch.device("cuda" if info.kind == "cuda" else "cpu")
    model.to(device).eval()
    return wrap(model, tokenizer, str(path), max_len)


def _is_adapter(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def _merged_adapter(path: Path, vocab: int, dtype: Any, trust_remote_code: bool) -> Any:
    """The adapter in `path` merged onto its base (resolved as any base is: a directory, a
    GGUF, a built-in name, the local hub cache), the base's vocabulary grown to the adapter's
    tokenizer first, as training grew it."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    name = config.get("base_model_name_or_path") or ""
    try:
        base_dir = local_model_dir(name)
    except RepolmError as e:
        raise RepolmError(
            f"the LoRA adapter in {path} needs its base {name!r}: {e.message}",
            "install or copy that base here, or export the run merged (repolm export "
            "--format merged)",
        ) from None
    base = AutoModelForCausalLM.from_pretrained(
        base_dir, dtype=dtype, trust_remote_code=trust_remote_code
    )
    if base.get_input_embeddings().weight.shape[0] < vocab:
        base.resize_token_embeddings(vocab, pad_to_multiple_of=64)  # as train.models does
    return PeftModel.from_pretrained(base, str(path)).merge_and_unload()


# The FIM tokens of pretrained code-model families (prefix, suffix, middle; PSM order), for a
# base repolm did not train: StarCoder, StarCoder2, SantaCoder, stable-code and Refact spell
# them so, DeepSeek-Coder so; Qwen2.5-Coder and CodeGemma spell them as repolm does.
BASE_FIM = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("<\uff5cfim\u2581begin\uff5c>", "<\uff5cfim\u2581hole\uff5c>", "<\uff5cfim\u2581end\uff5c>"),
)


def wrap(model: Any, tokenizer: Any, path: str = "", max_len: int | None = None) -> LoadedModel:
    """A model already in memory (e.g. the one being trained) as a `LoadedModel`; `max_len`
    caps its context as in `load_model`."""
    special = encoding.special_ids(tokenizer)
    info = getattr(model.config, MODEL_INFO, None) or {}
    # a model repolm trained says whether it saw FIM samples; any other trusts its tokens
    fim = all(t in special for t in (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX)) and info.get("fim", True)
    header = True
    if not fim and not info:  # a pretrained model's own FIM tokens stand in for repolm's
        vocab = tokenizer.get_vocab()
        for family in BASE_FIM:
            if all(t in vocab for t in family):
                special.update(
                    zip((FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE), map(vocab.get, family), strict=True)
                )
                fim, header = True, False  # and its prompt is its own format, bare
                break
    eos = [tokenizer.eos_token_id, special.get(ENDOFTEXT)]
    context = min(int(getattr(model.config, "max_position_embeddings", None) or 2048), 32768)
    return LoadedModel(
        path=path,
        model=model,
        tokenizer=tokenizer,
        device=next(model.parameters()).device,
        max_len=min(context, max_len) if max_len else context,
        eos_ids=tuple(dict.fromkeys(i for i in eos if i is not None)) or (0,),
        special=special,
        fim=bool(fim),
        fim_header=header,
    )
