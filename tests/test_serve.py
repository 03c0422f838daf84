"""`repolm serve` on a free loopback port with a tiny model, driven by the official `openai`
client: models, completions with and without `suffix`, chat, responses, streaming with usage,
errors and auth; bad requests are 4xx JSON and the server keeps serving; 16 concurrent
streams get the text each gets alone; a full queue is a 503."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import Scripted, save_base_model
from repolm.lm import load_model
from repolm.serve.app import ServedModel, Settings, create_app
from repolm.serve.engine import Engine
from repolm.serve.prompts import ToolCallStream

KEY = "sk-test-key"
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, models: list[ServedModel], settings: Settings) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(
            create_app(models, settings), host="127.0.0.1", port=self.port, log_level="error"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    path = save_base_model(tmp_path_factory.mktemp("tiny") / "model")
    code = load_model(path)
    chat = load_model(path)
    chat.tokenizer.chat_template = CHAT_TEMPLATE
    models = [
        ServedModel("code", code, Engine(code, max_batch=16, window_s=0.02), parent="tiny-base"),
        ServedModel("chat", chat, Engine(chat, max_queue=64)),
    ]
    running = Server(models, Settings(api_keys=(KEY,), cors_origins=("http://editor.test",)))
    yield running
    running.stop()
    for m in models:
        m.engine.close()


@pytest.fixture(scope="module")
def client(server: Server) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def raw(server: Server, path: str, body: bytes | None = None, key: str | None = KEY, **h) -> Any:
    headers = {"Content-Type": "application/json", **h}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    method = h.pop("method", None) or ("POST" if body is not None else "GET")
    req = urllib.request.Request(server.url + path, body, headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_models_and_health(server: Server, client: Any) -> None:
    listed = client.models.list().data
    assert [m.id for m in listed] == ["code", "chat"]
    assert all(m.created and m.owned_by == "repolm" for m in listed)
    assert listed[0].model_extra["parent"] == "tiny-base"
    status, _, body = raw(server, "/health", key=None)
    assert status == 200 and json.loads(body)["status"] == "ok"  # public
    status, _, body = raw(server, "/metrics")
    assert status == 200 and b"repolm_requests_total" in body and b"repolm_queue_depth" in body


def test_completions(client: Any) -> None:
    plain = client.completions.create(
        model="code", prompt="def op_3(a, b):\n", max_tokens=12, temperature=0
    )
    choice = plain.choices[0]
    assert choice.text and choice.finish_reason in ("stop", "length")
    assert plain.usage.completion_tokens <= 12 and plain.usage.prompt_tokens > 0
    again = client.completions.create(
        model="code", prompt="def op_3(a, b):\n", max_tokens=12, temperature=0
    )
    assert again.choices[0].text == choice.text  # greedy: repeatable
    fim = client.completions.create(
        model="code", prompt="def op_3(a, b):\n", suffix="\n", max_tokens=8, temperature=0
    )
    assert fim.choices[0].finish_reason in ("stop", "length")  # no FIM tokens: continued
    sampled = [
        client.completions.create(
            model="code", prompt="def", max_tokens=10, temperature=1.0, seed=5, n=2
        )
        for _ in range(2)
    ]
    assert [c.text for c in sampled[0].choices] == [c.text for c in sampled[1].choices]
    scored = client.completions.create(
        model="code", prompt="def", max_tokens=4, temperature=0, logprobs=2
    )
    assert len(scored.choices[0].logprobs.token_logprobs) == scored.usage.completion_tokens
    chunks = list(
        client.completions.create(
            model="code",
            prompt="def op_3(a, b):\n",
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == choice.text
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_chat_and_responses(client: Any) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    answer = client.chat.completions.create(
        model="chat", messages=messages, max_tokens=10, temperature=0
    )
    assert answer.choices[0].message.role == "assistant"
    assert isinstance(answer.choices[0].message.content, str)
    assert answer.usage.completion_tokens <= 10
    capped = client.chat.completions.create(
        model="chat", messages=messages, max_completion_tokens=3, temperature=0
    )
    assert capped.usage.completion_tokens <= 3
    streamed = list(
        client.chat.completions.create(
            model="chat",
            messages=messages,
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert streamed[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == answer.choices[0].message.content
    assert streamed[-1].usage.total_tokens == answer.usage.total_tokens
    # a model without a chat template chats in repolm's question-and-answer format
    qa = client.chat.completions.create(model="code", messages=messages, max_tokens=6)
    assert qa.choices[0].message.content is not None
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with_tools = client.chat.completions.create(
        model="chat", messages=messages, max_tokens=6, tools=tools
    )
    assert with_tools.choices[0].message.tool_calls is None  # text: a call is never invented
    response = client.responses.create(
        model="chat", input="Hi", instructions="Be brief.", max_output_tokens=10, temperature=0
    )
    assert response.status in ("completed", "incomplete")
    assert response.output_text == answer.choices[0].message.content
    events = list(
        client.responses.create(
            model="chat",
            input=[{"role": "user", "content": "Hi"}],
            max_output_tokens=10,
            temperature=0,
            stream=True,
        )
    )
    assert events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == events[-1].response.output_text


def test_errors_are_4xx_json_and_the_server_keeps_serving(server: Server, client: Any) -> None:
    import openai

    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="max_tokens 100000 does not fit"):
        client.completions.create(model="code", prompt="x", max_tokens=100000)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="code", prompt="x", temperature=5)
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_object"},
        )
    with pytest.raises(openai.BadRequestError, match="echo"):
        client.completions.create(model="code", prompt="x", echo=True)
    cases = [
        ("/v1/completions", b"{not json", 400),
        ("/v1/completions", b"[1, 2]", 400),
        ("/v1/completions", json.dumps({"model": "code", "prompt": 3}).encode(), 400),
        ("/v1/chat/completions", json.dumps({"model": "chat", "messages": []}).encode(), 400),
        ("/v1/completions", b"x" * (2 << 20), 413),
        ("/v1/nothing", b"{}", 404),
    ]
    for path, body, status in cases:
        got, _, answer = raw(server, path, body)
        assert got == status, (path, answer[:200])
        assert "message" in json.loads(answer)["error"]
    got, _, answer = raw(server, "/v1/models", key="wrong")
    assert got == 401 and "API key" in json.loads(answer)["error"]["message"]
    assert raw(server, "/v1/models", key=None)[0] == 401
    # CORS preflight works with keys: no key is asked for the OPTIONS request
    got, headers, _ = raw(
        server,
        "/v1/chat/completions",
        key=None,
        method="OPTIONS",
        Origin="http://editor.test",
        **{"Access-Control-Request-Method": "POST"},
    )
    assert got == 200 and headers.get("access-control-allow-origin") == "http://editor.test"
    assert client.models.list().data  # still serving


def test_sixteen_concurrent_streams_get_their_text_alone(client: Any) -> None:
    prompts = [f"def op_{i}(a, b):\n" + "    x = 1\n" * (i % 3) for i in range(16)]

    def ask(prompt: str, stream: bool) -> str:
        got = client.completions.create(
            model="code", prompt=prompt, max_tokens=16, temperature=0, stream=stream
        )
        if not stream:
            return got.choices[0].text
        return "".join(c.choices[0].text for c in got if c.choices)

    alone = [ask(p, False) for p in prompts]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda p: ask(p, True), prompts))
    assert together == alone


def test_a_full_queue_is_a_503_and_a_gone_client_frees_its_row(tmp_path: Path) -> None:
    import openai

    lm = load_model(save_base_model(tmp_path / "tiny"))
    gate = threading.Event()
    real = lm.model.generate

    def held(*args: Any, **kwargs: Any) -> Any:
        gate.wait(20)
        return real(*args, **kwargs)

    lm.model.generate = held
    engine = Engine(lm, max_batch=1, max_queue=1, window_s=0)
    server = Server([ServedModel("m", lm, engine)], Settings())
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(client.completions.create, model="m", prompt="a", max_tokens=4)
            time.sleep(0.3)
            second = pool.submit(client.completions.create, model="m", prompt="b", max_tokens=4)
            time.sleep(0.3)
            with pytest.raises(openai.APIStatusError) as busy:
                client.completions.create(model="m", prompt="c", max_tokens=4)
            assert busy.value.status_code == 503
            assert busy.value.response.headers["retry-after"]
            gate.set()
            assert first.result().choices[0].text is not None and second.result()
        lm.model.generate = real
        # a client that goes away mid-stream: its row is cancelled and the engine is free
        stream = client.completions.create(
            model="m", prompt="def", max_tokens=100, temperature=0, stream=True
        )
        next(iter(stream))
        stream.close()
        deadline = time.monotonic() + 10
        while engine.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.active == 0
        assert client.completions.create(model="m", prompt="a", max_tokens=2).choices
    finally:
        gate.set()
        server.stop()
        engine.close()


def test_a_chat_template_s_markers_are_special_tokens(tmp_path: Path) -> None:
    from repolm.serve.prompts import QA_STOP, chat_prompt

    lm = load_model(save_base_model(tmp_path / "tiny"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    plain, stops = chat_prompt(lm, messages, None)  # no template: repolm's Q&A format
    assert lm.decode(plain) == "Be brief.\n\nQuestion: Hi\nAnswer: " and stops == [QA_STOP]
    lm.tokenizer.chat_template = CHAT_TEMPLATE
    ids, stops = chat_prompt(lm, messages, None)
    marker = lm.tokenizer.convert_tokens_to_ids("<s>")
    assert ids.count(marker) == 3 and stops == []  # system, user, and the answer's turn


def test_the_address_and_the_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from repolm.errors import RepolmError
    from repolm.serve.server import api_keys, check_address

    check_address("127.0.0.1", Settings(), allow_remote=False)
    with pytest.raises(RepolmError, match="beyond this machine"):
        check_address("0.0.0.0", Settings(api_keys=("k",)), allow_remote=False)
    with pytest.raises(RepolmError, match="needs an API key"):
        check_address("0.0.0.0", Settings(), allow_remote=True)
    check_address("0.0.0.0", Settings(api_keys=("k",)), allow_remote=True)
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nfile-key\n\n")
    monkeypatch.setenv("REPOLM_API_KEY", "env-a, env-b")
    assert api_keys(["flag"], keys) == ("flag", "env-a", "env-b", "file-key")
    with pytest.raises(RepolmError, match="cannot read the key file"):
        api_keys(None, tmp_path / "absent")


@pytest.mark.slow  # two `repolm serve` processes: seconds each
def test_the_cli_serves_until_sigterm_and_names_a_taken_port(tmp_path: Path) -> None:
    """SIGTERM while a stream runs (as long as the tiny model writes before its EOS): the stream
    still ends with `[DONE]`, then the server exits 0. A second server on the same port fails
    in one line, without a traceback."""
    import os
    import signal
    import subprocess
    import sys

    path = save_base_model(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    config["max_position_embeddings"] = 4096  # room for a stream that outlasts the signal
    (path / "config.json").write_text(json.dumps(config))
    port = free_port()
    command = [sys.executable, "-m", "repolm", "serve", "--model", str(path), "--port", str(port)]
    command += ["--context", "4096"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        taken = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert taken.returncode != 0 and f"could not serve on 127.0.0.1:{port}" in taken.stderr
        assert "Traceback" not in taken.stderr

        body = {"model": str(path), "prompt": "def f(", "max_tokens": 3000, "stream": True}
        ask = urllib.request.Request(
            url + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(ask, timeout=30) as stream:
            first = stream.readline()
            assert first.startswith(b"data: {")
            proc.send_signal(signal.SIGTERM)
            rest = stream.read().decode()
        assert rest.rstrip().endswith("data: [DONE]") and '"finish_reason":"' in rest.replace(
            " ", ""
        )
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]


def test_tool_calls_stream_held_back_and_parsed(tmp_path: Path) -> None:
    """A model that writes a Hermes-style call: without streaming it is `tool_calls`; streamed,
    the text before it streams as content, no byte of the call does, and the call comes as a
    `tool_calls` delta with finish_reason tool_calls, as openai-python accumulates it."""
    import openai

    lm = load_model(save_base_model(tmp_path / "model"))
    lm.tokenizer.chat_template = CHAT_TEMPLATE
    said = 'Look.<tool_call>{"name": "read", "arguments": {"path": "a"}}</tool_call>'
    lm.model = Scripted(lm.model, lm.encode(said))
    budget = len(lm.encode(said)) + 1
    engine = Engine(lm)
    server = Server([ServedModel("agent", lm, engine)], Settings())
    tools = [{"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}]
    ask = {"model": "agent", "messages": [{"role": "user", "content": "Read a"}], "tools": tools}
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        whole = client.chat.completions.create(**ask, max_tokens=budget).choices[0]
        assert whole.finish_reason == "tool_calls" and whole.message.content == "Look."
        (call,) = whole.message.tool_calls
        assert call.function.name == "read" and json.loads(call.function.arguments) == {"path": "a"}
        chunks = list(client.chat.completions.create(**ask, max_tokens=budget, stream=True))
        content = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert content == "Look."
        deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
        assert [(d.index, d.function.name) for d in deltas] == [(0, "read")]
        assert json.loads(deltas[0].function.arguments) == {"path": "a"}
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
    finally:
        server.stop()
        engine.close()


@pytest.mark.parametrize(
    ("pieces", "sent", "rest"),
    [
        (["Hi <tool", "x> there"], "Hi <toolx> there", ""),  # not a call after all
        (["a<", "tool_c", "all>{", '"name": "f"}</tool_call>'], "a", ""),
        (["<tool_call>{broken</tool_call>"], "", "<tool_call>{broken</tool_call>"),
    ],
)
def test_tool_call_stream_holds_back_only_what_may_be_a_call(
    pieces: list[str], sent: str, rest: str
) -> None:
    held = ToolCallStream()
    assert "".join(held.feed(p) for p in pieces) == sent
    text, calls = held.end()
    assert text == rest and len(calls) == (0 if rest or "tool" in sent else 1)
