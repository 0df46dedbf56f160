"""`nexus-operator serve --from-dir DIR`: serve gRPC decisions from YAML files, no cluster.

The directory is loaded into a Registry (Secrets in it feed the Backends' credentials), watched (polled every second) and reloaded on change;
the registry counts as synced once the first load succeeds. Backends are health-probed by the
same HealthProber the operator runs, unless --assume-healthy marks them all Healthy (for demos
and benchmarks with backends that do not exist). On SIGTERM/SIGINT the server drains.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

from ..operator.probing import HealthProber
from ..routing import BackendRuntime, Registry, RoutingEngine
from ..routing.credentials import sync_from_secrets
from ..serving import RoutingMetrics
from ..serving import event_loop as loops
from ..serving.plane import ServingPlane, WorkerStartError
from .manifest_dir import DirectoryWatcher, ManifestError, Manifests
from .serving_options import (
    RouterServers,
    StartupError,
    add_gateway_arguments,
    add_log_level_argument,
    add_serving_arguments,
    non_negative_int,
    start_gateway,
    start_metrics,
    start_serving,
)

logger = logging.getLogger(__name__)

DRAIN_GRACE_S = 5.0
SLOT_EXPIRY_PERIOD_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from-dir",
        type=Path,
        required=True,
        help="Directory of Backend/RoutingPolicy YAML files.",
    )
    parser.add_argument(
        "--assume-healthy",
        action="store_true",
        help="Mark every backend Healthy instead of probing it.",
    )
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=0,
        help="Serving worker processes sharing the gRPC port, fed by this process "
        "(default 0: serve from this process, as a small local router needs).",
    )
    add_log_level_argument(parser)
    add_serving_arguments(parser, default_grpc_address="127.0.0.1:50051")
    add_gateway_arguments(parser, default_extproc_address="127.0.0.1:9002")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.from_dir.is_dir():
        print(f"--from-dir {args.from_dir}: not a directory", file=sys.stderr)
        return 2
    try:
        return loops.run(_serve(args), choice=args.event_loop)
    except ManifestError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (StartupError, OSError) as exc:
        print(f"nexus-operator serve: {exc}", file=sys.stderr)
        return 2


async def _serve(args: argparse.Namespace) -> int:
    stop = _stop_on_signals()
    registry = Registry()
    after_reload: list[Callable[[Manifests], None]] = []

    def reload(manifests: Manifests) -> None:
        _apply(registry, manifests, assume_healthy=args.assume_healthy)
        for hook in after_reload:
            hook(manifests)

    watcher = DirectoryWatcher(args.from_dir, on_change=reload, namespaces=args.namespace)
    _apply(registry, watcher.load(), assume_healthy=args.assume_healthy)
    registry.synced = True
    engine = RoutingEngine(registry)
    if args.workers > 0:
        return await _serve_from_workers(
            args, watcher=watcher, engine=engine, stop=stop, after_reload=after_reload
        )
    server, port, metrics_port = await start_serving(engine, args)
    try:
        gateway, gateway_port = await start_gateway(engine, args, credentials=registry.credentials)
    except BaseException:
        await server.stop(0)
        raise
    print(
        f"serving gRPC on port {port}, metrics on port {metrics_port}, "
        f"ext_proc on port {gateway_port}",
        flush=True,
    )
    async with _background(watcher, engine, registry=registry, probe=not args.assume_healthy):
        await stop.wait()
    if gateway is not None:
        await gateway.stop(DRAIN_GRACE_S)
    await server.stop(DRAIN_GRACE_S)
    return 0


async def _serve_from_workers(
    args: argparse.Namespace,
    *,
    watcher: DirectoryWatcher,
    engine: RoutingEngine,
    stop: asyncio.Event,
    after_reload: list[Callable[[Manifests], None]],
) -> int:
    """The same serving plane as `run --workers`: this process watches the folder and probes."""
    registry = engine.registry
    metrics = RoutingMetrics(registry)
    plane = ServingPlane(
        engine,
        workers=args.workers,
        factory=RouterServers.from_args(args),
        metrics=metrics,
        log_level=args.log_level,
        event_loop=args.event_loop,
    )
    if args.assume_healthy:

        def push_health(manifests: Manifests) -> None:
            """Health is set after each reload, not by probes: copy it to the workers too."""
            for backend in manifests.backends:
                key = (backend.metadata.namespace, backend.metadata.name)
                plane.on_probe(key, registry.runtime.backend(*key))

        after_reload.append(push_health)
    try:
        ports = await plane.start()
    except WorkerStartError as exc:
        raise StartupError(f"--grpc-address {args.grpc_address}: {exc}") from exc
    try:
        metrics_port = start_metrics(args, metrics, plane.families)
    except BaseException:
        await plane.stop(0)
        raise
    print(
        f"serving gRPC on port {ports[0]}, metrics on port {metrics_port}, "
        f"ext_proc on port {ports[1] if len(ports) > 1 else None}, {args.workers} workers",
        flush=True,
    )
    async with _background(
        watcher, engine, registry=registry, probe=not args.assume_healthy, on_probe=plane.on_probe
    ):
        await stop.wait()
    await plane.stop(DRAIN_GRACE_S)
    return 0


def _apply(registry: Registry, manifests: Manifests, *, assume_healthy: bool) -> None:
    """Secrets in the directory feed the credentials as the operator's Secret reads would; a
    Backend whose Secret or key is missing is excluded (`credentials_unavailable`)."""
    registry.replace_all(manifests.backends, manifests.policies)
    problems = sync_from_secrets(
        registry.credentials, manifests.backends, secrets=manifests.secrets
    )
    for (namespace, name), problem in sorted(problems.items()):
        logger.warning(
            "Backend %s/%s: credentials unavailable: %s", namespace, name, problem.message
        )
    if assume_healthy:
        for backend in manifests.backends:
            registry.runtime.backend(
                backend.metadata.namespace, backend.metadata.name
            ).set_assumed_healthy()


@contextlib.asynccontextmanager
async def _background(
    watcher: DirectoryWatcher,
    engine: RoutingEngine,
    *,
    registry: Registry,
    probe: bool,
    on_probe: Callable[[tuple[str, str], BackendRuntime], None] | None = None,
) -> AsyncIterator[None]:
    """Directory watching, slot expiry and (unless assumed healthy) probing, for the server's life."""
    prober = HealthProber(registry) if probe else None
    if prober is not None:
        prober.on_probe = on_probe
        await prober.start()
    tasks = [
        asyncio.create_task(watcher.run(), name="watch-manifests"),
        asyncio.create_task(_expire_slots(engine), name="expire-slots"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if prober is not None:
            await prober.stop()


async def _expire_slots(engine: RoutingEngine) -> None:
    """Release in-flight slots whose usage report never arrived."""
    while True:
        await asyncio.sleep(SLOT_EXPIRY_PERIOD_S)
        released = engine.expire_slots(datetime.now(UTC))
        if released:
            logger.info("Released %d in-flight slots without a usage report", released)


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM/SIGINT, installed before anyone can learn the port."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
