"""Small inference-server stand-ins on loopback, for tests, benchmarks and the `make run` demo.

They answer the endpoints the operator really probes — Ollama's `/api/tags` and the
OpenAI-compatible `/v1/models` (vLLM, llama.cpp, LM Studio, …) — and the OpenAI completion
endpoints a gateway forwards to: `POST /v1/chat/completions` and `POST /v1/completions`,
as one JSON answer with `usage` or as an SSE stream (`data: {...}` chunks, a final usage chunk
when `stream_options.include_usage` is set, then `data: [DONE]`).

Every completion says who served it and what arrived: the `x-standin-name` response header
and the `model` field echo the stand-in's name and the model in the request body, and
`received` keeps each request's model, path and headers, so tests can assert routing, the
model rewrite and the credential a gateway injected.

Knobs (`StandInBehaviour`, mutable while it runs): `healthy=False` makes every request
return 503; `delay_s` answers slowly; `fail_status=500` fails completions only (probes stay
healthy); `stream_delay_s` paces SSE chunks so a client can abort mid-stream;
`required_headers` answers 401 unless each header has the given value (a cloud API key);
`completion_tokens`/`prompt_tokens` override the reported usage (to move budgets).
`start(tls=...)` serves HTTPS with a certificate from the testkit PKI (a "cloud" backend).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = [
    "InferenceStandIn",
    "ReceivedRequest",
    "StandInBehaviour",
    "StandIns",
    "server_tls_context",
]

NAME_HEADER = "x-standin-name"
DEFAULT_STREAM_CHUNKS = 4


@dataclass
class StandInBehaviour:
    """What the stand-in does on the next request; mutable while it runs."""

    healthy: bool = True
    delay_s: float = 0.0
    requests: int = 0
    fail_status: int | None = None
    fail_empty: bool = False  # with fail_status: the failure has no body at all
    stream_delay_s: float = 0.0
    stream_chunks: int = DEFAULT_STREAM_CHUNKS
    required_headers: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class ReceivedRequest:
    """One completion request as the stand-in saw it."""

    path: str
    model: str
    stream: bool
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class InferenceStandIn:
    """An Ollama-like or OpenAI-compatible server listing `models`."""

    flavour: str  # "ollama" or "openai" (vLLM and the other OpenAI-compatible servers)
    models: list[str]
    host: str = "127.0.0.1"
    port: int = 0
    name: str = ""
    behaviour: StandInBehaviour = field(default_factory=StandInBehaviour)
    received: list[ReceivedRequest] = field(default_factory=list)
    completed: int = 0
    aborted: int = 0
    streams_open: int = 0
    _tls: ssl.SSLContext | None = field(default=None, init=False, repr=False)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """`ip:port`, as a gateway's destination header names it."""
        return f"{self.host}:{self.port}"

    def set_healthy(self, healthy: bool) -> None:
        self.behaviour.healthy = healthy

    def models_received(self) -> list[str]:
        return [request.model for request in self.received]

    async def start(self, *, tls: ssl.SSLContext | None = None) -> str:
        self._tls = tls
        app = web.Application()
        app.router.add_get("/api/tags", self._ollama_tags)
        app.router.add_get("/v1/models", self._openai_models)
        app.router.add_get("/health", self._plain_health)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_post("/v1/completions", self._completions)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=tls)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        if not self.name:
            self.name = f"{self.flavour}-{self.port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _gate(self) -> web.Response | None:
        self.behaviour.requests += 1
        if self.behaviour.delay_s:
            await asyncio.sleep(self.behaviour.delay_s)
        if not self.behaviour.healthy:
            return web.Response(status=503, text="stand-in told to be unhealthy")
        return None

    async def _ollama_tags(self, _request: web.Request) -> web.Response:
        if (refused := await self._gate()) is not None:
            return refused
        body = {"models": [{"name": m, "model": m, "size": 0} for m in self.models]}
        return web.json_response(body, dumps=json.dumps)

    async def _openai_models(self, request: web.Request) -> web.Response:
        if (refused := await self._gate()) is not None:
            return refused
        if (unauthorised := self._check_headers(request)) is not None:
            return unauthorised
        body = {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
        return web.json_response(body, dumps=json.dumps)

    async def _plain_health(self, _request: web.Request) -> web.Response:
        if (refused := await self._gate()) is not None:
            return refused
        return web.json_response({"status": "ok"})

    # -- completions ---------------------------------------------------------------------

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        if (refused := await self._gate()) is not None:
            return refused
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self._error(400, "invalid_request_error", "the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return self._error(400, "invalid_request_error", "`model` is required")
        model = body["model"]
        stream = body.get("stream") is True
        self.received.append(
            ReceivedRequest(
                path=request.path,
                model=model,
                stream=stream,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            )
        )
        if (unauthorised := self._check_headers(request)) is not None:
            return unauthorised
        if self.behaviour.fail_status is not None:
            if self.behaviour.fail_empty:
                return web.Response(
                    status=self.behaviour.fail_status, headers={NAME_HEADER: self.name}
                )
            return self._error(self.behaviour.fail_status, "server_error", "stand-in told to fail")
        prompt_tokens = self.behaviour.prompt_tokens or _estimate_prompt_tokens(body)
        words = [f"word{i}" for i in range(max(1, self.behaviour.stream_chunks))]
        completion_tokens = self.behaviour.completion_tokens or len(words)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if stream:
            include_usage = (body.get("stream_options") or {}).get("include_usage") is True
            return await self._stream(
                request, chat=chat, model=model, words=words, usage=usage if include_usage else None
            )
        text = f"hello from {self.name}: " + " ".join(words)
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            if chat
            else {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        )
        answer = {
            "id": f"cmpl-{self.name}-{len(self.received)}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
        self.completed += 1
        return web.json_response(answer, headers={NAME_HEADER: self.name}, dumps=json.dumps)

    async def _stream(
        self,
        request: web.Request,
        *,
        chat: bool,
        model: str,
        words: list[str],
        usage: dict[str, int] | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                NAME_HEADER: self.name,
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
            }
        )
        ident = f"chatcmpl-{self.name}-{len(self.received)}"
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            payload = {
                "id": ident,
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": choices,
                **extra,
            }
            return f"data: {json.dumps(payload)}\n\n".encode()

        def piece(text: str, finish: str | None) -> dict[str, Any]:
            if chat:
                return {"index": 0, "delta": {"content": text}, "finish_reason": finish}
            return {"index": 0, "text": text, "finish_reason": finish}

        self.streams_open += 1
        try:
            await response.prepare(request)
            first = f"hello from {self.name}:"
            if chat:
                await response.write(
                    chunk([{"index": 0, "delta": {"role": "assistant", "content": first}}])
                )
            else:
                await response.write(chunk([piece(first, None)]))
            for word in words:
                if self.behaviour.stream_delay_s:
                    await asyncio.sleep(self.behaviour.stream_delay_s)
                await response.write(chunk([piece(f" {word}", None)]))
            await response.write(chunk([piece("", "stop")]))
            if usage is not None:
                await response.write(chunk([], usage=usage))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.aborted += 1
            raise
        finally:
            self.streams_open -= 1
        self.completed += 1
        return response

    def _check_headers(self, request: web.Request) -> web.Response | None:
        for name, value in self.behaviour.required_headers.items():
            if request.headers.get(name) != value:
                return self._error(
                    401, "invalid_request_error", f"missing or wrong {name} header", code="401"
                )
        return None

    def _error(
        self, status: int, kind: str, message: str, *, code: str | None = None
    ) -> web.Response:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return web.json_response(
            body, status=status, headers={NAME_HEADER: self.name}, dumps=json.dumps
        )


def _estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """About four characters a token, like the tokenisers real servers report."""
    text = json.dumps(body.get("messages", body.get("prompt", "")))
    return max(1, len(text) // 4)


class StandIns:
    """Stand-ins served from their own background loop, so blocking callers (sync tests, the
    demo's main thread) can start, stop and steer them freely."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._servers: list[InferenceStandIn] = []

    def start(
        self,
        flavour: str = "ollama",
        models: tuple[str, ...] = ("llama3:8b",),
        *,
        port: int = 0,
        name: str = "",
        tls: ssl.SSLContext | None = None,
    ) -> InferenceStandIn:
        server = InferenceStandIn(flavour, list(models), port=port, name=name)
        asyncio.run_coroutine_threadsafe(server.start(tls=tls), self._loop).result(10)
        self._servers.append(server)
        return server

    def stop(self, server: InferenceStandIn) -> None:
        """Stop one stand-in (its port closes); the others keep serving."""
        asyncio.run_coroutine_threadsafe(server.stop(), self._loop).result(10)

    def close(self) -> None:
        for server in self._servers:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def server_tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server-side TLS context for `start(tls=...)` from PEM files (e.g. the testkit PKI)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context
