"""The operator against a real kube-apiserver: convergence, startup and RSS at 1,000 Backends, status rate.

A fresh local control plane, 1,000 Backends probed at one loopback stand-in, and the real
`nexus-operator run` as a subprocess. Figures:
- startup_1000_backends_s: process start → gRPC health SERVING (registry rebuilt from the list);
- convergence_p50_s / p99_s: create a Backend with a new model → a gRPC Route for it is ROUTED,
  over 50 changes;
- rss_1000_backends_mb: the operator process's RSS after the load phase;
- status_patches_per_s: PATCHes on */status counted by the API server's own metrics while one
  client sends Route calls as fast as it can for LOAD_SECONDS.
Prints the figures and writes benchmarks/results/operator.json.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import psutil  # type: ignore[import-untyped]
from kubernetes import client

from benchkit import launch, merge_results, populate_namespace, status_patches, wait_serving
from nexus_operator.api import GROUP, VERSION
from nexus_operator.serving.proto import router_pb2, router_pb2_grpc
from nexus_testkit.gateway import free_port
from nexus_testkit.localcluster import Cluster, LocalControlPlane, find_bin_dir
from nexus_testkit.localcluster.standins import StandIns

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "operator.json"
NAMESPACE = "bench"
BACKENDS = 1000
CHANGES = 50
LOAD_SECONDS = float(os.environ.get("NEXUS_BENCH_LOAD_SECONDS", "10"))
SETTLE_SECONDS = 12.0  # one probe interval for every Backend before RSS is read


def backend(name: str, url: str, model: str, *, probed: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "ollama", "url": url, "models": [{"id": model}]}
    spec["healthCheck"] = {"enabled": probed}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Backend",
        "metadata": {"name": name},
        "spec": spec,
    }


def create(objects: client.CustomObjectsApi, plural: str, body: dict[str, Any]) -> None:
    objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, body)


def populate(cluster: Cluster, url: str) -> client.CustomObjectsApi:
    bodies = [backend(f"b{i:04d}", url, "llama3:8b", probed=True) for i in range(BACKENDS)]
    return populate_namespace(cluster, NAMESPACE, backends=bodies, monthly_limit_usd=1000)


def routed(stub: router_pb2_grpc.RouterStub, model: str) -> bool:
    request = router_pb2.RouteRequest(model=model, namespace=NAMESPACE, estimated_tokens=10)
    return bool(stub.Route(request, timeout=5).outcome == router_pb2.OUTCOME_ROUTED)


def convergence(objects: client.CustomObjectsApi, stub: router_pb2_grpc.RouterStub) -> list[float]:
    samples = []
    for i in range(CHANGES):
        model = f"conv-{i}"
        started = time.perf_counter()
        create(
            objects, "backends", backend(f"conv-{i:02d}", "http://127.0.0.1:9", model, probed=False)
        )
        while not routed(stub, model):
            time.sleep(0.005)
        samples.append(time.perf_counter() - started)
    return samples


def load(stub: router_pb2_grpc.RouterStub) -> int:
    deadline = time.monotonic() + LOAD_SECONDS
    count = 0
    while time.monotonic() < deadline:
        routed(stub, "llama3:8b")
        count += 1
    return count


def percentile(samples: list[float], q: int) -> float:
    return (
        statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if q < 100 else max(samples)
    )


def measure(plane: LocalControlPlane) -> dict[str, float]:
    cluster = Cluster.local(plane)
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    objects = populate(cluster, StandIns().start("ollama", ("llama3:8b",)).url)
    grpc_port = free_port()
    started = time.perf_counter()
    process = launch(plane.kubeconfig, grpc_port, namespace=NAMESPACE)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            wait_serving(channel)
            startup = time.perf_counter() - started
            stub = router_pb2_grpc.RouterStub(channel)
            samples = convergence(objects, stub)
            time.sleep(SETTLE_SECONDS)
            before, begin = status_patches(plane), time.monotonic()
            decisions = load(stub)
            time.sleep(2.5)  # the flush that follows the load window belongs to it
            patches = status_patches(plane) - before
            elapsed = time.monotonic() - begin
            rss = psutil.Process(process.pid).memory_info().rss / 2**20
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    print(f"{decisions} Route calls during the load window", flush=True)
    return {
        "convergence_p50_s": round(statistics.median(samples), 4),
        "convergence_p99_s": round(percentile(samples, 99), 4),
        "startup_1000_backends_s": round(startup, 3),
        "rss_1000_backends_mb": round(rss, 1),
        "status_patches_per_s": round(patches / elapsed, 2),
    }


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as workdir:
        plane = LocalControlPlane(find_bin_dir(), Path(workdir))
        plane.start()
        try:
            figures = measure(plane)
        finally:
            plane.stop()
    merge_results(RESULTS, figures)  # bench_fleet.py's figures live in the same file
    for key, value in figures.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
