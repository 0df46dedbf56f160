"""GrpcServer: the grpc.aio server hosting the Router service, health and reflection.

Create and start it inside the running event loop (kopf's startup hook, or `serve`): grpc.aio
objects bind to the loop they are created in.

Health (grpc.health.v1, overall "" and "nexus.routing.v1.Router") is NOT_SERVING until the
registry reports its first full sync, and again whenever set_serving(False) marks the process
degraded or a graceful stop begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import REGISTRY, CollectorRegistry

from ..routing import RoutingEngine
from .limits import AdmissionGuard, ServerLimits
from .metrics import RoutingMetrics
from .proto import router_pb2 as pb
from .service import RouterService
from .tls import TlsConfig

logger = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Router"].full_name
HOUSEKEEPING_SECONDS = 0.5
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcServer:
    """The routing endpoint of one process: Router service + health + reflection (+ metrics)."""

    def __init__(
        self,
        engine: RoutingEngine,
        *,
        address: str = "127.0.0.1:50051",
        tls: TlsConfig | None = None,
        limits: ServerLimits | None = None,
        max_concurrent_rpcs: int | None = None,
        max_message_bytes: int | None = None,
        reuse_port: bool = False,
        metrics: RoutingMetrics | None = None,
        metrics_registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        """`max_concurrent_rpcs` and `max_message_bytes` override the same fields of `limits`;
        `reuse_port` lets several worker processes bind the same port (SO_REUSEPORT).
        `metrics_registry` None: the metrics are not registered (a serving worker ships them to
        the control process instead)."""
        self._engine = engine
        self._address = address
        self._tls = tls
        limits = limits or ServerLimits()
        overrides = {
            name: value
            for name, value in (
                ("max_concurrent_rpcs", max_concurrent_rpcs),
                ("max_message_bytes", max_message_bytes),
            )
            if value is not None
        }
        self.limits = dataclasses.replace(limits, **overrides)
        self._reuse_port = reuse_port
        self._metrics_registry = metrics_registry
        self.metrics = metrics or RoutingMetrics(engine.registry)
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._degraded = False
        self._applied: int | None = None
        self._housekeeping_task: asyncio.Task[None] | None = None
        self._sweeper_task: asyncio.Task[None] | None = None
        self._health_updates: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Bind, start serving and return the bound port (an address ending in :0 picks one)."""
        # No grpc-level maximum_concurrent_rpcs: it would count calls still waiting for their
        # request; the admission guard counts only calls whose request has been read.
        server = grpc.aio.server(
            options=[
                *self.limits.grpc_options(),
                ("grpc.so_reuseport", int(self._reuse_port)),
            ],
        )
        service = RouterService(self._engine, metrics=self.metrics)
        self.guard = AdmissionGuard(self.limits, count_error=self.metrics.observe_error)
        server.add_generic_rpc_handlers((self.guard.handlers(SERVICE_NAME, service.methods()),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        port = self._bind(server)
        await self._apply_health()
        await server.start()
        self._server = server
        if self._metrics_registry is not None:
            self._metrics_registry.register(self.metrics)
        self._housekeeping_task = asyncio.create_task(
            self._housekeeping(), name="grpc-housekeeping"
        )
        self._sweeper_task = asyncio.create_task(self.guard.sweep(), name="grpc-read-deadline")
        logger.info(
            "gRPC routing endpoint listening on %s (port %d, tls=%s)",
            self._address,
            port,
            self._tls is not None,
        )
        return port

    def set_serving(self, serving: bool) -> None:
        """Report the process healthy or degraded (NOT_SERVING) on grpc.health.v1."""
        self._degraded = not serving
        if self._server is not None:
            update = asyncio.get_running_loop().create_task(self._apply_health())
            self._health_updates.add(update)  # the loop keeps only a weak reference
            update.add_done_callback(self._health_updates.discard)

    async def stop(self, grace: float) -> None:
        """Drain: report NOT_SERVING, refuse new RPCs, give in-flight ones `grace` seconds."""
        if self._server is None:
            return
        for task in (self._housekeeping_task, self._sweeper_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        self._server = None
        if self._metrics_registry is not None:
            with contextlib.suppress(KeyError):
                self._metrics_registry.unregister(self.metrics)

    def _bind(self, server: grpc.aio.Server) -> int:
        """grpcio reports a busy port and an unparseable address alike, as a RuntimeError;
        re-raise it as an OSError that names the address."""
        try:
            if self._tls is None:
                return int(server.add_insecure_port(self._address))
            return int(server.add_secure_port(self._address, self._tls.server_credentials()))
        except RuntimeError as exc:
            raise OSError(
                f"cannot bind the gRPC endpoint to {self._address!r} "
                "(port in use, or not host:port)"
            ) from exc

    async def _housekeeping(self) -> None:
        """Flip health once the registry is synced (the operator sets a flag, not an event) and
        refresh the metrics gauges, both on the loop that owns the registry."""
        while True:
            await self._apply_health()
            self.metrics.refresh_gauges_if_wanted()
            await asyncio.sleep(HOUSEKEEPING_SECONDS)

    async def _apply_health(self) -> None:
        status = _SERVING if self._engine.registry.synced and not self._degraded else _NOT_SERVING
        if status == self._applied:
            return
        self._applied = status
        for service in ("", SERVICE_NAME):
            await self._health.set(service, status)
