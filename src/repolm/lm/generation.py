"""Continuations of token prompts: greedy, or sampled from a nucleus, in batches of similar
length, ended by EOS, extra stop ids or a stop rule on the text. Eval's generation tasks and
training's samples generate through here; serving and `repolm complete` stream through the
engine in `repolm.serve.engine`, which batches requests as they arrive.

A row of a batch stops as soon as it is done (EOS, a stop id, its own budget, or its stop rule
cuts its text), not when the whole batch's largest budget is spent: a base model that never
emits EOS where a unit ends costs the tokens up to that end, not its budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from repolm.lm.loading import LoadedModel

StopRule = Callable[[str], int | None]  # the index at which a text is cut, None: not yet


def special_stops(lm: LoadedModel) -> list[int]:
    """The ids of repolm's special tokens the model has: code or a message never holds one (the
    build stage encodes their spelling as text), so generating such text stops at the first."""
    return sorted(set(lm.special.values()))


def generate(
    lm: LoadedModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int | Sequence[int],
    stop: StopRule | Sequence[StopRule | None] | None = None,
    stop_ids: Sequence[int] = (),
    batch_size: int = 8,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> list[str]:
    """Greedy continuations of token prompts (each cut from the left to leave room for the
    new tokens), decoded; sampled instead when `temperature` > 0, from the nucleus `top_p`
    (no top-k). `max_new_tokens`: one budget for all, or one per prompt. Generation
    ends at EOS or one of `stop_ids`; `stop(text)` (one rule for all, or one per prompt) may
    return the index at which a continuation is cut (None to keep it whole), and a row stops
    generating once its rule cuts."""
    import torch

    n = len(prompts)
    budgets = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
    rules = list(stop) if isinstance(stop, Sequence) else [stop] * n
    if len(budgets) != n or len(rules) != n:
        raise ValueError(f"{len(budgets)} budgets and {len(rules)} stop rules for {n} prompts")
    for budget in budgets:
        if lm.max_len - budget < 1:
            raise ValueError(f"max_new_tokens {budget} leaves no room in {lm.max_len}")
    # a batch generates until its last row is done: rows of like budgets (then like prompt
    # lengths, for less padding) go together
    order = sorted(range(n), key=lambda i: (budgets[i], len(prompts[i])))
    out: list[str] = [""] * n
    ends = list(dict.fromkeys([*lm.eos_ids, *stop_ids]))
    decoding = _decoding(temperature, top_p)
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
                size = len(cut[i])
                if size:
                    ids[row, width - size :] = torch.as_tensor(cut[i])
                    mask[row, width - size :] = 1
            criteria, kept = _rows_done(
                lm, width, [budgets[i] for i in group], [rules[i] for i in group], ends
            )
            generated = lm.model.generate(
                input_ids=ids.to(lm.device),
                attention_mask=mask.to(lm.device),
                max_new_tokens=most,
                num_beams=1,
                **decoding,
                eos_token_id=ends,
                pad_token_id=lm.pad_id,
                stopping_criteria=criteria,
                use_cache=True,  # a trained model is saved with use_cache false
            )
            for row, i in enumerate(group):
                new = generated[row, width:].tolist()[: kept[row]]
                stops = [m for m, t in enumerate(new) if t in ends]
                text = lm.decode(new[: stops[0]] if stops else new)
                at = rules[i](text) if rules[i] else None
                out[i] = text if at is None else text[:at]
    return out


def _decoding(temperature: float, top_p: float) -> dict[str, Any]:
    """`generate`'s sampling arguments: greedy at temperature 0, else nucleus sampling (top_k 0
    overrides a checkpoint's default top-k of 50)."""
    if temperature > 0:
        return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    return {"do_sample": False}


def _rows_done(
    lm: LoadedModel,
    width: int,
    budgets: list[int],
    rules: list[StopRule | None],
    ends: list[int],
) -> tuple[Any, list[int]]:
    """A stopping criterion for one batch (prompts `width` tokens wide): a row is done at EOS or
    a stop id, at its own budget, or once its stop rule cuts its text. Also the list it fills
    with how many new tokens each row kept (what follows is padding)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    kept = list(budgets)
    done = [False] * len(budgets)

    class RowsDone(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            made = input_ids.shape[1] - width
            for row, rule in enumerate(rules):
                if done[row]:
                    continue
                ended = made >= budgets[row] or int(input_ids[row, -1]) in ends
                if ended or (
                    rule is not None
                    and rule(lm.decode(input_ids[row, width:].tolist())) is not None
                ):
                    done[row], kept[row] = True, made
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([RowsDone()]), kept
