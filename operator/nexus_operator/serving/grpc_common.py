"""What the Router endpoint (GrpcServer) and the ext_proc picker (GatewayServer) share:
binding a port, gRPC health that follows the registry's sync and the process's degraded flag,
and the drain on stop."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from grpc_health.v1 import health, health_pb2

from ..routing import RoutingEngine
from .tls import TlsConfig

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def bind(server: grpc.aio.Server, address: str, *, tls: TlsConfig | None, endpoint: str) -> int:
    """Add the port and return it. grpcio reports a busy port and an unparseable address alike,
    as a RuntimeError; re-raise it as an OSError that names `endpoint` and the address."""
    try:
        if tls is None:
            return int(server.add_insecure_port(address))
        return int(server.add_secure_port(address, tls.server_credentials()))
    except RuntimeError as exc:
        raise OSError(
            f"cannot bind the {endpoint} endpoint to {address!r} (port in use, or not host:port)"
        ) from exc


class ReadinessHealth:
    """A grpc.health.v1 servicer whose `services` are SERVING once the registry has synced and
    the process is not degraded, NOT_SERVING otherwise (and from a graceful stop on)."""

    def __init__(self, engine: RoutingEngine, *, services: tuple[str, ...]) -> None:
        self.servicer = health.aio.HealthServicer()
        self.degraded = False
        self._engine = engine
        self._services = services
        self._applied: int | None = None
        self._updates: set[asyncio.Task[None]] = set()

    async def apply(self) -> None:
        """Set `services` to the status the registry and the degraded flag call for."""
        ready = self._engine.registry.synced and not self.degraded
        status = SERVING if ready else NOT_SERVING
        if status == self._applied:
            return
        self._applied = status
        for service in self._services:
            await self.servicer.set(service, status)

    def set_serving(self, serving: bool, *, started: bool) -> None:
        """Mark the process ready or degraded; a `started` server reports it soon after (a task
        of the running loop, as the caller is synchronous)."""
        self.degraded = not serving
        if started:
            update = asyncio.get_running_loop().create_task(self.apply())
            self._updates.add(update)  # the loop keeps only a weak reference
            update.add_done_callback(self._updates.discard)

    async def drain(
        self,
        server: grpc.aio.Server,
        *,
        grace: float,
        tasks: tuple[asyncio.Task[None] | None, ...],
    ) -> None:
        """Cancel the server's background `tasks`, report NOT_SERVING everywhere, refuse new
        calls and give open ones `grace` seconds."""
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.servicer.enter_graceful_shutdown()
        await server.stop(grace)
