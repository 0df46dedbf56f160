"""Helpers the benchmarks share: CPU of a process tree, the API server's status-PATCH count,
launching the operator, waiting for gRPC health, and merging figures into a results file."""

from __future__ import annotations

import json
import math
import ssl
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psutil  # type: ignore[import-untyped]
from kubernetes import client

from nexus_operator.api import GROUP, VERSION
from nexus_testkit.gateway import free_port
from nexus_testkit.health import until_serving
from nexus_testkit.localcluster import Cluster, LocalControlPlane, find_bin_dir


def processes(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (the serving workers)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants (one that just exited is skipped)."""
    total = 0.0
    for proc in processes(pid):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def status_patches(plane: LocalControlPlane) -> float:
    """PATCH requests on our kinds' /status subresource, from the API server's own counters."""
    request = urllib.request.Request(f"{plane.server}/metrics")
    request.add_header("Authorization", f"Bearer {plane.admin_token}")
    context = ssl.create_default_context(cafile=str(plane.pki.ca_cert))
    with urllib.request.urlopen(request, context=context) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and 'verb="PATCH"' in line:
            ours = 'resource="backends"' in line or 'resource="routingpolicies"' in line
            if ours and 'subresource="status"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


def launch(kubeconfig: Path, grpc_port: int, *, namespace: str) -> subprocess.Popen[bytes]:
    """`nexus-operator run` watching `namespace`: gRPC on `grpc_port`, no metrics, no ext_proc."""
    argv = [sys.executable, "-m", "nexus_operator.cli.operator_main", "run"]
    argv += ["--kubeconfig", str(kubeconfig), "--grpc-address", f"127.0.0.1:{grpc_port}"]
    argv += ["--metrics-port", "-1", "--extproc-address", "off"]
    argv += ["--health-port", str(free_port()), "--namespace", namespace]
    argv += ["--lease-namespace", namespace, "--log-level", "WARNING"]
    return subprocess.Popen(argv)


def wait_serving(channel: grpc.Channel, *, limit_s: float = math.inf) -> None:
    """Until grpc.health.v1 reports "" SERVING; TimeoutError after `limit_s` seconds."""
    if not until_serving(channel, limit_s=limit_s, period_s=0.02):
        raise TimeoutError("the operator never became SERVING")


def merge_results(path: Path, figures: dict[str, Any]) -> None:
    """Write `figures` into the JSON results file, keeping the other benchmarks' keys in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(figures)
    path.write_text(json.dumps(merged, indent=2) + "\n")


PROTO_ROOT = Path(__file__).resolve().parents[1] / "proto"


def ghz_route_command(*, ghz_bin: Path | None = None) -> list[str]:
    """ghz calling Router.Route over plaintext, pinned to one core: the load generator gets one
    of the two cores; left alone it takes both and starves the server it measures (a no-op
    grpc.aio server: 3,400/s without the cap, 4,200/s with). Append data, load and address."""
    return [
        str(ghz_bin or find_bin_dir() / "ghz"),
        "--cpus",
        "1",
        "--insecure",
        "--proto",
        str(PROTO_ROOT / "nexus/routing/v1/router.proto"),
        "--import-paths",
        str(PROTO_ROOT),
        "--call",
        "nexus.routing.v1.Router.Route",
    ]


def populate_namespace(
    cluster: Cluster, namespace: str, *, backends: list[dict[str, Any]], monthly_limit_usd: float
) -> client.CustomObjectsApi:
    """Create `namespace`, the Backend `backends` (16 at a time) and one policy "all" over every
    model with a monthly budget; the client to the objects."""
    api = cluster.api_client()
    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
    )
    objects = client.CustomObjectsApi(api)

    def create(plural: str, body: dict[str, Any]) -> None:
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda body: create("backends", body), backends))
    policy = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RoutingPolicy",
        "metadata": {"name": "all"},
        "spec": {"modelPatterns": ["*"], "budget": {"monthlyLimitUsd": monthly_limit_usd}},
    }
    create("routingpolicies", policy)
    return objects
