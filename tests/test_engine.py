"""The serving engine on a tiny model: a request streams what `generate` returns and never
past a stop; requests sent together are batched and each gets the text it gets alone (greedy,
and sampled with a seed); a full queue refuses; cancelling, deadlines and errors end a request
without stopping the engine."""

from __future__ import annotations

import threading
import time

import pytest

import repolm.lm as lm
from conftest import save_base_model
from repolm.serve.engine import (
    Busy,
    Engine,
    Finished,
    Piece,
    Request,
    Runner,
    Sampling,
    _safe_end,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> lm.LoadedModel:
    return lm.load_model(save_base_model(tmp_path_factory.mktemp("tiny") / "model"))


def prompts(model: lm.LoadedModel, n: int) -> list[list[int]]:
    """n prompts of different lengths (the batch pads them)."""
    return [model.encode(f"def op_{i}(a, b):\n" + "    x = 1\n" * (i % 3)) for i in range(n)]


def test_a_request_streams_what_generate_returns_and_never_past_a_stop(
    model: lm.LoadedModel,
) -> None:
    prompt = prompts(model, 1)[0]
    whole = lm.generate(model, [prompt], 24)[0]
    with Engine(model) as engine:
        events = list(engine.submit(Request(prompt, 24)))
        pieces = [e.text for e in events if isinstance(e, Piece)]
        assert "".join(pieces) == whole and len(pieces) > 1  # in pieces, as generated
        end = events[-1]
        assert isinstance(end, Finished) and end.reason in ("length", "stop")
        assert end.prompt_tokens == len(prompt) and 0 < end.completion_tokens <= 24
        cut = len(whole) // 2
        rule = Request(prompt, 24, stop_rule=lambda t: cut if len(t) > cut else None)
        assert "".join(engine.submit(rule).pieces()) == whole[:cut]
        needle = whole[cut : cut + 2]
        stopped = engine.submit(Request(prompt, 24, stop_strings=[needle]))
        assert "".join(stopped.pieces()) == whole[: whole.find(needle)]
        assert stopped.finished is not None and stopped.finished.reason == "stop"
        first = engine.submit(Request(prompt, 24)).pieces()
        next(first)
        first.close()  # cancels it: no hang, no error, and the engine goes on
        assert "".join(engine.submit(Request(prompt, 24)).pieces()) == whole
    assert _safe_end("a = 1\n  ", []) == 5
    assert _safe_end("x <|e", ["<|end|>"]) == 2


def test_requests_sent_together_are_batched_and_each_gets_its_text_alone(
    model: lm.LoadedModel,
) -> None:
    asks = prompts(model, 16)
    with Engine(model, window_s=0.05) as engine:
        alone = ["".join(engine.submit(Request(p, 20)).pieces()) for p in asks]
        seeded = Sampling(temperature=1.0, top_p=0.9, seed=7)
        sampled_alone = "".join(engine.submit(Request(asks[3], 20, seeded)).pieces())
        before = engine.batches
        together = [engine.submit(Request(p, 20)) for p in asks]
        sampled = engine.submit(Request(asks[3], 20, seeded))
        texts = ["".join(g.pieces()) for g in together]
        assert texts == alone
        assert "".join(sampled.pieces()) == sampled_alone  # a seed holds in a batch too
        assert engine.batches - before <= 2  # 17 requests: one batch of 16, one of 1
    assert engine.rows == 16 + 1 + 17


def test_a_full_queue_refuses_and_cancelling_frees_the_rows(model: lm.LoadedModel) -> None:
    prompt = prompts(model, 1)[0]
    slow = threading.Event()
    real = model.model.generate

    def held(*args, **kwargs):  # the first batch waits until the test lets it go
        slow.wait(10)
        return real(*args, **kwargs)

    model.model.generate = held
    try:
        engine = Engine(model, max_batch=1, max_queue=2, window_s=0)
        running = engine.submit(Request(prompt, 30))
        time.sleep(0.1)  # taken by the worker: the queue is empty again
        waiting = [engine.submit(Request(prompt, 30)) for _ in range(2)]
        with pytest.raises(Busy, match="2 requests are waiting"):
            engine.submit(Request(prompt, 30))
        waiting[0].cancel()
        slow.set()
        assert "".join(running.pieces())
        assert waiting[0].finished is None or waiting[0].finished.reason == "cancelled"
        list(waiting[1])
        assert waiting[1].finished.reason in ("length", "stop")
    finally:
        model.model.generate = real
    late = engine.submit(Request(prompt, 30, timeout_s=0.0))
    assert list(late)[-1].reason == "timeout"
    with pytest.raises(ValueError, match="exceed the model's window"):
        engine.submit(Request(prompt, model.max_len))
    engine.close()
    with pytest.raises(Busy, match="shutting down"):
        engine.submit(Request(prompt, 4))


def test_an_error_ends_the_batch_not_the_engine(model: lm.LoadedModel) -> None:
    prompt = prompts(model, 1)[0]
    real = model.model.generate

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    with Engine(model) as engine:
        model.model.generate = broken
        try:
            end = list(engine.submit(Request(prompt, 8)))[-1]
        finally:
            model.model.generate = real
        assert end.reason == "error" and "out of memory" in end.error
        assert "".join(engine.submit(Request(prompt, 8)).pieces())


def test_logprobs_and_penalties(model: lm.LoadedModel) -> None:
    prompt = prompts(model, 1)[0]
    with Engine(model) as engine:
        scored = engine.submit(Request(prompt, 6, Sampling(logprobs=2)))
        list(scored)
        end = scored.finished
        assert len(end.logprobs) == end.completion_tokens
        for t in end.logprobs:
            assert t.logprob <= 0 and len(t.top) == 2
            assert t.top[0][1] == pytest.approx(t.logprob)  # greedy: the top token
        plain = "".join(engine.submit(Request(prompt, 24)).pieces())
        penalised = Sampling(frequency_penalty=2.0, presence_penalty=2.0)
        assert "".join(engine.submit(Request(prompt, 24, penalised)).pieces()) != plain


def test_engines_sharing_a_runner_run_on_the_calling_thread(model: lm.LoadedModel) -> None:
    """`run_while`: the batches of both engines run on this thread, the client on another; the
    client's result comes back, and so does its exception, after which the runner is done."""
    asks = prompts(model, 4)
    with Engine(model) as alone:
        expected = ["".join(alone.submit(Request(p, 12)).pieces()) for p in asks]
    runner = Runner()
    first, second = Engine(model, runner=runner), Engine(model, max_batch=2, runner=runner)
    threads: set[str] = set()
    real_run = first._run

    def traced(batch: list) -> None:
        threads.add(threading.current_thread().name)
        real_run(batch)

    first._run = traced  # type: ignore[method-assign]

    def client() -> list[str]:
        both = [e.submit(Request(p, 12)) for p in asks for e in (first, second)]
        return ["".join(g.pieces()) for g in both]

    got = runner.run_while(client)
    assert got == [t for t in expected for _ in range(2)]
    assert threads == {threading.current_thread().name}

    def broken() -> None:
        raise KeyError("from the client")

    with pytest.raises(KeyError, match="from the client"):
        Runner().run_while(broken)
    for engine in (first, second):
        engine.close(grace_s=1)
        with pytest.raises(Busy):
            engine.submit(Request(asks[0], 4))
