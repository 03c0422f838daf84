"""What training leaves behind: the best weights while training, and at the end a standard
Hugging Face directory (`config.json`, `model.safetensors`, `generation_config.json`, tokenizer
files) that plain `transformers` loads; LoRA runs also keep the PEFT adapter.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repolm.fsutil import atomic_dir
from repolm.logs import log

if TYPE_CHECKING:
    from repolm.train.loop import RunSpec

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
    from accelerate.utils import DistributedType
    from safetensors.torch import load_file

    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
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
    if best_step is not None and load_best(accelerator, model, spec.work_dir / "best"):
        which = f"best weights (step {best_step:,})"
    else:
        which = "final weights"
    method, save = spec.model.method, spec.model.train.save
    if method == "full":
        state = accelerator.get_state_dict(model)
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
                tokenizer.save_pretrained(adapter)
                if save in ("merged", "both"):
                    merged = _merged(spec, peft_model, tokenizer, adapter)
                    merged.save_pretrained(tmp, safe_serialization=True)
                    if save == "merged":
                        shutil.rmtree(adapter, ignore_errors=True)
                    tokenizer.save_pretrained(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        log.info(f"train {spec.name}: saved {which} to {spec.model_dir}")


def _merged(spec: RunSpec, peft_model: Any, tokenizer: Any, adapter: Path) -> Any:
    """The base with the adapter folded in. A LoRA base is merged in place (training is over);
    a quantised base is reloaded unquantised first, since merging into 4-bit weights loses
    precision."""
    if spec.model.method == "lora":
        return peft_model.merge_and_unload()
    import torch
    from peft import PeftModel

    from repolm.train.models import load_base

    base = load_base(spec.model, tokenizer, torch.bfloat16, "sdpa")
    return PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
