"""`nexus-operator run`: the operator against a cluster — kopf watches, gRPC decisions, metrics.

kopf runs standalone (no peering: every replica keeps its own watches and registry and serves
gRPC) with an explicit registry and a liveness endpoint on --health-port. The gRPC server and the
metrics endpoint start from kopf's startup handler, on the operator's own loop, once the registry
has been rebuilt from a full list; cleanup drains gRPC before the final status flush.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import kopf
from prometheus_client import REGISTRY

from ..operator.handlers import Hooks, build_registry
from ..operator.metrics import StatusWriterCollector
from ..operator.replica import ROLE_OPERATOR, ROLE_ROUTER, Controller, ControllerConfig
from ..serving import GrpcServer, RoutingMetrics
from ..serving.gateway import GatewayServer
from ..serving.plane import ServingPlane, WorkerStartError
from .serving_options import (
    RouterServers,
    StartupError,
    add_gateway_arguments,
    add_log_level_argument,
    add_serving_arguments,
    gateway_enabled,
    gateway_settings,
    non_negative_int,
    positive_float,
    start_gateway,
    start_metrics,
    start_serving,
    tls_config,
)

logger = logging.getLogger(__name__)

DRAIN_GRACE_S = 5.0
# The control process's nice increment once serving workers run (--control-nice).
CONTROL_NICE = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_serving_arguments(parser, default_grpc_address="0.0.0.0:50051")
    add_gateway_arguments(parser, default_extproc_address="0.0.0.0:9002")
    parser.add_argument(
        "--health-port",
        type=int,
        default=8080,
        help="Port of the liveness endpoint /healthz (default 8080).",
    )
    parser.add_argument(
        "--health-address",
        default="0.0.0.0",
        help="Address /healthz listens on, e.g. 127.0.0.1 for loopback only (default 0.0.0.0).",
    )
    parser.add_argument(
        "--role",
        choices=(ROLE_OPERATOR, ROLE_ROUTER),
        default=ROLE_OPERATOR,
        help="operator: contend for the Lease and write status; router: read-only sidecar that "
        "only adds its own usage deltas (default operator).",
    )
    parser.add_argument(
        "--kubeconfig", help="Kubeconfig file (default: in-cluster, else $KUBECONFIG)."
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=2.0,
        help="Seconds between status flushes (default 2).",
    )
    parser.add_argument(
        "--resync-interval",
        type=float,
        default=300.0,
        help="Seconds between full re-lists that catch missed events (default 300).",
    )
    parser.add_argument(
        "--credentials-refresh",
        type=positive_float,
        default=30.0,
        help="Seconds between re-reads of the Secrets Backends name in credentialsSecretRef "
        "(default 30): a created, fixed or rotated key takes effect within this interval.",
    )
    parser.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="Namespace of the leader-election Lease (default $POD_NAMESPACE or 'default').",
    )
    parser.add_argument("--lease-name", default="nexus-operator", help="Name of the Lease.")
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=1,
        help="Serving worker processes sharing the gRPC port; this process keeps the watches, "
        "probes and status writes (default 1). 0 serves from this process's own event loop.",
    )
    parser.add_argument(
        "--control-nice",
        type=non_negative_int,
        default=CONTROL_NICE,
        help="With --workers N > 0: once the workers run, this process (watches, probes, status "
        "writes) lowers its CPU priority by this nice increment, so when the pod's CPU is short "
        f"the scheduler runs decisions first (default {CONTROL_NICE}; 0 leaves it).",
    )
    add_ledger_arguments(parser)
    add_log_level_argument(parser)


def add_ledger_arguments(parser: argparse.ArgumentParser) -> None:
    """Budget ledger and status-writer flags (docs/operations.md#budgets)."""
    parser.add_argument(
        "--replica-id",
        default=os.environ.get("POD_NAME") or None,
        help="Stable identity of this replica's status entries (default $POD_NAME, else the one "
        "pinned in --spool-dir, else a fresh one).",
    )
    parser.add_argument(
        "--spool-dir",
        default=None,
        help="Directory of the usage spool (acknowledged, not yet persisted spend; fsync'd every "
        "0.1 s, replayed on restart). Default: none (a crash loses up to one flush interval, or "
        "everything since an API-server outage began).",
    )
    parser.add_argument(
        "--status-qps",
        type=_positive,
        default=50.0,
        help="Client-side rate limit of status writes per second (default 50).",
    )
    parser.add_argument(
        "--status-burst", type=int, default=100, help="Burst of status writes (default 100)."
    )
    parser.add_argument(
        "--near-limit-flush-interval",
        type=_positive,
        default=0.2,
        help="Seconds between flushes of a policy near its soft/hard limit (default 0.2).",
    )
    parser.add_argument(
        "--api-timeout",
        type=_positive,
        default=10.0,
        help="Seconds before a call to the API server counts as failed (default 10).",
    )
    parser.add_argument(
        "--shutdown-flush-timeout",
        type=_positive,
        default=15.0,
        help="Seconds the final status flush on SIGTERM may take for spend and urgent changes "
        "(default 15; counters only in the time left, 2 s at most; keep it at most "
        "terminationGracePeriodSeconds minus 15).",
    )


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def controller_config(args: argparse.Namespace) -> ControllerConfig:
    return ControllerConfig(
        namespaces=tuple(args.namespace),
        kubeconfig=args.kubeconfig,
        role=args.role,
        flush_interval_s=args.flush_interval,
        resync_interval_s=args.resync_interval,
        credentials_refresh_s=args.credentials_refresh,
        lease_namespace=args.lease_namespace,
        lease_name=args.lease_name,
        replica_id=args.replica_id,
        spool_dir=args.spool_dir,
        status_qps=args.status_qps,
        status_burst=args.status_burst,
        near_limit_interval_s=args.near_limit_flush_interval,
        shutdown_flush_s=args.shutdown_flush_timeout,
        api_timeout_s=args.api_timeout,
    )


def serving_hooks(args: argparse.Namespace) -> Hooks:
    """Start gRPC and metrics after the controller is up; drain gRPC before it stops."""

    async def started(controller: Controller, memo: kopf.Memo) -> None:
        """A failure after gRPC is up stops it again: the controller behind it is being stopped,
        and kopf's retry must be able to bind the same address. Once serving, the status
        writer's metrics join /metrics, whichever process serves (stopping removes them)."""
        if getattr(args, "workers", 0) > 0:
            await _start_plane(controller, memo, args=args)
            _add_status_metrics(controller, memo)
            return
        server, port, metrics_port = await start_serving(controller.engine, args)
        memo["grpc"] = server
        engine = controller.engine
        try:
            gateway, gateway_port = await start_gateway(
                engine, args, credentials=engine.registry.credentials
            )
        except BaseException:
            memo.pop("grpc", None)
            await server.stop(0)
            raise
        if gateway is not None:
            memo["gateway"] = gateway
        _add_status_metrics(controller, memo)
        logger.info(
            "Serving gRPC on port %d, metrics on port %s, ext_proc on port %s",
            port,
            metrics_port,
            gateway_port,
        )

    async def stopping(_controller: Controller, memo: kopf.Memo) -> None:
        collector = memo.pop("status_metrics", None)
        if collector is not None:
            REGISTRY.unregister(collector)
        plane: ServingPlane | None = memo.pop("plane", None)
        if plane is not None:
            await plane.stop(DRAIN_GRACE_S)
        gateway: GatewayServer | None = memo.pop("gateway", None)
        if gateway is not None:
            await gateway.stop(DRAIN_GRACE_S)
        server: GrpcServer | None = memo.pop("grpc", None)
        if server is not None:
            await server.stop(DRAIN_GRACE_S)

    return Hooks(started=started, stopping=stopping)


def _add_status_metrics(controller: Controller, memo: kopf.Memo) -> None:
    collector = StatusWriterCollector(controller.writer, controller.ledger)
    REGISTRY.register(collector)
    memo["status_metrics"] = collector


async def _start_plane(
    controller: Controller, memo: kopf.Memo, *, args: argparse.Namespace
) -> None:
    """Serving workers on the gRPC port; /metrics (decisions summed over workers) here."""
    metrics = RoutingMetrics(controller.registry)
    plane = ServingPlane(
        controller.engine,
        workers=args.workers,
        factory=RouterServers.from_args(args),
        metrics=metrics,
        log_level=args.log_level,
        event_loop=args.event_loop,
        on_failure=_stop_operator,
        control_nice=getattr(args, "control_nice", 0),
    )
    memo["plane"] = plane
    controller.prober.on_probe = plane.on_probe
    controller.ledger.on_spend = plane.on_spend
    try:
        ports = await plane.start()
    except WorkerStartError as exc:
        raise StartupError(f"--grpc-address {args.grpc_address}: {exc}") from exc
    metrics_port = start_metrics(args, metrics, plane.families)
    logger.info(
        "Serving gRPC on port %d from %d workers, metrics on port %s, ext_proc on port %s",
        ports[0],
        args.workers,
        metrics_port,
        ports[1] if len(ports) > 1 else None,
    )


def _stop_operator(reason: str) -> None:
    """A serving worker died: stop the whole replica (Kubernetes restarts it) rather than serve
    with fewer workers and slots nobody can release."""
    logger.error("Stopping: %s", reason)
    os.kill(os.getpid(), signal.SIGTERM)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        tls_config(args)  # reject unusable TLS flags before connecting anywhere
        if gateway_enabled(args):
            gateway_settings(args)
    except StartupError as exc:
        print(f"nexus-operator run: {exc}", file=sys.stderr)
        return 2
    namespaces = tuple(args.namespace)
    kopf.run(
        registry=build_registry(controller_config(args), serving_hooks(args)),
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://{args.health_address}:{args.health_port}/healthz",
    )
    return 0
