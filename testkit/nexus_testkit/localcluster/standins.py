"""Small inference-server stand-ins on loopback, for tests and the `make run` demo.

They answer the endpoints the operator really probes — Ollama's `/api/tags` and the
OpenAI-compatible `/v1/models` (vLLM, llama.cpp, LM Studio, …) — and nothing else.
A stand-in can be told to stop answering (`set_healthy(False)` makes every request
return 503) or to answer slowly, so tests can drive the health state machine for real.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["InferenceStandIn", "StandInBehaviour", "StandIns"]


@dataclass
class StandInBehaviour:
    """What the stand-in does on the next request; mutable while it runs."""

    healthy: bool = True
    delay_s: float = 0.0
    requests: int = 0


@dataclass
class InferenceStandIn:
    """An Ollama-like or OpenAI-compatible server listing `models`."""

    flavour: str  # "ollama" or "openai" (vLLM and the other OpenAI-compatible servers)
    models: list[str]
    host: str = "127.0.0.1"
    port: int = 0
    behaviour: StandInBehaviour = field(default_factory=StandInBehaviour)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set_healthy(self, healthy: bool) -> None:
        self.behaviour.healthy = healthy

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/tags", self._ollama_tags)
        app.router.add_get("/v1/models", self._openai_models)
        app.router.add_get("/health", self._plain_health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
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

    async def _openai_models(self, _request: web.Request) -> web.Response:
        if (refused := await self._gate()) is not None:
            return refused
        body = {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
        return web.json_response(body, dumps=json.dumps)

    async def _plain_health(self, _request: web.Request) -> web.Response:
        if (refused := await self._gate()) is not None:
            return refused
        return web.json_response({"status": "ok"})


class StandIns:
    """Stand-ins served from their own background loop, so blocking callers (sync tests, the
    demo's main thread) can start, stop and steer them freely."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._servers: list[InferenceStandIn] = []

    def start(
        self, flavour: str = "ollama", models: tuple[str, ...] = ("llama3:8b",), *, port: int = 0
    ) -> InferenceStandIn:
        server = InferenceStandIn(flavour, list(models), port=port)
        asyncio.run_coroutine_threadsafe(server.start(), self._loop).result(10)
        self._servers.append(server)
        return server

    def close(self) -> None:
        for server in self._servers:
            asyncio.run_coroutine_threadsafe(server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
