"""A trained model at the edge of evaluation: load it, encode prompts in repolm's formats,
score continuations and generate greedily, in batches.

Every evaluation that runs a model goes through here, so they agree on the device, precision,
context length and how repolm's special tokens are encoded: as single ids when the tokenizer
has them (a repolm model, or a base model whose tokenizer repolm extended), as text otherwise.
Text that merely spells a special token is always encoded as text, as the build stage does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repolm.errors import RepolmError
from repolm.formats.documents import Segment, Tok


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

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.eos_ids[0]

    def encode(self, text: str) -> list[int]:
        """Plain text: a special token's spelling stays text."""
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)[
            "input_ids"
        ]

    def encode_segments(self, segments: Sequence[Segment]) -> list[int]:
        """A document or prompt in repolm's format: special tokens by id where the vocabulary
        has them (spelled as text for a model that never saw them)."""
        ids: list[int] = []
        for s in segments:
            if isinstance(s, Tok):
                if s.token in self.special:
                    ids.append(self.special[s.token])
                else:
                    ids += self.encode(s.token)
            elif s:
                ids += self.encode(s)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)


def load_model(
    path: str | Path, precision: str = "auto", trust_remote_code: bool = False
) -> LoadedModel:
    """A Hugging Face causal LM from a local directory (or the local hub cache), on the best
    device, in the precision it computes natively (fp32 on a CPU without bf16)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repolm.hardware.device import choose_precision, detect, torch_dtype
    from repolm.hub import local_model_dir

    where = local_model_dir(str(path))
    info = detect()
    dtype = torch_dtype(choose_precision(precision, info))
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
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
    return wrap(model, tokenizer, str(path))


def wrap(model: Any, tokenizer: Any, path: str = "") -> LoadedModel:
    """A model already in memory (e.g. the one being trained) as a `LoadedModel`."""
    from repolm.formats import special as sp

    vocab = tokenizer.get_vocab()
    special = {t: vocab[t] for t in sp.SPECIAL_TOKENS if t in vocab}
    eos = [tokenizer.eos_token_id, special.get(sp.ENDOFTEXT)]
    max_len = getattr(model.config, "max_position_embeddings", None) or 2048
    return LoadedModel(
        path=path,
        model=model,
        tokenizer=tokenizer,
        device=next(model.parameters()).device,
        max_len=min(int(max_len), 32768),
        eos_ids=tuple(dict.fromkeys(i for i in eos if i is not None)) or (0,),
        special=special,
    )


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
    with torch.inference_mode():
        out = lm.model(input_ids=torch.as_tensor([prompt], device=lm.device), use_cache=True)
        cache = out.past_key_values
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
                past_key_values=past,
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
