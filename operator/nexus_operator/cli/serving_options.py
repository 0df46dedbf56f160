"""Flags shared by `nexus-operator run` and `serve`: where to serve gRPC and metrics, and TLS."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.registry import Collector

from ..routing import CredentialStore, RoutingEngine
from ..serving import GrpcServer, RoutingMetrics, ServerLimits, TlsConfig, start_metrics_server
from ..serving.event_loop import EVENT_LOOPS
from ..serving.gateway import DEFAULT_MAX_BODY_BYTES, GatewayServer, GatewaySettings
from ..serving.plane import PlaneServer
from ..serving.requests import NAMESPACE_MAX

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class StartupError(Exception):
    """A flag that cannot work as given; the subcommand prints it as one line and exits 2."""


def add_serving_arguments(parser: argparse.ArgumentParser, *, default_grpc_address: str) -> None:
    """--grpc-address, --metrics-port, --tls-cert/--tls-key/--tls-client-ca, --namespace."""
    parser.add_argument(
        "--grpc-address",
        default=default_grpc_address,
        help=f"host:port of the gRPC routing endpoint; port 0 picks a free one (default {default_grpc_address}).",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=9090,
        help="Port of the Prometheus /metrics endpoint; 0 picks a free one, -1 disables it (default 9090).",
    )
    parser.add_argument(
        "--metrics-address",
        default="0.0.0.0",
        help="Address /metrics listens on, e.g. 127.0.0.1 for loopback only (default 0.0.0.0).",
    )
    parser.add_argument(
        "--tls-cert", type=Path, help="PEM certificate of the gRPC endpoint (turns TLS on)."
    )
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert.")
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        help="PEM CA that client certificates must chain to (turns mutual TLS on).",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="Only route over objects in this namespace (repeatable; default all).",
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="auto",
        help="Event loop of the serving processes (`serve`, and `run`'s serving workers): "
        "uvloop costs grpc.aio less CPU per call; auto (default) uses it when installed.",
    )
    add_limit_arguments(parser)


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """What one client may hold: admitted calls, streams per connection, read deadline, keepalive."""
    defaults = ServerLimits()
    group = parser.add_argument_group("serving limits")
    group.add_argument(
        "--max-concurrent-rpcs",
        type=positive_int,
        default=defaults.max_concurrent_rpcs,
        help="Calls in progress per serving process, counted once their request has been read "
        f"(default {defaults.max_concurrent_rpcs}).",
    )
    group.add_argument(
        "--max-streams-per-connection",
        type=positive_int,
        default=defaults.max_streams_per_connection,
        help="HTTP/2 streams one connection may hold open "
        f"(default {defaults.max_streams_per_connection}).",
    )
    group.add_argument(
        "--request-read-timeout",
        type=positive_float,
        default=defaults.request_read_timeout_s,
        help="Seconds a call may take to deliver its request message "
        f"(default {defaults.request_read_timeout_s:g}).",
    )
    group.add_argument(
        "--keepalive-time",
        type=positive_float,
        default=defaults.keepalive_time_s,
        help=f"Seconds between server pings on an idle connection (default {defaults.keepalive_time_s:g}).",
    )
    group.add_argument(
        "--min-client-ping-interval",
        type=positive_float,
        default=defaults.min_client_ping_interval_s,
        help="Clients pinging more often than this (seconds) are disconnected "
        f"(default {defaults.min_client_ping_interval_s:g}).",
    )
    group.add_argument(
        "--max-connection-idle",
        type=positive_float,
        default=defaults.max_connection_idle_s,
        help="Seconds before a connection without calls is closed "
        f"(default {defaults.max_connection_idle_s:g}).",
    )
    group.add_argument(
        "--max-connection-age",
        type=positive_float,
        default=defaults.max_connection_age_s,
        help="Seconds before a connection is asked to reconnect (default "
        f"{defaults.max_connection_age_s:g}; spreads clients over workers and replicas).",
    )


def server_limits(args: argparse.Namespace) -> ServerLimits:
    return ServerLimits(
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        max_streams_per_connection=args.max_streams_per_connection,
        request_read_timeout_s=args.request_read_timeout,
        keepalive_time_s=args.keepalive_time,
        min_client_ping_interval_s=args.min_client_ping_interval,
        max_connection_idle_s=args.max_connection_idle,
        max_connection_age_s=args.max_connection_age,
    )


def add_gateway_arguments(parser: argparse.ArgumentParser, *, default_extproc_address: str) -> None:
    """--extproc-address, --gateway-namespace, --gateway-max-body-bytes (docs/gateway.md)."""
    parser.add_argument(
        "--extproc-address",
        default=default_extproc_address,
        help="host:port of the Envoy ext_proc endpoint picker; port 0 picks a free one, "
        f"'off' or -1 disables it (default {default_extproc_address}).",
    )
    parser.add_argument(
        "--gateway-namespace",
        default="default",
        help="Namespace whose Backends and RoutingPolicies serve gateway requests (default "
        "'default'; never taken from a client header).",
    )
    parser.add_argument(
        "--gateway-max-body-bytes",
        type=positive_int,
        default=DEFAULT_MAX_BODY_BYTES,
        help=f"Largest request body the gateway accepts; larger ones get 413 (default {DEFAULT_MAX_BODY_BYTES}).",
    )


def gateway_enabled(args: argparse.Namespace) -> bool:
    address = getattr(args, "extproc_address", None)
    return address is not None and address.strip().lower() not in ("off", "-1", "")


def gateway_settings(args: argparse.Namespace) -> GatewaySettings:
    namespace = args.gateway_namespace
    if len(namespace) > NAMESPACE_MAX or not _DNS_LABEL.fullmatch(namespace):
        raise StartupError(f"--gateway-namespace {namespace!r}: not a namespace name")
    return GatewaySettings(namespace=namespace, max_body_bytes=args.gateway_max_body_bytes)


async def start_gateway(
    engine: RoutingEngine, args: argparse.Namespace, *, credentials: CredentialStore
) -> tuple[GatewayServer | None, int | None]:
    """The ext_proc server per --extproc-address (None when off); a busy port is an OSError."""
    if not gateway_enabled(args):
        return None, None
    server = GatewayServer(
        engine,
        settings=gateway_settings(args),
        credentials=credentials,
        address=args.extproc_address,
        tls=tls_config(args),
    )
    return server, await server.start()


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        help="Python log level (default INFO).",
    )


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a cap of 0 would refuse every RPC)."""
    return _int_at_least(text, 1, wanted="a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0, wanted="an integer >= 0")


def _int_at_least(text: str, minimum: int, *, wanted: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {wanted}, not {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {wanted}, not {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def tls_config(args: argparse.Namespace) -> TlsConfig | None:
    """The TLS settings from the flags; StartupError when incomplete or a file is unreadable,
    caught here rather than as a traceback from deep inside the gRPC bind."""
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            raise StartupError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise StartupError("--tls-cert and --tls-key go together")
    for flag, path in (
        ("--tls-cert", args.tls_cert),
        ("--tls-key", args.tls_key),
        ("--tls-client-ca", args.tls_client_ca),
    ):
        if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
            raise StartupError(f"{flag} {path}: not a readable file")
    return TlsConfig(
        cert_file=args.tls_cert, key_file=args.tls_key, client_ca_file=args.tls_client_ca
    )


def start_metrics(args: argparse.Namespace, *collectors: Collector) -> int | None:
    """Start /metrics per --metrics-port (-1: off); a busy port is a StartupError naming it.
    `collectors` are registered first (the serving plane's; a GrpcServer registers its own)."""
    if args.metrics_port < 0:
        return None
    for collector in collectors:
        REGISTRY.register(collector)
    try:
        return start_metrics_server(
            args.metrics_port, addr=getattr(args, "metrics_address", "0.0.0.0")
        )
    except OSError as exc:
        raise StartupError(f"--metrics-port {args.metrics_port}: {exc.strerror or exc}") from exc


async def start_serving(
    engine: RoutingEngine, args: argparse.Namespace
) -> tuple[GrpcServer, int, int | None]:
    """The gRPC server, then /metrics: (server, gRPC port, metrics port or None).

    If /metrics cannot start, the gRPC server is stopped again, so nothing keeps serving
    half-started and a retry (kopf's, for `run`) can bind the same address."""
    server = GrpcServer(
        engine, address=args.grpc_address, tls=tls_config(args), limits=server_limits(args)
    )
    port = await server.start()
    try:
        metrics_port = start_metrics(args)
    except BaseException:
        await server.stop(0)
        raise
    return server, port, metrics_port


@dataclass(frozen=True)
class RouterServers:
    """What each serving worker hosts over its engine: the Router gRPC service (with health and
    reflection) and, when enabled, the gateway's ext_proc picker on its own port. Pickled into
    every worker, so it holds only plain settings. `ports` (from the first worker) replace the
    configured ports, so the other workers bind the same ones."""

    grpc_address: str
    tls: TlsConfig | None
    limits: ServerLimits
    reuse_port: bool
    gateway: GatewaySettings | None = None
    extproc_address: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RouterServers:
        """The servers `run --workers` and `serve --workers` configure with their flags."""
        gateway = gateway_settings(args) if gateway_enabled(args) else None
        return cls(
            grpc_address=args.grpc_address,
            tls=tls_config(args),
            limits=server_limits(args),
            reuse_port=args.workers > 1,
            gateway=gateway,
            extproc_address=args.extproc_address if gateway is not None else None,
        )

    def __call__(
        self, engine: RoutingEngine, metrics: RoutingMetrics, *, ports: Sequence[int] | None
    ) -> list[PlaneServer]:
        grpc_address = _with_port(self.grpc_address, ports, index=0)
        servers: list[PlaneServer] = [
            GrpcServer(
                engine,
                address=grpc_address,
                tls=self.tls,
                limits=self.limits,
                reuse_port=self.reuse_port,
                metrics=metrics,
                metrics_registry=None,
            )
        ]
        if self.gateway is not None and self.extproc_address is not None:
            servers.append(
                GatewayServer(
                    engine,
                    settings=self.gateway,
                    credentials=engine.registry.credentials,
                    address=_with_port(self.extproc_address, ports, index=1),
                    tls=self.tls,
                    reuse_port=self.reuse_port,
                    metrics_registry=CollectorRegistry(),
                )
            )
        return servers


def _with_port(address: str, ports: Sequence[int] | None, *, index: int) -> str:
    if ports is None:
        return address
    return f"{address.rsplit(':', 1)[0]}:{ports[index]}"
