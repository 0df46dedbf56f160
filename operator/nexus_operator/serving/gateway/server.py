"""GatewayServer: the grpc.aio server hosting the ext_proc picker on its own port (9002).

gRPC health as the Endpoint Picker Protocol asks: `liveness` is SERVING while the server runs;
`readiness`, `envoy.service.ext_proc.v3.ExternalProcessor` and the overall "" are NOT_SERVING
until the registry has synced, whenever set_serving(False) marks the process degraded, and
once a graceful stop begins. Create and start it inside the running event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2, external_processor_pb2_grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import REGISTRY, CollectorRegistry

from ...routing import CredentialStore, RoutingEngine
from ..grpc_common import SERVING, ReadinessHealth, bind
from ..tls import TlsConfig
from .endpoints import EndpointResolver
from .metrics import GatewayMetrics
from .service import GatewayService, GatewaySettings

logger = logging.getLogger(__name__)

EXT_PROC_SERVICE: str = external_processor_pb2.DESCRIPTOR.services_by_name[
    "ExternalProcessor"
].full_name
LIVENESS = "liveness"
READINESS = "readiness"
DEFAULT_PORT = 9002
MiB = 1024 * 1024
HOUSEKEEPING_SECONDS = 0.5
WARM_EVERY = 10  # housekeeping rounds between endpoint-cache refreshes (5 s)


class GatewayServer:
    """The ext_proc endpoint of one process: ExternalProcessor + health + reflection + metrics."""

    def __init__(
        self,
        engine: RoutingEngine,
        *,
        settings: GatewaySettings,
        credentials: CredentialStore,
        address: str = f"127.0.0.1:{DEFAULT_PORT}",
        tls: TlsConfig | None = None,
        resolver: EndpointResolver | None = None,
        metrics_registry: CollectorRegistry = REGISTRY,
        max_message_bytes: int = 64 * MiB,
        reuse_port: bool = False,
    ) -> None:
        """`reuse_port`: several serving workers bind the same port (SO_REUSEPORT)."""
        self._engine = engine
        self._reuse_port = reuse_port
        self._address = address
        self._tls = tls
        self._metrics_registry = metrics_registry
        self._max_message_bytes = max(max_message_bytes, settings.max_body_bytes + MiB)
        self.metrics = GatewayMetrics()
        self.resolver = resolver or EndpointResolver()
        self.service = GatewayService(
            engine,
            settings=settings,
            credentials=credentials,
            resolver=self.resolver,
            metrics=self.metrics,
        )
        self._health = ReadinessHealth(engine, services=("", READINESS, EXT_PROC_SERVICE))
        self._server: grpc.aio.Server | None = None
        self._housekeeping_task: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Bind, start serving and return the bound port (an address ending in :0 picks one)."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.max_send_message_length", self._max_message_bytes),
                ("grpc.so_reuseport", int(self._reuse_port)),
            ],
        )
        external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health.servicer, server)
        reflection.enable_server_reflection(
            (EXT_PROC_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        port = bind(server, self._address, tls=self._tls, endpoint="ext_proc")
        await self._health.servicer.set(LIVENESS, SERVING)
        await self._health.apply()
        await self.warm()
        await server.start()
        self._server = server
        self.port = port
        self._metrics_registry.register(self.metrics)
        self._housekeeping_task = asyncio.create_task(
            self._housekeeping(), name="gateway-housekeeping"
        )
        # Everything loaded so far lives as long as the process: out of the collector's reach,
        # a full collection no longer walks it (≈ 30 ms pauses at 500 streams/s otherwise,
        # fed by grpc's per-call reference cycles; docs/gateway.md "Performance").
        gc.freeze()
        logger.info(
            "ext_proc gateway listening on %s (port %d, namespace %s, tls=%s)",
            self._address,
            port,
            self.service.settings.namespace,
            self._tls is not None,
        )
        return port

    def set_serving(self, serving: bool) -> None:
        """Report the process ready or degraded (readiness NOT_SERVING)."""
        self._health.set_serving(serving, started=self._server is not None)

    async def stop(self, grace: float) -> None:
        """Drain: NOT_SERVING everywhere, refuse new streams, give open ones `grace` seconds."""
        if self._server is None:
            return
        await self._health.drain(self._server, grace=grace, tasks=(self._housekeeping_task,))
        self._server = None
        await self.resolver.close()
        with contextlib.suppress(KeyError):
            self._metrics_registry.unregister(self.metrics)
        gc.unfreeze()  # a process that goes on (tests) collects that heap again

    async def warm(self) -> None:
        """Resolve the configured namespace's Backend URLs ahead of the requests that need them."""
        namespace = self.service.settings.namespace
        backends = self._engine.registry.snapshot.namespace(namespace).backends
        await self.resolver.warm(view.url for view in backends.values())

    async def _housekeeping(self) -> None:
        rounds = 0
        while True:
            await self._health.apply()
            rounds += 1
            if rounds % WARM_EVERY == 0:
                try:
                    await self.warm()
                except Exception:
                    logger.exception("refreshing backend endpoints failed")
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
