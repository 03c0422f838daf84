"""Continuations of token prompts: greedy, or sampled from a nucleus, in batches of similar
length (`generate`) or one streamed piece by piece (`stream`), ended by EOS, extra stop ids, a
stop rule on the text or stop strings. Eval's generation tasks, training's samples, `repolm
complete` and serving all generate through here.

A row of a batch stops as soon as it is done (EOS, a stop id, its own budget, or its stop rule
cuts its text), not when the whole batch's largest budget is spent: a base model that never
emits EOS where a unit ends costs the tokens up to that end, not its budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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


def stream(
    lm: LoadedModel,
    prompt: Sequence[int],
    max_new_tokens: int,
    stop: StopRule | None = None,
    stop_ids: Sequence[int] = (),
    stop_strings: Sequence[str] = (),
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> Iterator[str]:
    """One continuation of a token prompt, yielded in pieces as it is generated: greedy, or
    sampled as in `generate`. It ends at EOS or a stop id, after `max_new_tokens`, where
    `stop(text)` cuts, or before the first of `stop_strings`; nothing past the end is ever
    yielded (text that may still turn out to be past it, such as the start of a stop string,
    trailing whitespace or half a character, is held back until it is known not to be).
    Closing the iterator early stops the generation."""
    import threading
    from queue import Queue

    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    if lm.max_len - max_new_tokens < 1:
        raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room in {lm.max_len}")
    ids = list(prompt)[-(lm.max_len - max_new_tokens) :] or [lm.pad_id]
    ends = list(dict.fromkeys([*lm.eos_ids, *stop_ids]))
    pieces: Queue[list[int] | BaseException | None] = Queue()
    halt = threading.Event()

    class Tokens(BaseStreamer):
        prompt_seen = False

        def put(self, value: Any) -> None:
            if self.prompt_seen:
                pieces.put(value.reshape(-1).tolist())
            self.prompt_seen = True  # generate's first call passes the prompt

        def end(self) -> None:
            pieces.put(None)

    class Halt(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), halt.is_set(), device=input_ids.device)

    decoding = _decoding(temperature, top_p)

    def work() -> None:
        try:
            with torch.inference_mode():
                lm.model.generate(
                    input_ids=torch.tensor([ids], device=lm.device),
                    attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=lm.device),
                    max_new_tokens=max_new_tokens,
                    num_beams=1,
                    **decoding,
                    eos_token_id=ends,
                    pad_token_id=lm.pad_id,
                    streamer=Tokens(),
                    stopping_criteria=StoppingCriteriaList([Halt()]),
                    use_cache=True,
                )
        except BaseException as e:  # re-raised in the caller's thread
            pieces.put(e)

    thread = threading.Thread(target=work, name="repolm-generate", daemon=True)
    thread.start()
    new: list[int] = []
    sent = 0
    try:
        while (got := pieces.get()) is not None:
            if isinstance(got, BaseException):
                raise got
            new += got
            done = next((n for n, t in enumerate(new) if t in ends), None)
            text = lm.decode(new if done is None else new[:done])
            at = _cut(text, stop, stop_strings)
            if at is not None or done is not None:
                end = len(text) if at is None else at
                if end > sent:
                    yield text[sent:end]
                return
            safe = _safe_end(text, stop_strings)
            if safe > sent:
                yield text[sent:safe]
                sent = safe
        text = lm.decode(new)  # the budget is spent: the rest, held back or not
        if len(text) > sent:
            yield text[sent:]
    finally:
        halt.set()
        thread.join()


def _cut(text: str, stop: StopRule | None, stop_strings: Sequence[str]) -> int | None:
    """Where a streamed text ends: the stop rule's cut or the first stop string, if any."""
    cuts = [i for i in (text.find(s) for s in stop_strings if s) if i >= 0]
    at = stop(text) if stop is not None else None
    if at is not None:
        cuts.append(at)
    return min(cuts) if cuts else None


def _safe_end(text: str, stop_strings: Sequence[str]) -> int:
    """How much of a streamed text can be shown: not its trailing whitespace (a unit's end may
    still cut it), half a character, or the start of a stop string."""
    end = len(text.rstrip().rstrip("\ufffd"))
    for s in stop_strings:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                end = min(end, len(text) - k)
                break
    return end
