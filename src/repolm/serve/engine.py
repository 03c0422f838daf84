"""The generation engine behind `repolm serve` and `repolm complete`: requests that arrive
together are generated together, as rows of one batch over the KV cache (transformers'
`generate`), each with its own sampling, seed, penalties, stop strings, stop rule, budget and
deadline, and each streamed to its caller as it grows.

Dynamic batching: the runner's thread takes up to `max_batch` waiting requests (it waits
`window_s` for more to arrive once the first does), runs them as one batch, and hands each row
its tokens as they are made. A row that is done (EOS, a stop id or string, its stop rule, its
budget, its deadline, or its caller cancelling) stops there and its caller is answered at
once; the batch goes on for the rest. A request that arrives while a batch runs waits for it:
the wait is bounded by that batch's largest budget and by the request's own deadline. For
throughput beyond one process, serve the exported model with vLLM or llama.cpp
(docs/serving.md).

Per-row sampling is one logits processor (`_Select`): it chooses each row's token by the row's
rule (greedy, or nucleus sampling from the row's own seeded generator, after presence and
frequency penalties), records its log-probabilities when asked, and leaves only that token
possible, so `generate` runs greedy over the chosen tokens.

The transformers' continuous-batching manager was measured here first (transformers 5.25, CPU):
6 requests of 12 tokens on a 2-layer model took 44 s, against well under a second for
`generate`, so it is not used on CPU.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from repolm.lm import LoadedModel, StopRule

T = TypeVar("T")


class Busy(Exception):
    """The queue is full (or the engine is shutting down): try again later."""


@dataclass(frozen=True)
class Sampling:
    """How a row chooses its tokens: greedy at temperature 0, else nucleus sampling from a
    generator seeded with `seed` (random when None)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None  # None: none; k: each token's and the k most likely's


@dataclass
class Request:
    """One continuation of a token prompt. The prompt must leave room for the budget in the
    model's window (`Engine.submit` checks)."""

    prompt: list[int]
    max_new_tokens: int
    sampling: Sampling = field(default_factory=Sampling)
    stop_strings: Sequence[str] = ()
    stop_rule: StopRule | None = None  # the index at which a text is cut, None: not yet
    stop_ids: Sequence[int] = ()
    timeout_s: float | None = None  # from submission, waiting included


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Piece:
    """Text the continuation grew by."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The end of a continuation. `reason`: stop (EOS, a stop id, string or rule), length (the
    budget), timeout, cancelled or error (with `error`)."""

    reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] = ()
    error: str | None = None


Event = Piece | Finished


class Generation:
    """A submitted request: iterate it (in a thread, or `async for` in the event loop it was
    submitted from) for its pieces; the last event is its `Finished`. `text` and `finished`
    hold what came so far. `cancel()` stops it; leaving an iteration early cancels it too."""

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.request = request
        self.submitted = time.monotonic()
        self.deadline = None if request.timeout_s is None else self.submitted + request.timeout_s
        self.first_token_at: float | None = None
        self.text = ""
        self.finished: Finished | None = None
        self.cancelled = threading.Event()
        self._loop = loop
        self._async: asyncio.Queue[Event] | None = asyncio.Queue() if loop else None
        self._sync: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def cancel(self) -> None:
        self.cancelled.set()

    def _emit(self, event: Event) -> None:
        if self.finished is not None:
            return  # ended already (abandoned while its batch still ran): nothing after the end
        if isinstance(event, Piece):
            self.text += event.text
        else:
            self.finished = event
        if self._loop is None:
            self._sync.put(event)
            return
        try:
            self._loop.call_soon_threadsafe(self._async.put_nowait, event)  # type: ignore[union-attr]
        except RuntimeError:  # the loop is closed: nobody is listening
            self.cancel()

    def __iter__(self) -> Iterator[Event]:
        if self._loop is not None:
            raise TypeError("a generation submitted from an event loop is read with `async for`")
        try:
            while True:
                event = self._sync.get()
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            if self.finished is None:
                self.cancel()

    async def __aiter__(self) -> AsyncIterator[Event]:
        if self._async is None:
            raise TypeError("a generation submitted without an event loop is read with `for`")
        try:
            while True:
                event = await self._async.get()
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            if self.finished is None:
                self.cancel()

    def pieces(self) -> Iterator[str]:
        """The text pieces alone (a thread's view); an error is raised once the pieces end."""
        for event in self:
            if isinstance(event, Piece):
                yield event.text
            elif event.reason == "error":
                raise RuntimeError(event.error)


class Runner:
    """The one thread that runs the batches of every engine sharing it, oldest request first.

    PyTorch on CPU wants one thread of the process to do its work: each thread that runs
    operators gets its own OpenMP team, and once two teams share the cores their workers sleep
    between operators instead of spinning. Measured here (SmolLM2-135M, 2 cores, 32 decoding
    steps): 1.05 s on the thread that loaded the model, 1.7 s on a second thread. So the server
    runs its batches on the main thread, the one that loaded its models, and its clients (the
    HTTP server, a terminal printer) on another: `run_while(fn)`. An engine made without a
    runner gets one of its own on a background thread (`start`), which is correct, and slower
    where the process already ran PyTorch on another thread."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.engines: list[Engine] = []
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run the batches on a background thread, until `stop`."""
        self._thread = threading.Thread(target=self._loop, name="repolm-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the loop once nothing is waiting; wait for a background thread to end."""
        with self.cond:
            self._stopping = True
            self.cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def run_while(self, fn: Callable[[], T]) -> T:
        """Call `fn` on another thread and run the batches on this one until it returns; its
        result, or its exception. An exception here (Ctrl-C) cancels every request first."""
        done: list[T] = []
        failed: list[BaseException] = []

        def call() -> None:
            try:
                done.append(fn())
            except BaseException as e:  # its SystemExit, too: the caller decides
                failed.append(e)
            finally:
                self.stop()

        client = threading.Thread(target=call, name="repolm-client", daemon=True)
        client.start()
        try:
            self._loop()
        except BaseException:
            for engine in self.engines:
                engine._abandon()
            raise
        client.join()
        if failed:
            raise failed[0]
        return done[0]

    def _loop(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self._stopping or any(e._pending for e in self.engines))
                ready = [e for e in self.engines if e._pending]
                if not ready:
                    return  # stopping, nothing left
                engine = min(ready, key=lambda e: e._pending[0].submitted)
            engine._step()
            with self.cond:
                self.cond.notify_all()  # for `Engine.close`, waiting for its batches to end


class Engine:
    """Batches a model's requests (see the module's doc) on its runner's thread: a runner of
    its own unless given one to share. `submit` raises `Busy` when `max_queue` requests are
    waiting already or the engine is closing."""

    def __init__(
        self,
        lm: LoadedModel,
        max_batch: int = 16,
        max_queue: int = 64,
        window_s: float = 0.005,
        runner: Runner | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self.lm = lm
        self.max_batch, self.max_queue, self.window_s = max_batch, max_queue, window_s
        self._pending: deque[Generation] = deque()
        self._running: list[Generation] = []
        self._closing = False
        self.batches = 0  # batches run, and rows in them: the mean batch size
        self.rows = 0
        self.tokens = 0  # tokens generated, over all rows
        self._own = runner is None
        self.runner = runner or Runner()
        self._cond = self.runner.cond
        with self._cond:
            self.runner.engines.append(self)
        if self._own:
            self.runner.start()

    # -- the caller's side
    def submit(self, request: Request, loop: asyncio.AbstractEventLoop | None = None) -> Generation:
        if request.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if len(request.prompt) + request.max_new_tokens > self.lm.max_len:
            raise ValueError(
                f"{len(request.prompt)} prompt tokens and {request.max_new_tokens} new ones "
                f"exceed the model's window of {self.lm.max_len}"
            )
        generation = Generation(request, loop)
        with self._cond:
            if self._closing:
                raise Busy("the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise Busy(f"{len(self._pending)} requests are waiting already")
            self._pending.append(generation)
            self._cond.notify_all()
        return generation

    @property
    def waiting(self) -> int:
        return len(self._pending)

    @property
    def active(self) -> int:
        return sum(g.finished is None for g in self._running)

    def close(self, grace_s: float = 10.0) -> None:
        """Stop taking requests; let those taken finish for up to `grace_s` seconds, then
        cancel the rest (and stop a runner of its own)."""
        idle = lambda: not self._pending and not self._running  # noqa: E731
        with self._cond:
            self._closing = True
            if not self._cond.wait_for(idle, grace_s):
                for g in [*self._pending, *self._running]:
                    g.cancel()
                self._cond.notify_all()
                if not self._cond.wait_for(idle, grace_s):  # a cancelled row ends at its next token
                    self._abandon()  # nothing runs the batches any more
        if self._own:
            self.runner.stop()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the runner's side
    def _step(self) -> None:
        if self.window_s and len(self._pending) < self.max_batch:
            time.sleep(self.window_s)  # requests sent together arrive a moment apart
        batch = self._take()
        if batch:
            self._run(batch)

    def _abandon(self) -> None:
        """End every request now, unanswered by the model (the runner is gone)."""
        with self._cond:
            for g in [*self._pending, *self._running]:
                if g.finished is None:
                    g.cancel()
                    g._emit(Finished("cancelled", len(g.request.prompt), 0))
            self._pending.clear()
            self._running = []

    def _take(self) -> list[Generation]:
        """The waiting requests that go into the next batch, oldest first: as many as fit the
        window together (the longest prompt and the largest budget)."""
        batch: list[Generation] = []
        width = most = 0
        now = time.monotonic()
        with self._cond:
            kept: deque[Generation] = deque()
            while self._pending:
                g = self._pending.popleft()
                if g.cancelled.is_set() or (g.deadline is not None and now >= g.deadline):
                    reason = "cancelled" if g.cancelled.is_set() else "timeout"
                    g._emit(Finished(reason, len(g.request.prompt), 0))
                    continue
                w = max(width, len(g.request.prompt))
                m = max(most, g.request.max_new_tokens)
                if len(batch) < self.max_batch and w + m <= self.lm.max_len:
                    batch.append(g)
                    width, most = w, m
                else:
                    kept.append(g)
            self._pending.extend(kept)
            self._running = batch
        return batch

    def _run(self, batch: list[Generation]) -> None:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        lm = self.lm
        rows = [_Row(lm, g) for g in batch]
        width = max(len(g.request.prompt) for g in batch) or 1
        ids = torch.full((len(batch), width), lm.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, g in enumerate(batch):  # left padding: generation continues at the end
            size = len(g.request.prompt)
            if size:
                ids[r, width - size :] = torch.as_tensor(g.request.prompt)
                mask[r, width - size :] = 1
        self.batches += 1
        self.rows += len(rows)
        try:
            with torch.inference_mode():
                lm.model.generate(
                    input_ids=ids.to(lm.device),
                    attention_mask=mask.to(lm.device),
                    max_new_tokens=max(g.request.max_new_tokens for g in batch),
                    do_sample=False,
                    num_beams=1,
                    eos_token_id=list(lm.eos_ids),
                    pad_token_id=lm.pad_id,
                    logits_processor=LogitsProcessorList([_Select(rows, width)]),
                    stopping_criteria=StoppingCriteriaList([_Done(rows)]),
                    streamer=_Tokens(rows, self),
                    use_cache=True,  # a trained model is saved with use_cache false
                )
        except Exception as e:  # every row of the batch fails; the engine goes on
            for row in rows:
                row.fail(f"{type(e).__name__}: {e}")
        finally:
            for row in rows:  # generate ended (its largest budget): whatever is left
                row.finish("length")
            self._running = []


class _Row:
    """One request in a running batch: its tokens, its text and what has been sent."""

    def __init__(self, lm: LoadedModel, generation: Generation) -> None:
        import torch

        self.lm, self.g = lm, generation
        request = generation.request
        self.ends = {*lm.eos_ids, *request.stop_ids}
        self.ids: list[int] = []
        self.sent = 0
        self.done = False
        self.logprobs: list[TokenLogprob] = []
        s = request.sampling
        self.rng = None
        if s.temperature > 0:
            self.rng = torch.Generator(device=lm.device)
            seed = s.seed if s.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
            self.rng.manual_seed(seed)

    def add(self, token: int) -> None:
        """The row's next token: send what is now known to be text, and end where it ends."""
        if self.done:
            return
        g = self.g
        if g.first_token_at is None:
            g.first_token_at = time.monotonic()
        if token in self.ends:
            self._send(self.lm.decode(self.ids))
            self.finish("stop")
            return
        self.ids.append(token)
        text = self.lm.decode(self.ids)
        at = _cut(text, g.request.stop_rule, g.request.stop_strings)
        if at is not None:
            self._send(text[:at])
            self.finish("stop")
        elif len(self.ids) >= g.request.max_new_tokens:
            self._send(text)
            self.finish("length")
        else:
            self._send(text[: _safe_end(text, g.request.stop_strings)])

    def check(self) -> bool:
        """Whether the row is done: also when its caller cancelled or its deadline passed."""
        if not self.done:
            if self.g.cancelled.is_set():
                self.finish("cancelled")
            elif self.g.deadline is not None and time.monotonic() >= self.g.deadline:
                self._send(self.lm.decode(self.ids))
                self.finish("timeout")
        return self.done

    def _send(self, text: str) -> None:
        if len(text) > self.sent:
            self.g._emit(Piece(text[self.sent :]))
            self.sent = len(text)

    def finish(self, reason: str, error: str | None = None) -> None:
        if self.done:
            return
        self.done = True
        if reason == "length":
            self._send(self.lm.decode(self.ids))  # held-back text: the budget is spent
        kept = tuple(self.logprobs[: len(self.ids)])
        self.g._emit(Finished(reason, len(self.g.request.prompt), len(self.ids), kept, error))

    def fail(self, error: str) -> None:
        self.finish("error", error)


class _Select:
    """Chooses every row's next token by its own sampling (see the module's doc)."""

    def __init__(self, rows: list[_Row], width: int) -> None:
        self.rows, self.width = rows, width

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        chosen = torch.full_like(scores, float("-inf"))
        for r, row in enumerate(self.rows):
            s = row.g.request.sampling
            logits = scores[r].float()
            if row.done:
                token = int(logits.argmax())  # replaced by padding: any token will do
                chosen[r, token] = 0.0
                continue
            if s.presence_penalty or s.frequency_penalty:
                made = input_ids[r, self.width :]
                if made.numel():
                    counts = torch.bincount(made, minlength=logits.numel())[: logits.numel()]
                    logits = logits - s.frequency_penalty * counts
                    logits = logits - s.presence_penalty * (counts > 0).float()
            if row.rng is None:
                token = int(logits.argmax())
            else:
                token = _nucleus(logits / s.temperature, s.top_p, row.rng)
            if s.logprobs is not None:
                row.logprobs.append(_logprob(row.lm, logits, token, s.logprobs))
            chosen[r, token] = 0.0
        return chosen


def _nucleus(logits: Any, top_p: float, rng: Any) -> int:
    """A token sampled from the smallest set of most likely tokens whose mass reaches top_p."""
    import torch

    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        outside = ordered.cumsum(-1) - ordered > top_p  # the first token always stays
        ordered[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=rng))


def _logprob(lm: LoadedModel, logits: Any, token: int, k: int) -> TokenLogprob:
    import torch

    logp = torch.log_softmax(logits, dim=-1)
    top = ()
    if k:
        values, indices = torch.topk(logp, k)
        top = tuple((lm.decode([int(i)]), float(v)) for v, i in zip(values, indices, strict=True))
    return TokenLogprob(lm.decode([token]), float(logp[token]), top)


class _Done:
    """`generate`'s stopping criterion: which rows are done."""

    def __init__(self, rows: list[_Row]) -> None:
        self.rows = rows

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.tensor([row.check() for row in self.rows], device=input_ids.device)


class _Tokens:
    """`generate`'s streamer: hands each row its new token (the first call is the prompt)."""

    def __init__(self, rows: list[_Row], engine: Engine) -> None:
        self.rows, self.engine, self.prompt_seen = rows, engine, False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, token in zip(self.rows, value.reshape(-1).tolist(), strict=True):
            if not row.done:
                self.engine.tokens += 1
                row.add(int(token))

    def end(self) -> None:
        pass


def _cut(text: str, stop: StopRule | None, stop_strings: Sequence[str]) -> int | None:
    """Where a text ends: the stop rule's cut or the first stop string, if any."""
    cuts = [i for i in (text.find(s) for s in stop_strings if s) if i >= 0]
    at = stop(text) if stop is not None else None
    if at is not None:
        cuts.append(at)
    return min(cuts) if cuts else None


def _safe_end(text: str, stop_strings: Sequence[str]) -> int:
    """How much of a growing text can be sent: not its trailing whitespace (a stop rule may
    still cut it), half a character, or the start of a stop string."""
    end = len(text.rstrip().rstrip("\ufffd"))
    for s in stop_strings:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                end = min(end, len(text) - k)
                break
    return end
