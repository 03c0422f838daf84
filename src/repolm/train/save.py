"""What training leaves behind: the best weights while training, and at the end a standard
Hugging Face directory (`config.json`, `model.safetensors`, `generation_config.json`, tokenizer
files) that plain `transformers` loads; LoRA runs also keep the PEFT adapter.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from repolm.formats.special import MODEL_INFO
from repolm.fsutil import atomic_dir
from repolm.hub import local_model_dir
from repolm.logs import log
from repolm.train.distributed import sharded_backend
from repolm.train.models import load_base, stored_dtype, weight_files
from repolm.train.spec import RunSpec

BEST = "model.safetensors"


def _trainable_state(accelerator: Any, model: Any) -> dict[str, Any]:
    """Trainable weights by their unwrapped names (every process must call: FSDP gathers)."""
    state = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    keep = {n for n, p in unwrapped.named_parameters() if p.requires_grad}
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items() if k in keep}


def save_best(accelerator: Any, model: Any, path: Path, step: int) -> None:
    from safetensors.torch import save_file

    state = _trainable_state(accelerator, model)
    if accelerator.is_main_process:
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / f".{BEST}.tmp"
        save_file(state, str(tmp), metadata={"step": str(step)})
        os.replace(tmp, path / BEST)
    accelerator.wait_for_everyone()


def load_best(accelerator: Any, model: Any, path: Path) -> bool:
    from safetensors.torch import load_file

    if sharded_backend():
        return False  # sharded weights: the final weights are exported instead
    file = path / BEST
    if not file.is_file():
        return False
    unwrapped = accelerator.unwrap_model(model)
    device = next(unwrapped.parameters()).device
    missing = unwrapped.load_state_dict(load_file(str(file), device=str(device)), strict=False)
    if missing.unexpected_keys:
        raise RuntimeError(f"best weights do not fit the model: {missing.unexpected_keys[:3]}")
    return True


def export_model(
    spec: RunSpec, accelerator: Any, model: Any, tokenizer: Any, best_step: int | None
) -> None:
    """Write OUT/models/<name>/ from the best evaluated weights (the final ones when there was
    no evaluation or the weights are sharded)."""
    if best_step is not None and load_best(accelerator, model, spec.best_dir):
        which = f"best weights (step {best_step:,})"
    else:
        which = "final weights"
    method, save = spec.model.method, spec.model.train.save
    info = {"fim": spec.fim}  # how to prompt it: lm.loading reads this back
    if method == "full":
        state = accelerator.get_state_dict(model)
        setattr(accelerator.unwrap_model(model).config, MODEL_INFO, info)
        if accelerator.is_main_process:
            with atomic_dir(spec.model_dir) as tmp:
                accelerator.unwrap_model(model).save_pretrained(
                    tmp, state_dict=state, safe_serialization=True
                )
                tokenizer.save_pretrained(tmp)
    else:
        peft_model = accelerator.unwrap_model(model)
        if accelerator.is_main_process:
            with atomic_dir(spec.model_dir) as tmp:
                adapter = tmp / "adapter" if save == "both" else tmp
                peft_model.save_pretrained(adapter, safe_serialization=True)
                _exact_frozen_rows(adapter, spec.model.base)
                tokenizer.save_pretrained(adapter)
                if save in ("merged", "both"):
                    merged = _merged(spec, peft_model, tokenizer, adapter)
                    setattr(merged.config, MODEL_INFO, info)
                    merged.save_pretrained(tmp, safe_serialization=True)
                    if save == "merged":
                        shutil.rmtree(adapter, ignore_errors=True)
                    tokenizer.save_pretrained(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        log.info(f"train {spec.name}: saved {which} to {spec.model_dir}")


def _merged(spec: RunSpec, peft_model: Any, tokenizer: Any, adapter: Path) -> Any:
    """The base with the adapter folded in. A LoRA base kept at its stored precision is merged
    in place (training is over); otherwise the base is reloaded at the precision it is stored
    in (a quantised one unquantised, in bf16) and the adapter merged into that, since merging
    into 4-bit or rounded weights would change weights training never touched."""
    import torch
    from peft import PeftModel

    trained = peft_model.get_base_model().dtype
    if spec.model.method == "lora":
        stored = stored_dtype(spec.model)
        if stored.itemsize <= trained.itemsize:
            return peft_model.merge_and_unload()
    else:
        stored = torch.bfloat16
    base = load_base(spec.model, tokenizer, stored, "sdpa")
    return PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()


def _exact_frozen_rows(adapter: Path, base: str | None) -> None:
    """Put the base checkpoint's own values back into the embedding layers peft saved whole
    in the adapter (it does when the vocabulary was resized). Trained in a lower precision
    than stored, their frozen rows were saved rounded, and loading the adapter would change
    base weights LoRA never trained; the new tokens' rows stay as trained."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    file = adapter / "adapter_model.safetensors"
    shards = weight_files(Path(local_model_dir(base))) if base else {}
    state = load_file(str(file))
    fixed = 0
    for key, value in state.items():
        name = key.removeprefix("base_model.model.").replace(".token_adapter.base_layer", "")
        if "lora_" in key or "trainable_tokens" in key or name not in shards:
            continue
        with safe_open(str(shards[name]), framework="pt") as f:
            exact = f.get_tensor(name)
        if exact.dtype.itemsize > value.dtype.itemsize and exact.shape[1:] == value.shape[1:]:
            value = value.to(exact.dtype)
            value[: exact.shape[0]] = exact[: value.shape[0]]
            state[key] = value.contiguous()
            fixed += 1
    if fixed:
        tmp = file.with_suffix(".tmp")
        save_file(state, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, file)
