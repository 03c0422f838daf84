"""`repolm serve`: an OpenAI-compatible API over a run's models (FastAPI).

Routes: `GET /health` (public), `GET /metrics` (Prometheus text), `GET /v1/models[/{id}]`,
`POST /v1/completions` (`suffix` for fill-in-the-middle), `POST /v1/chat/completions` (the
model's chat template, or repolm's question-and-answer format; `tools` answered with
`tool_calls` when the model writes one in its template's format), `POST /v1/responses` (the
Responses API's text subset, which n8n's OpenAI Chat Model node calls). Streaming is
server-sent events in OpenAI's chunk format, ending in `data: [DONE]` (Responses: its typed
events). Every model is generated through its own batching `Engine`.

Bad requests get OpenAI-shaped JSON errors with 4xx codes and never stop the server; a full
queue is a 503 with `Retry-After`. With API keys, every route but `/health` (and CORS
preflight) needs `Authorization: Bearer KEY`, compared in constant time.
"""

import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from repolm.lm import LoadedModel, special_stops
from repolm.serve.engine import Busy, Engine, Finished, Generation, Piece, Request, Sampling
from repolm.serve.prompts import ToolCallStream, chat_prompt, completion_prompt, tool_calls


@dataclass
class ServedModel:
    """A model the server answers for: its id, what it was fine-tuned from, and its engine."""

    id: str
    lm: LoadedModel
    engine: Engine
    parent: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass(frozen=True)
class Settings:
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1 << 20
    timeout_s: float = 300.0
    retry_after_s: int = 1


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code = code or {
            400: "invalid_request_error",
            401: "invalid_api_key",
            404: "model_not_found",
            413: "request_too_large",
            503: "server_busy",
        }.get(status, "error")


def error_body(status: int, message: str, param: str | None = None, code: str = "") -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 401:
        kind = "authentication_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code or None}}


# -- request bodies (fields OpenAI has and repolm does not use are ignored)
class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    n: int = Field(1, ge=1, le=8)

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4:
            raise ApiError(400, "at most 4 stop sequences", "stop")
        return [s for s in stops if s]


class CompletionBody(_Body):
    prompt: str | list[str] = ""
    suffix: str | None = None
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    best_of: int | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        content = self.content
        if isinstance(content, list):  # content parts: the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        role = "system" if self.role == "developer" else self.role
        out: dict[str, Any] = {"role": role, "content": content or ""}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        return out


class ChatBody(_Body):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool = False


class ResponsesBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stream: bool = False
    text: dict[str, Any] | None = None


def create_app(models: Sequence[ServedModel], settings: Settings | None = None) -> Any:
    """The FastAPI app serving `models` (the first is the default of nothing: `model` must
    name one)."""
    from fastapi import FastAPI
    from fastapi import Request as HttpRequest
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from starlette.exceptions import HTTPException as StarletteHTTPException

    settings = settings or Settings()
    by_id = {m.id: m for m in models}
    app = FastAPI(title="repolm", docs_url=None, redoc_url=None, openapi_url=None)

    registry = CollectorRegistry()
    requests_total = Counter(
        "repolm_requests", "Requests answered", ["route", "status"], registry=registry
    )
    tokens_total = Counter(
        "repolm_tokens", "Tokens", ["model", "kind"], registry=registry
    )  # kind: prompt or completion
    latency = Histogram(
        "repolm_request_seconds", "Generation request latency", ["route"], registry=registry
    )
    first_token = Histogram(
        "repolm_time_to_first_token_seconds", "Time to the first token", registry=registry
    )
    queue_depth = Gauge("repolm_queue_depth", "Requests waiting", ["model"], registry=registry)
    running = Gauge("repolm_running", "Requests generating", ["model"], registry=registry)
    for m in models:
        queue_depth.labels(m.id).set_function(lambda e=m.engine: e.waiting)
        running.labels(m.id).set_function(lambda e=m.engine: e.active)

    def fail(status: int, message: str, param: str | None = None, headers=None) -> Any:
        return JSONResponse(error_body(status, message, param), status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: HttpRequest, e: ApiError) -> Any:
        headers = {"Retry-After": str(settings.retry_after_s)} if e.status == 503 else None
        return JSONResponse(error_body(e.status, e.message, e.param, e.code), e.status, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: HttpRequest, e: RequestValidationError) -> Any:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return fail(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}", where)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: HttpRequest, e: StarletteHTTPException) -> Any:
        return fail(e.status_code, str(e.detail))

    @app.middleware("http")
    async def _guard(request: HttpRequest, call_next: Any) -> Any:
        path = request.url.path
        if settings.api_keys and path != "/health" and request.method != "OPTIONS":
            given = request.headers.get("authorization", "")
            key = given[7:].strip() if given.lower().startswith("bearer ") else ""
            if not any(hmac.compare_digest(key.encode(), k.encode()) for k in settings.api_keys):
                requests_total.labels(path, "401").inc()
                return fail(401, "a valid API key is needed: Authorization: Bearer KEY")
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > settings.max_body_bytes):
            requests_total.labels(path, "413").inc()
            return fail(413, f"the body is over {settings.max_body_bytes} bytes")
        response = await call_next(request)
        requests_total.labels(path, str(response.status_code)).inc()
        return response

    if settings.cors_origins:  # outermost: preflight is answered before the key is asked for
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )

    async def body_of(request: HttpRequest, kind: type[BaseModel]) -> Any:
        raw = await request.body()
        if len(raw) > settings.max_body_bytes:
            raise ApiError(413, f"the body is over {settings.max_body_bytes} bytes")
        try:
            data = json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not JSON: {e}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object")
        try:
            return kind.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ApiError(400, f"{where}: {first['msg']}", where) from None

    def served(name: str) -> ServedModel:
        if name not in by_id:
            raise ApiError(
                404, f"the model {name!r} does not exist; GET /v1/models lists them", "model"
            )
        return by_id[name]

    def budget(m: ServedModel, prompt: list[int], asked: int | None, param: str) -> int:
        room = m.lm.max_len - len(prompt)
        if room < 1:
            raise ApiError(
                400,
                f"the prompt is {len(prompt)} tokens; the model's window is {m.lm.max_len}",
                "prompt",
            )
        if asked is not None and asked > room:
            raise ApiError(
                400,
                f"{param} {asked} does not fit: the prompt is {len(prompt)} tokens of a "
                f"{m.lm.max_len}-token window, leaving {room}",
                param,
            )
        return asked if asked is not None else room

    def submit(m: ServedModel, request: Request) -> Generation:
        import asyncio

        try:
            return m.engine.submit(request, asyncio.get_running_loop())
        except Busy as e:
            raise ApiError(503, f"the server is busy ({e}); retry shortly") from None

    async def collect(gen: Generation) -> Finished:
        async for event in gen:
            if isinstance(event, Finished):
                if event.reason == "error":
                    raise ApiError(500, f"generation failed: {event.error}")
                return event
        raise AssertionError("a generation ends with Finished")

    def finish_reason(end: Finished) -> str:
        return "stop" if end.reason in ("stop", "cancelled") else "length"

    def count(m: ServedModel, ends: list[Finished]) -> dict[str, int]:
        prompt = ends[0].prompt_tokens if ends else 0
        made = sum(e.completion_tokens for e in ends)
        tokens_total.labels(m.id, "prompt").inc(prompt)
        tokens_total.labels(m.id, "completion").inc(made)
        return {"prompt_tokens": prompt, "completion_tokens": made, "total_tokens": prompt + made}

    def sampling(body: Any, seed_offset: int = 0, logprobs: int | None = None) -> Sampling:
        seed = None if body.seed is None else body.seed + seed_offset
        return Sampling(
            body.temperature,
            body.top_p,
            seed,
            body.presence_penalty,
            body.frequency_penalty,
            logprobs,
        )

    def sse(data: Any) -> str:
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    async def stream_events(
        request: HttpRequest, gens: list[Generation], chunk: Any, done: Any
    ) -> AsyncIterator[str]:
        """The chunks of `gens` (n choices), interleaved as they come; a client that goes
        away cancels them."""
        import asyncio

        started = time.monotonic()
        ends: list[Finished | None] = [None] * len(gens)
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

        async def pump(i: int, gen: Generation) -> None:
            async for event in gen:
                await queue.put((i, event))

        tasks = [asyncio.create_task(pump(i, g)) for i, g in enumerate(gens)]
        try:
            while any(e is None for e in ends):
                try:
                    i, event = await asyncio.wait_for(queue.get(), 1.0)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    continue
                if isinstance(event, Piece):
                    yield sse(chunk(i, event.text, None))
                else:
                    ends[i] = event
                    if event.reason == "error":
                        yield sse(error_body(500, f"generation failed: {event.error}"))
                    yield sse(chunk(i, "", event))
            for data in done([e for e in ends if e is not None]):
                yield sse(data)
            yield "data: [DONE]\n\n"
        finally:
            for g in gens:
                g.cancel()
            for t in tasks:
                t.cancel()
            if gens and gens[0].first_token_at is not None:
                first_token.observe(gens[0].first_token_at - gens[0].submitted)
            latency.labels("stream").observe(time.monotonic() - started)

    def streaming(events: AsyncIterator[str]) -> Any:
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def usage_chunk(m: ServedModel, body: Any, head: dict[str, Any]) -> Any:
        """A stream's end: the usage counted, and sent as a last chunk when asked."""

        def done(ends: list[Finished]) -> list[dict[str, Any]]:
            usage = count(m, ends)
            wanted = (body.stream_options or {}).get("include_usage")
            return [{**head, "choices": [], "usage": usage}] if wanted else []

        return done

    async def all_ended(gens: list[Generation], route: str) -> list[Finished]:
        started = time.monotonic()
        ends = [await collect(g) for g in gens]
        latency.labels(route).observe(time.monotonic() - started)
        return ends

    # -- routes
    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "models": list(by_id)}

    @app.get("/metrics")
    async def metrics() -> Any:
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain")

    def model_card(m: ServedModel) -> dict[str, Any]:
        card = {"id": m.id, "object": "model", "created": m.created, "owned_by": "repolm"}
        if m.parent:
            card["parent"] = m.parent
        card["max_model_len"] = m.lm.max_len
        return card

    @app.get("/v1/models")
    async def list_models() -> Any:
        return {"object": "list", "data": [model_card(m) for m in models]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> Any:
        return model_card(served(model_id))

    @app.post("/v1/completions")
    async def completions(request: HttpRequest) -> Any:
        body = await body_of(request, CompletionBody)
        m = served(body.model)
        if body.echo:
            raise ApiError(400, "echo is not supported; prepend the prompt yourself", "echo")
        if body.best_of not in (None, 1):
            raise ApiError(400, "best_of is not supported; use n", "best_of")
        if body.stream and body.logprobs is not None:
            raise ApiError(400, "logprobs are returned only without stream", "logprobs")
        if isinstance(body.prompt, list) and len(body.prompt) != 1:
            raise ApiError(400, "give one prompt (a string) per request", "prompt")
        text = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        prompt = completion_prompt(m.lm, text, body.suffix)
        new = budget(m, prompt, body.max_tokens, "max_tokens")
        stops = body.stops()
        reqs = [
            Request(
                prompt,
                new,
                sampling(body, k, body.logprobs),
                stop_strings=stops,
                stop_ids=special_stops(m.lm),
                timeout_s=settings.timeout_s,
            )
            for k in range(body.n)
        ]
        gens = [submit(m, r) for r in reqs]
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "text_completion", "created": created, "model": m.id}

        def chunk(i: int, text: str, end: Finished | None) -> dict[str, Any]:
            choice = {
                "index": i,
                "text": text,
                "logprobs": None,
                "finish_reason": finish_reason(end) if end else None,
            }
            return {**head, "choices": [choice]}

        if body.stream:
            return streaming(stream_events(request, gens, chunk, usage_chunk(m, body, head)))
        ends = await all_ended(gens, "completions")
        choices = []
        for i, (g, end) in enumerate(zip(gens, ends, strict=True)):
            choice = chunk(i, g.text, end)["choices"][0]
            if body.logprobs is not None:
                choice["logprobs"] = {
                    "tokens": [t.token for t in end.logprobs],
                    "token_logprobs": [t.logprob for t in end.logprobs],
                    "top_logprobs": [dict(t.top) for t in end.logprobs],
                    "text_offset": [],
                }
            choices.append(choice)
        return {**head, "choices": choices, "usage": count(m, ends)}

    def chat_request(m: ServedModel, messages: list[dict], tools: Any, asked: int | None) -> Any:
        try:
            prompt, stops = chat_prompt(m.lm, messages, tools)
        except Exception as e:  # a template that refuses these messages (e.g. roles' order)
            raise ApiError(
                400, f"the chat template refused the messages: {e}", "messages"
            ) from None
        new = budget(m, prompt, asked, "max_tokens")
        return prompt, new, stops

    @app.post("/v1/chat/completions")
    async def chat(request: HttpRequest) -> Any:
        body = await body_of(request, ChatBody)
        m = served(body.model)
        kind = (body.response_format or {}).get("type", "text")
        if kind != "text":
            raise ApiError(
                400,
                f"response_format {kind} is not supported: the output is not constrained; "
                "ask for JSON in the prompt and leave response_format out",
                "response_format",
            )
        if body.logprobs:
            raise ApiError(400, "logprobs are offered on /v1/completions only", "logprobs")
        messages = [x.as_dict() for x in body.messages]
        asked = body.max_completion_tokens or body.max_tokens
        prompt, new, stops = chat_request(m, messages, body.tools, asked)
        reqs = [
            Request(
                prompt,
                new,
                sampling(body, k),
                stop_strings=[*stops, *body.stops()],
                stop_ids=special_stops(m.lm),
                timeout_s=settings.timeout_s,
            )
            for k in range(body.n)
        ]
        gens = [submit(m, r) for r in reqs]
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": m.id}
        started_roles: set[int] = set()
        # with tools, each choice's text is held back from a call's start to its end
        held = [ToolCallStream() for _ in gens] if body.tools else None

        def chunk(i: int, text: str, end: Finished | None) -> dict[str, Any]:
            calls: list[dict[str, Any]] = []
            if held is not None:
                text = held[i].feed(text)
                if end is not None:
                    rest, calls = held[i].end()
                    text += rest
            delta: dict[str, Any] = {"content": text} if text or end is None else {}
            if i not in started_roles:
                started_roles.add(i)
                delta = {"role": "assistant", **delta, "content": delta.get("content", "")}
            if calls:
                delta["tool_calls"] = [{"index": k, **c} for k, c in enumerate(calls)]
            reason = "tool_calls" if calls else finish_reason(end) if end else None
            choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": reason}
            return {**head, "choices": [choice]}

        if body.stream:
            return streaming(stream_events(request, gens, chunk, usage_chunk(m, body, head)))
        ends = await all_ended(gens, "chat")
        choices = []
        for i, (g, end) in enumerate(zip(gens, ends, strict=True)):
            text, calls = tool_calls(g.text) if body.tools else (g.text, [])
            message: dict[str, Any] = {"role": "assistant", "content": text}
            reason = finish_reason(end)
            if calls:
                message["tool_calls"] = calls
                message["content"] = text or None
                reason = "tool_calls"
            choices.append(
                {"index": i, "message": message, "logprobs": None, "finish_reason": reason}
            )
        whole = {**head, "object": "chat.completion"}
        return {**whole, "choices": choices, "usage": count(m, ends)}

    @app.post("/v1/responses")
    async def responses(request: HttpRequest) -> Any:
        body = await body_of(request, ResponsesBody)
        m = served(body.model)
        kind = ((body.text or {}).get("format") or {}).get("type", "text")
        if kind != "text":
            raise ApiError(
                400,
                f"text.format {kind} is not supported: the output is not constrained",
                "text.format",
            )
        messages = [{"role": "system", "content": body.instructions}] if body.instructions else []
        if isinstance(body.input, str):
            messages.append({"role": "user", "content": body.input})
        else:
            for item in body.input:
                if item.get("type", "message") != "message" or "role" not in item:
                    raise ApiError(400, "input items must be messages (role, content)", "input")
                content = item.get("content") or ""
                if isinstance(content, list):
                    content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
                role = "system" if item["role"] == "developer" else item["role"]
                messages.append({"role": role, "content": content})
        prompt, new, stops = chat_request(m, messages, None, body.max_output_tokens)
        req = Request(
            prompt,
            new,
            Sampling(body.temperature, body.top_p),
            stop_strings=stops,
            stop_ids=special_stops(m.lm),
            timeout_s=settings.timeout_s,
        )
        gen = submit(m, req)
        rid, msg_id, created = f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}", time.time()

        def response(text: str | None, end: Finished | None) -> dict[str, Any]:
            out = []
            if text is not None:
                out = [
                    {
                        "type": "message",
                        "id": msg_id,
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                ]
            usage = None
            if end is not None:
                usage = {
                    "input_tokens": end.prompt_tokens,
                    "output_tokens": end.completion_tokens,
                    "total_tokens": end.prompt_tokens + end.completion_tokens,
                }
            status = (
                "in_progress"
                if end is None
                else ("completed" if end.reason in ("stop", "cancelled") else "incomplete")
            )
            return {
                "id": rid,
                "object": "response",
                "created_at": int(created),
                "status": status,
                "model": m.id,
                "output": out,
                "usage": usage,
                "incomplete_details": {"reason": "max_output_tokens"}
                if status == "incomplete"
                else None,
                "error": None,
            }

        if not body.stream:
            end = await collect(gen)
            count(m, [end])
            return response(gen.text, end)

        async def events() -> AsyncIterator[str]:
            seq = 0

            def event(kind: str, **data: Any) -> str:
                nonlocal seq
                seq += 1
                return f"event: {kind}\n" + sse({"type": kind, "sequence_number": seq, **data})

            yield event("response.created", response=response(None, None))
            yield event("response.in_progress", response=response(None, None))
            item = {
                "type": "message",
                "id": msg_id,
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            yield event("response.output_item.added", output_index=0, item=item)
            part = {"type": "output_text", "text": "", "annotations": []}
            where = {"item_id": msg_id, "output_index": 0, "content_index": 0}
            yield event("response.content_part.added", **where, part=part)
            try:
                async for got in gen:
                    if isinstance(got, Piece):
                        yield event("response.output_text.delta", **where, delta=got.text)
                    elif got.reason == "error":
                        yield event("error", message=f"generation failed: {got.error}")
                        return
            finally:
                gen.cancel()
            end = gen.finished
            count(m, [end])
            yield event("response.output_text.done", **where, text=gen.text)
            yield event("response.content_part.done", **where, part={**part, "text": gen.text})
            done = response(gen.text, end)
            yield event("response.output_item.done", output_index=0, item=done["output"][0])
            yield event("response.completed", response=done)

        return streaming(events())

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def unknown(path: str) -> Any:
        return fail(404, f"no route /{path}; see GET /v1/models and the OpenAI API routes")

    return app
