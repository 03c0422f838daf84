"""Continuations of token prompts: greedy, or sampled from a nucleus, in batches of similar
length, ended by EOS, extra stop ids or a stop rule on the text. Eval's generation tasks,
training's samples and serving all generate through here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from repolm.lm.loading import LoadedModel


def special_stops(lm: LoadedModel) -> list[int]:
    """The ids of repolm's special tokens the model has: code or a message never holds one (the
    build stage encodes their spelling as text), so generating such text stops at the first."""
    return sorted(set(lm.special.values()))


def generate(
    lm: LoadedModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int | Sequence[int],
    stop: Callable[[str], int | None] | None = None,
    stop_ids: Sequence[int] = (),
    batch_size: int = 8,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> list[str]:
    """Greedy continuations of token prompts (each cut from the left to leave room for the
    new tokens), decoded; sampled instead when `temperature` > 0, from the nucleus `top_p`
    (no top-k). `max_new_tokens`: one budget for all, or one per prompt. Generation
    ends at EOS or one of `stop_ids`; `stop(text)` may return the index at which a
    continuation is cut (None to keep it whole)."""
    import torch

    budgets = (
        [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    )
    if len(budgets) != len(prompts):
        raise ValueError(f"{len(budgets)} budgets for {len(prompts)} prompts")
    for budget in budgets:
        if lm.max_len - budget < 1:
            raise ValueError(f"max_new_tokens {budget} leaves no room in {lm.max_len}")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    ends = list(dict.fromkeys([*lm.eos_ids, *stop_ids]))
    decoding: dict[str, Any] = {"do_sample": False}
    if temperature > 0:  # top_k=0 overrides a checkpoint's default top-k of 50
        decoding = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    with torch.inference_mode():
        for k in range(0, len(order), batch_size):
            group = order[k : k + batch_size]
            most = max(budgets[i] for i in group)
            room = lm.max_len - most  # the group generates its largest budget
            cut = {i: list(prompts[i])[-room:] for i in group}
            width = max(len(cut[i]) for i in group) or 1
            ids = torch.full((len(group), width), lm.pad_id, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for row, i in enumerate(group):  # left padding: generation continues at the end
                n = len(cut[i])
                if n:
                    ids[row, width - n :] = torch.as_tensor(cut[i])
                    mask[row, width - n :] = 1
            generated = lm.model.generate(
                input_ids=ids.to(lm.device),
                attention_mask=mask.to(lm.device),
                max_new_tokens=most,
                num_beams=1,
                **decoding,
                eos_token_id=ends,
                pad_token_id=lm.pad_id,
                use_cache=True,  # a trained model is saved with use_cache false
            )
            for row, i in enumerate(group):
                new = generated[row, width:].tolist()[: budgets[i]]
                stops = [n for n, t in enumerate(new) if t in ends]
                text = lm.decode(new[: stops[0]] if stops else new)
                at = stop(text) if stop else None
                out[i] = text if at is None else text[:at]
    return out
