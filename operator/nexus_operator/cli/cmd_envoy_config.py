"""`nexus-operator envoy-config`: a complete Envoy bootstrap for the gateway, as YAML.

The Backends come from `--from-dir` (the same manifests `serve --from-dir` reads) or from
the cluster (`--kubeconfig`, in-cluster by default); only the gateway namespace's Backends
matter (`--namespace`, default `default`). What it renders:

- one listener (`--listener-address`, `--listener-port`) with an HTTP connection manager
  whose filters are, in order: a header mutation that strips the routing headers a client
  might send (`x-gateway-destination-endpoint`, `x-nexus-upstream`), so only the picker
  chooses an upstream; the ext_proc filter talking to the picker (`--picker-address`) in the
  chosen body mode (`--body-mode buffered|full-duplex-streamed`), failing closed; the router;
- the `nexus-endpoints` ORIGINAL_DST cluster that sends a request to the `ip:port` the
  picker wrote into `x-gateway-destination-endpoint` (local backends);
- one DNS cluster with TLS and SNI per cloud (`https`) Backend, chosen by the route whose
  header match is `x-nexus-upstream: <namespace>.<name>` (the picker sets it, with
  clear_route_cache, and injects the credential);
- the `nexus-picker` cluster (HTTP/2 for gRPC; at most 8 streams per connection and a new
  connection every 1,000 streams, so a picker's serving workers all get streams) and an admin
  interface on 127.0.0.1 only.

`--no-picker ip:port` renders the same listener and routing without the ext_proc filter,
every request going to that one endpoint: the baseline the gateway benchmark compares with.
The document is built from plain dicts and dumped with PyYAML, so no Envoy API package is
needed to render it.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..api import GROUP, VERSION, Backend
from .manifest_dir import ManifestError, load_directory

DESTINATION_HEADER = "x-gateway-destination-endpoint"
UPSTREAM_HEADER = "x-nexus-upstream"
SUBSET_HINT_NAMESPACE = "envoy.lb.subset_hint"
ENDPOINTS_CLUSTER = "nexus-endpoints"
PICKER_CLUSTER = "nexus-picker"
# The picker's client response headers, as dynamic metadata `nexus.gateway` / <header name>
# (serving.gateway.wire.CLIENT_HEADERS_NAMESPACE; repeated so rendering needs no Envoy API).
CLIENT_HEADERS_NAMESPACE = "nexus.gateway"
CLIENT_HEADERS = (
    "x-nexus-backend",
    "x-nexus-model",
    "x-nexus-policy",
    "x-nexus-route-reason",
    "x-nexus-budget",
    "x-nexus-fallback",
)
STATUS_ATTRIBUTE = "response.code"
BODY_MODES = {"buffered": "BUFFERED", "full-duplex-streamed": "FULL_DUPLEX_STREAMED"}
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024  # the picker's --gateway-max-body-bytes default
# Envoy buffers a BUFFERED body up to the connection's buffer limit and answers 413 itself
# beyond it; the headroom lets a body just over the picker's limit reach the picker, which
# refuses it in OpenAI's error format.
BUFFER_HEADROOM_BYTES = 64 * 1024
# Envoy multiplexes ext_proc streams on one HTTP/2 connection per worker thread; a picker with
# serving workers (run/serve --workers N) shares its port with SO_REUSEPORT, which spreads
# connections, not streams. A cap on streams per connection makes Envoy open more connections
# under load, and recycling connections re-spreads them when load is low (docs/gateway.md).
PICKER_STREAMS_PER_CONNECTION = 8
PICKER_STREAMS_BEFORE_RECONNECT = 1000

_TYPE = "@type"
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_EXT_PROC = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
_HEADER_MUTATION = (
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
)
_SET_METADATA = "type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_STDOUT_LOG = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"


@dataclass(frozen=True)
class CloudUpstream:
    """A cloud (https) Backend as Envoy reaches it: DNS name, port, SNI, path prefix."""

    namespace: str
    name: str
    host: str
    port: int
    path_prefix: str

    @property
    def route_key(self) -> str:
        """The `x-nexus-upstream` value the picker sets for this Backend."""
        return f"{self.namespace}.{self.name}"

    @property
    def cluster_name(self) -> str:
        return f"cloud.{self.namespace}.{self.name}"

    @property
    def authority(self) -> str:
        return self.host if self.port == 443 else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class EnvoyOptions:
    """Everything the bootstrap depends on besides the Backends."""

    listener_address: str = "0.0.0.0"
    listener_port: int = 8080
    admin_port: int = 9901
    picker_address: str = "127.0.0.1:9002"
    body_mode: str = "buffered"
    message_timeout_ms: int = 10_000
    upstream_ca: str = SYSTEM_CA_BUNDLE
    direct_endpoint: str | None = None  # --no-picker: every request to this ip:port
    subset_hint: tuple[str, ...] = ()
    access_log: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # --skip-response-headers: one ext_proc round trip fewer per request (see _ext_proc).
    skip_response_headers: bool = False
    cloud: tuple[CloudUpstream, ...] = field(default=())


def cloud_upstreams(backends: Iterable[Backend], *, namespace: str) -> list[CloudUpstream]:
    """The https Backends of `namespace`, sorted by name: each gets a cluster and a route."""
    found = []
    for backend in backends:
        if backend.metadata.namespace != namespace:
            continue
        parts = urlsplit(backend.spec.url)
        if parts.scheme != "https" or not parts.hostname:
            continue
        found.append(
            CloudUpstream(
                namespace=namespace,
                name=backend.metadata.name,
                host=parts.hostname,
                port=parts.port or 443,
                path_prefix=parts.path.rstrip("/"),
            )
        )
    return sorted(found, key=lambda upstream: upstream.name)


def render_bootstrap(options: EnvoyOptions) -> dict[str, Any]:
    """The Envoy bootstrap as plain data (dump it with yaml.safe_dump)."""
    clusters = [_endpoints_cluster()]
    if options.direct_endpoint is None:
        clusters.append(_picker_cluster(options.picker_address))
    clusters.extend(_cloud_cluster(upstream, ca=options.upstream_ca) for upstream in options.cloud)
    return {
        "node": {"id": "nexus-gateway", "cluster": "nexus-gateway"},
        "admin": {"address": _socket("127.0.0.1", options.admin_port)},
        "static_resources": {
            "listeners": [_listener(options)],
            "clusters": clusters,
        },
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        _TYPE: "type.googleapis.com/envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 50_000,
                    },
                }
            ]
        },
    }


def render_yaml(options: EnvoyOptions) -> str:
    header = (
        "# Envoy bootstrap for the nexus-operator gateway (nexus-operator envoy-config).\n"
        f"# Body mode {options.body_mode}; picker "
        f"{'none (direct to ' + options.direct_endpoint + ')' if options.direct_endpoint else options.picker_address}.\n"
    )
    return header + yaml.safe_dump(render_bootstrap(options), sort_keys=False, width=100)


def _socket(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def _listener(options: EnvoyOptions) -> dict[str, Any]:
    manager: dict[str, Any] = {
        _TYPE: _HCM,
        "stat_prefix": "nexus_gateway",
        "codec_type": "AUTO",
        # Completions stream for minutes: no overall request timeout, but a stream that
        # sends nothing for 5 minutes is ended, and headers must arrive within 30 s.
        "stream_idle_timeout": "300s",
        "request_timeout": "0s",
        "request_headers_timeout": "30s",
        "common_http_protocol_options": {"idle_timeout": "3600s"},
        "route_config": {
            "name": "nexus",
            "virtual_hosts": [_virtual_host(options)],
        },
        "http_filters": _http_filters(options),
    }
    if options.access_log:
        manager["access_log"] = [
            {"name": "envoy.access_loggers.stdout", "typed_config": {_TYPE: _STDOUT_LOG}}
        ]
    return {
        "name": "nexus-gateway",
        "address": _socket(options.listener_address, options.listener_port),
        "per_connection_buffer_limit_bytes": options.max_body_bytes + BUFFER_HEADROOM_BYTES,
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }


def _virtual_host(options: EnvoyOptions) -> dict[str, Any]:
    host: dict[str, Any] = {"name": "nexus", "domains": ["*"], "routes": _routes(options.cloud)}
    if options.direct_endpoint is None and options.skip_response_headers:
        # Each x-nexus-* header from the picker's dynamic metadata; one the picker left
        # unset formats empty and is not added (keep_empty_value defaults to false).
        host["response_headers_to_add"] = [
            {
                "header": {
                    "key": name,
                    "value": f"%DYNAMIC_METADATA({CLIENT_HEADERS_NAMESPACE}:{name})%",
                },
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
            for name in CLIENT_HEADERS
        ]
    return host


def _routes(cloud: Sequence[CloudUpstream]) -> list[dict[str, Any]]:
    routes = []
    for upstream in cloud:
        route: dict[str, Any] = {
            "cluster": upstream.cluster_name,
            "timeout": "0s",
            "host_rewrite_literal": upstream.authority,
        }
        if upstream.path_prefix:
            route["regex_rewrite"] = {
                "pattern": {"regex": "^/v1/"},
                "substitution": f"{upstream.path_prefix}/",
            }
        routes.append(
            {
                "name": upstream.cluster_name,
                "match": {
                    "prefix": "/",
                    "headers": [
                        {"name": UPSTREAM_HEADER, "string_match": {"exact": upstream.route_key}}
                    ],
                },
                "route": route,
            }
        )
    routes.append(
        {
            "name": "local",
            "match": {"prefix": "/"},
            "route": {"cluster": ENDPOINTS_CLUSTER, "timeout": "0s"},
        }
    )
    return routes


def _http_filters(options: EnvoyOptions) -> list[dict[str, Any]]:
    mutations: list[dict[str, Any]] = [
        {"remove": DESTINATION_HEADER},
        {"remove": UPSTREAM_HEADER},
    ]
    if options.direct_endpoint is not None:
        mutations.append(
            {
                "append": {
                    "header": {"key": DESTINATION_HEADER, "value": options.direct_endpoint},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            }
        )
    filters: list[dict[str, Any]] = [
        {
            "name": "envoy.filters.http.header_mutation",
            "typed_config": {
                _TYPE: _HEADER_MUTATION,
                "mutations": {"request_mutations": mutations},
            },
        }
    ]
    if options.subset_hint:
        filters.append(
            {
                "name": "envoy.filters.http.set_metadata",
                "typed_config": {
                    _TYPE: _SET_METADATA,
                    "metadata": [
                        {
                            "metadata_namespace": SUBSET_HINT_NAMESPACE,
                            "value": {DESTINATION_HEADER + "-subset": list(options.subset_hint)},
                        }
                    ],
                },
            }
        )
    if options.direct_endpoint is None:
        filters.append({"name": "envoy.filters.http.ext_proc", "typed_config": _ext_proc(options)})
    filters.append({"name": "envoy.filters.http.router", "typed_config": {_TYPE: _ROUTER}})
    return filters


def _ext_proc(options: EnvoyOptions) -> dict[str, Any]:
    streamed = options.body_mode == "full-duplex-streamed"
    config: dict[str, Any] = {
        _TYPE: _EXT_PROC,
        "grpc_service": {
            "envoy_grpc": {"cluster_name": PICKER_CLUSTER},
            "timeout": f"{options.message_timeout_ms / 1000:g}s",
        },
        "failure_mode_allow": False,
        "allow_mode_override": False,
        "message_timeout": f"{options.message_timeout_ms / 1000:g}s",
        "processing_mode": {
            "request_header_mode": "SEND",
            "request_body_mode": BODY_MODES[options.body_mode],
            "request_trailer_mode": "SEND" if streamed else "SKIP",
            # With --skip-response-headers the picker gets no response-headers message: the
            # x-nexus-* headers come from its dynamic metadata (_virtual_host), the status as
            # the response.code attribute with the first response-body message. A response
            # without a body then sends the picker nothing, so its status is unknown.
            "response_header_mode": "SKIP" if options.skip_response_headers else "SEND",
            # Responses are streamed in both modes, so SSE reaches the client as it is made
            # while the picker reads usage from the chunks.
            "response_body_mode": "FULL_DUPLEX_STREAMED" if streamed else "STREAMED",
            "response_trailer_mode": "SEND" if streamed else "SKIP",
        },
        "metadata_options": {
            "forwarding_namespaces": {"untyped": [SUBSET_HINT_NAMESPACE, "envoy.lb"]},
            "receiving_namespaces": {"untyped": ["envoy.lb", CLIENT_HEADERS_NAMESPACE]},
        },
    }
    if options.skip_response_headers:
        config["response_attributes"] = [STATUS_ATTRIBUTE]
    return config


def _endpoints_cluster() -> dict[str, Any]:
    return {
        "name": ENDPOINTS_CLUSTER,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "5s",
        "original_dst_lb_config": {
            "use_http_header": True,
            "http_header_name": DESTINATION_HEADER,
        },
        "circuit_breakers": {"thresholds": [_generous_thresholds()]},
    }


def _generous_thresholds() -> dict[str, Any]:
    """Envoy's default of 1,024 requests per cluster would cap a busy gateway, not a backend;
    the picker enforces each Backend's maxConcurrency."""
    return {
        "max_connections": 100_000,
        "max_pending_requests": 100_000,
        "max_requests": 100_000,
        "max_retries": 3,
    }


def _picker_cluster(address: str) -> dict[str, Any]:
    host, port = _split_host_port(address)
    return {
        "name": PICKER_CLUSTER,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "5s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                _TYPE: _HTTP_OPTIONS,
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "max_concurrent_streams": PICKER_STREAMS_PER_CONNECTION
                    }
                },
                "common_http_protocol_options": {
                    "max_requests_per_connection": PICKER_STREAMS_BEFORE_RECONNECT
                },
            }
        },
        "circuit_breakers": {"thresholds": [_generous_thresholds()]},
        "load_assignment": _one_endpoint(PICKER_CLUSTER, host, port=port),
    }


def _cloud_cluster(upstream: CloudUpstream, *, ca: str) -> dict[str, Any]:
    tls: dict[str, Any] = {
        _TYPE: _UPSTREAM_TLS,
        "common_tls_context": {
            "validation_context": {"trusted_ca": {"filename": ca}},
        },
    }
    if not _is_ip(upstream.host):
        tls["sni"] = upstream.host
        tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] = [
            {"san_type": "DNS", "matcher": {"exact": upstream.host}}
        ]
    return {
        "name": upstream.cluster_name,
        "type": "STATIC" if _is_ip(upstream.host) else "LOGICAL_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "10s",
        "load_assignment": _one_endpoint(upstream.cluster_name, upstream.host, port=upstream.port),
        "circuit_breakers": {"thresholds": [_generous_thresholds()]},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
    }


def _one_endpoint(cluster: str, host: str, *, port: int) -> dict[str, Any]:
    return {
        "cluster_name": cluster,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(host, port)}}]}],
    }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


# -- command line ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--from-dir", type=Path, help="Read Backends from this directory of YAML manifests."
    )
    source.add_argument(
        "--kubeconfig",
        help="Read Backends from this cluster (default: in-cluster, else $KUBECONFIG).",
    )
    parser.add_argument(
        "--namespace",
        default="default",
        help="The gateway namespace: whose Backends get cloud routes (default 'default').",
    )
    parser.add_argument("--listener-address", default="0.0.0.0", help="Default 0.0.0.0.")
    parser.add_argument("--listener-port", type=_port, default=8080, help="Default 8080.")
    parser.add_argument(
        "--admin-port", type=_port, default=9901, help="Admin port on 127.0.0.1 (default 9901)."
    )
    parser.add_argument(
        "--picker-address",
        default="127.0.0.1:9002",
        help="host:port of the picker's ext_proc service (default 127.0.0.1:9002).",
    )
    parser.add_argument(
        "--body-mode",
        choices=sorted(BODY_MODES),
        default="buffered",
        help="How Envoy sends the request body to the picker (default buffered).",
    )
    parser.add_argument(
        "--message-timeout-ms",
        type=int,
        default=10_000,
        help="How long Envoy waits for each picker answer (default 10000).",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="The picker's --gateway-max-body-bytes; Envoy buffers a little more so the picker "
        f"answers the 413 (default {DEFAULT_MAX_BODY_BYTES}).",
    )
    parser.add_argument(
        "--upstream-ca",
        default=SYSTEM_CA_BUNDLE,
        help=f"CA bundle cloud upstreams must chain to (default {SYSTEM_CA_BUNDLE}).",
    )
    parser.add_argument(
        "--subset-hint",
        action="append",
        default=[],
        metavar="IP:PORT",
        help="Pin the picker to these endpoints (sets envoy.lb.subset_hint; repeatable).",
    )
    parser.add_argument(
        "--no-picker",
        metavar="IP:PORT",
        help="Render the same routing without the picker, every request to IP:PORT (baseline).",
    )
    parser.add_argument(
        "--skip-response-headers",
        action="store_true",
        help="Do not send response headers to the picker (one round trip fewer per request); "
        "Envoy adds the x-nexus-* headers from the picker's metadata. A response without a "
        "body is then accounted as a failure, whatever its status (docs/gateway.md).",
    )
    parser.add_argument(
        "--no-access-log", action="store_true", help="Do not log each request to stdout."
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="Write the YAML here instead of standard output."
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {value}")
    return value


def main(args: argparse.Namespace) -> int:
    try:
        for flag, value in (
            ("--picker-address", args.picker_address),
            ("--no-picker", args.no_picker),
            *(("--subset-hint", hint) for hint in args.subset_hint),
        ):
            if value is not None:
                _check_host_port(flag, value)
        backends = _load_backends(args)
    except (ValueError, ManifestError, ClusterReadError) as exc:
        print(f"nexus-operator envoy-config: {exc}", file=sys.stderr)
        return 2
    options = EnvoyOptions(
        listener_address=args.listener_address,
        listener_port=args.listener_port,
        admin_port=args.admin_port,
        picker_address=args.picker_address,
        body_mode=args.body_mode,
        message_timeout_ms=args.message_timeout_ms,
        upstream_ca=args.upstream_ca,
        direct_endpoint=args.no_picker,
        subset_hint=tuple(args.subset_hint),
        access_log=not args.no_access_log,
        max_body_bytes=args.max_body_bytes,
        skip_response_headers=args.skip_response_headers,
        cloud=tuple(cloud_upstreams(backends, namespace=args.namespace)),
    )
    text = render_yaml(options)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0


def _check_host_port(flag: str, value: str) -> None:
    try:
        _split_host_port(value)
    except ValueError as exc:
        raise ValueError(f"{flag} {exc}") from None


class ClusterReadError(Exception):
    """The Backends could not be listed from the cluster."""


def _load_backends(args: argparse.Namespace) -> list[Backend]:
    if args.from_dir is not None:
        if not args.from_dir.is_dir():
            raise ValueError(f"--from-dir {args.from_dir}: not a directory")
        return load_directory(args.from_dir, namespaces=[args.namespace]).backends
    return _cluster_backends(args.kubeconfig, namespace=args.namespace)


def _cluster_backends(kubeconfig: str | None, *, namespace: str) -> list[Backend]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    from kubernetes.config import ConfigException
    from urllib3.exceptions import HTTPError

    from ..operator.kube import load_configuration

    try:
        configuration = load_configuration(kubeconfig)
        configuration.retries = 0  # one line and exit 2 now, not urllib3's retries
        with client.ApiClient(configuration) as api:
            listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
                GROUP, VERSION, namespace, "backends"
            )
    except (ApiException, ConfigException, HTTPError, OSError) as exc:
        raise ClusterReadError(f"listing Backends in {namespace!r}: {exc}") from exc
    return [Backend.model_validate(item) for item in listed.get("items", [])]
