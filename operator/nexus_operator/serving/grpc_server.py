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
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import REGISTRY, CollectorRegistry

from ..routing import RoutingEngine
from .grpc_common import ReadinessHealth, bind
from .limits import AdmissionGuard, ServerLimits
from .metrics import RoutingMetrics
from .proto import router_pb2 as pb
from .service import RouterService
from .tls import TlsConfig

logger = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Router"].full_name
HOUSEKEEPING_SECONDS = 0.5


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
        self._health = ReadinessHealth(engine, services=("", SERVICE_NAME))
        self._server: grpc.aio.Server | None = None
        self._housekeeping_task: asyncio.Task[None] | None = None
        self._sweeper_task: asyncio.Task[None] | None = None

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
        self.guard.register(server, service=SERVICE_NAME, methods=service.methods())
        health_pb2_grpc.add_HealthServicer_to_server(self._health.servicer, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        port = bind(server, self._address, tls=self._tls, endpoint="gRPC")
        await self._health.apply()
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
        self._health.set_serving(serving, started=self._server is not None)

    async def stop(self, grace: float) -> None:
        """Drain: report NOT_SERVING, refuse new RPCs, give in-flight ones `grace` seconds."""
        if self._server is None:
            return
        tasks = (self._housekeeping_task, self._sweeper_task)
        await self._health.drain(self._server, grace=grace, tasks=tasks)
        self._server = None
        if self._metrics_registry is not None:
            with contextlib.suppress(KeyError):
                self._metrics_registry.unregister(self.metrics)

    async def _housekeeping(self) -> None:
        """Flip health once the registry is synced (the operator sets a flag, not an event) and
        refresh the metrics gauges, both on the loop that owns the registry."""
        while True:
            await self._health.apply()
            self.metrics.refresh_gauges_if_wanted()
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
