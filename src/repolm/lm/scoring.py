"""How likely a model finds token sequences: summed negative log-likelihoods in nats, in
batches, with long sequences scored in overlapping windows and many continuations of one
prompt sharing its key/value cache; and bits per byte, the tokenizer-independent figure.

Eval's bits per byte, next-change ranking and the like are built on these; serving scores
through them too.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence
from typing import Any

from repolm.lm.loading import LoadedModel


def bits_per_byte(nll_nats: float, n_bytes: int) -> float:
    """(summed negative log-likelihood in nats) / ln 2 / (UTF-8 bytes); NaN for no bytes."""
    return nll_nats / math.log(2) / n_bytes if n_bytes else float("nan")


def batches(order: Sequence[int], lengths: Sequence[int], max_tokens: int) -> Iterator[list[int]]:
    """Indices in `order`, grouped so that each group's longest item × its size stays within
    `max_tokens` (similar lengths together: sort `order` by length first)."""
    group: list[int] = []
    longest = 0
    for i in order:
        n = max(lengths[i], 1)
        if group and max(longest, n) * (len(group) + 1) > max_tokens:
            yield group
            group, longest = [], 0
        group.append(i)
        longest = max(longest, n)
    if group:
        yield group


def sequence_nll(
    lm: LoadedModel,
    sequences: Sequence[Sequence[int]],
    first: Sequence[int] | None = None,
    max_tokens: int = 16384,
) -> list[tuple[float, int]]:
    """For each token sequence: the summed negative log-likelihood in nats of its tokens from
    position `first[i]` on (default 1: every token but the first, which has no context) and
    how many tokens that is. Sequences longer than the model's context are scored in windows
    that overlap by half a context, each token once, with as much context as fits."""
    import torch

    starts = list(first) if first is not None else [1] * len(sequences)
    # (sequence, window start, first scored position in the window, window end)
    pieces: list[tuple[int, int, int, int]] = []
    for i, seq in enumerate(sequences):
        n, window = len(seq), lm.max_len
        scored = max(starts[i], 1)
        if n <= window:
            pieces.append((i, 0, scored, n))
            continue
        end = window
        pieces.append((i, 0, scored, end))
        while end < n:
            new_end = min(n, end + window // 2)
            pieces.append((i, new_end - window, max(end, scored), new_end))
            end = new_end
    totals = [[0.0, 0] for _ in sequences]
    lengths = [p[3] - p[1] for p in pieces]
    order = sorted(range(len(pieces)), key=lambda k: lengths[k])
    with torch.inference_mode():
        for group in batches(order, lengths, max_tokens):
            width = max(lengths[k] for k in group)
            ids = torch.full((len(group), width), lm.pad_id, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for row, k in enumerate(group):
                i, a, _, b = pieces[k]
                ids[row, : b - a] = torch.as_tensor(sequences[i][a:b])
                mask[row, : b - a] = 1
            logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            target = ids[:, 1:].to(lm.device)
            nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).cpu()
            for row, k in enumerate(group):
                i, a, s, b = pieces[k]
                if b - s > 0:  # tokens s..b-1 of the sequence are predicted at rows s-1-a..
                    totals[i][0] += float(nll[row, s - 1 - a : b - 1 - a].double().sum())
                    totals[i][1] += b - s
    return [(t[0], t[1]) for t in totals]


def cache_argument(model: Any) -> str:
    """The name a model's forward takes its key/value cache by: `cache` from transformers 5.x
    (`past_key_values` is deprecated there), `past_key_values` for older or remote code."""
    forward = inspect.signature(model.forward).parameters
    return "cache" if "cache" in forward else "past_key_values"


def continuation_nll(
    lm: LoadedModel,
    prompt: Sequence[int],
    continuations: Sequence[Sequence[int]],
    max_tokens: int = 16384,
) -> list[tuple[float, int]]:
    """For each continuation of one shared prompt: its summed negative log-likelihood in nats
    and its token count, as `sequence_nll(prompt + continuation, first=len(prompt))` gives.
    The prompt runs once and its key/value cache is shared by the continuations, so ranking
    many short candidates after a long prompt costs about the candidates alone. The prompt is
    cut from the left to leave room for the longest continuation."""
    import copy

    import torch

    if not continuations:
        return []
    longest = max(len(c) for c in continuations)
    if longest >= lm.max_len:
        raise ValueError(f"a continuation of {longest} tokens leaves no room in {lm.max_len}")
    prompt = list(prompt)[-(lm.max_len - longest) :]
    if not prompt:  # nothing to condition on: the first token is not scored, as sequence_nll
        return sequence_nll(lm, continuations, max_tokens=max_tokens)
    name = cache_argument(lm.model)
    with torch.inference_mode():
        out = lm.model(input_ids=torch.as_tensor([prompt], device=lm.device), use_cache=True)
        cache = out.get("cache", None) if name == "cache" else out.get("past_key_values", None)
        if not hasattr(cache, "batch_repeat_interleave"):  # a model without a shareable cache
            whole = [[*prompt, *c] for c in continuations]
            return sequence_nll(lm, whole, [len(prompt)] * len(whole), max_tokens)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1).cpu()
        lengths = [len(c) for c in continuations]
        order = sorted(range(len(continuations)), key=lambda i: lengths[i])
        totals: list[tuple[float, int]] = [(0.0, 0)] * len(continuations)
        # each row attends to the prompt too: count it in the batch's size
        for group in batches(order, [n + len(prompt) for n in lengths], max_tokens):
            width = max(lengths[i] for i in group)
            ids = torch.full((len(group), width), lm.pad_id, dtype=torch.long)
            for row, i in enumerate(group):
                ids[row, : lengths[i]] = torch.as_tensor(continuations[i])
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(group))
            mask = torch.ones((len(group), len(prompt) + width), dtype=torch.long)
            logits = lm.model(
                input_ids=ids.to(lm.device),
                attention_mask=mask.to(lm.device),
                **{name: past},
                use_cache=True,
            ).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            rest = -logp.gather(-1, ids[:, 1:].to(lm.device).unsqueeze(-1)).squeeze(-1).cpu()
            for row, i in enumerate(group):
                n = lengths[i]
                if n:  # padding after a row's end is never read: attention is causal
                    tail = float(rest[row, : n - 1].double().sum())
                    totals[i] = (tail - float(first[continuations[i][0]]), n)
    return totals


def text_nll(
    lm: LoadedModel, texts: Sequence[str], max_tokens: int = 16384
) -> list[tuple[float, int]]:
    """For each plain text, scored on its own: its summed negative log-likelihood in nats and
    its token count. The tokenizer's BOS (or EOS) in front is its only context, so every token
    of the text is scored."""
    bos = lm.tokenizer.bos_token_id
    start = bos if bos is not None else lm.eos_ids[0]
    return sequence_nll(lm, [[start, *lm.encode(t)] for t in texts], max_tokens=max_tokens)
