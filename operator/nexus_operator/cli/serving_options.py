"""Flags shared by `nexus-operator run` and `serve`: where to serve gRPC and metrics, and TLS."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..server import TlsConfig


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


def tls_config(args: argparse.Namespace) -> TlsConfig | None:
    """The TLS settings from the flags; raises SystemExit with a message when incomplete."""
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            raise SystemExit("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise SystemExit("--tls-cert and --tls-key go together")
    return TlsConfig(
        cert_file=args.tls_cert, key_file=args.tls_key, client_ca_file=args.tls_client_ca
    )
