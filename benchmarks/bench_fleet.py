"""The operator at fleet scale: 1,000 and 10,000 Backends against a real kube-apiserver.

For each fleet size N (argv, default 1000 10000): a fresh local control plane, N Backends
(model m<i mod N/10>, so ten per model, probed every PROBE_INTERVAL_S at one loopback stand-in),
one catch-all RoutingPolicy, and the real `nexus-operator run` as a subprocess. Figures, with
the suffix _1k / _10k (at 10,000, startup and RSS use the issue's names
startup_10000_backends_s and rss_10000_backends_mb):
- startup_s: process start → gRPC health SERVING (registry rebuilt from the list);
- status_settle_s: SERVING → the API server sees no status PATCH for 5 s (first status round);
- idle_cpu_pct: operator CPU (every process of it) over IDLE_SECONDS with no Route load and no
  change, after the first status round; 100 % = one core;
- route_p99_ms / route_p50_ms: ghz at ROUTE_RPS for LOAD_SECONDS, requests round-robin over
  every model (so over every Backend), while the changes below are applied;
- convergence_p99_s: create a Backend with a new model → a Route for it is ROUTED (apply →
  decision), CHANGES samples taken during the load;
- status_staleness_p99_s: set `draining: true` on CHANGES Backends → each one's status shows
  Ready=False Draining at the new generation (apply → status, read while the others are
  applied), during the load;
- rss_mb: RSS of the operator's processes after the load;
- sigterm_s: SIGTERM → every operator process gone.
Prints the figures and merges them into benchmarks/results/operator.json.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import psutil  # type: ignore[import-untyped]
from kubernetes import client

from benchkit import (
    cpu_seconds,
    ghz_route_command,
    launch,
    merge_results,
    populate_namespace,
    processes,
    status_patches,
    wait_serving,
)
from nexus_operator.api import GROUP, VERSION
from nexus_operator.serving.proto import router_pb2, router_pb2_grpc
from nexus_testkit.gateway import free_port
from nexus_testkit.localcluster import Cluster, LocalControlPlane, find_bin_dir
from nexus_testkit.localcluster.standins import StandIns

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "operator.json"
NAMESPACE = "fleet"
PROBE_INTERVAL_S = int(os.environ.get("NEXUS_BENCH_PROBE_INTERVAL", "300"))
ROUTE_RPS = int(os.environ.get("NEXUS_BENCH_ROUTE_RPS", "250"))
LOAD_SECONDS = int(os.environ.get("NEXUS_BENCH_LOAD_SECONDS", "40"))
IDLE_SECONDS = float(os.environ.get("NEXUS_BENCH_IDLE_SECONDS", "20"))
CHANGES = int(os.environ.get("NEXUS_BENCH_CHANGES", "20"))
SETTLE_LIMIT_S = float(os.environ.get("NEXUS_BENCH_SETTLE_LIMIT", "600"))
SIGTERM_LIMIT_S = 120.0


def suffix(count: int) -> str:
    return f"{count // 1000}k" if count % 1000 == 0 else str(count)


def named(count: int, issue_name: str, short_name: str) -> str:
    """The issue's names for 10,000 (startup_10000_backends_s); at other sizes a suffixed one,
    so bench_operator's startup_1000_backends_s (one model, other flags) is not overwritten."""
    return issue_name.format(count) if count == 10000 else short_name.format(suffix(count))


def models_of(count: int) -> int:
    return max(1, count // 10)


def backend(name: str, url: str, model: str, *, interval: int | None) -> dict[str, Any]:
    check: dict[str, Any] = {"enabled": interval is not None}
    if interval is not None:
        check["intervalSeconds"] = interval
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Backend",
        "metadata": {"name": name},
        "spec": {"type": "ollama", "url": url, "models": [{"id": model}], "healthCheck": check},
    }


def populate(cluster: Cluster, *, count: int, url: str) -> client.CustomObjectsApi:
    models = models_of(count)
    bodies = [
        backend(f"b{i:05d}", url, f"m{i % models}", interval=PROBE_INTERVAL_S) for i in range(count)
    ]
    return populate_namespace(cluster, NAMESPACE, backends=bodies, monthly_limit_usd=100000)


def create(objects: client.CustomObjectsApi, plural: str, body: dict[str, Any]) -> None:
    objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, body)


def rss_mb(pid: int) -> float:
    return float(sum(p.memory_info().rss for p in processes(pid))) / 2**20


def route(stub: router_pb2_grpc.RouterStub, model: str) -> bool:
    request = router_pb2.RouteRequest(model=model, namespace=NAMESPACE, estimated_tokens=10)
    return bool(stub.Route(request, timeout=5).outcome == router_pb2.OUTCOME_ROUTED)


def wait_all_models(stub: router_pb2_grpc.RouterStub, count: int) -> None:
    """Every model routes (its Backends were probed Healthy once)."""
    deadline = time.monotonic() + SETTLE_LIMIT_S
    for index in range(models_of(count)):
        while not route(stub, f"m{index}"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"model m{index} never routed")
            time.sleep(0.05)


def settle(plane: LocalControlPlane) -> float:
    """Seconds until the API server sees no status PATCH for 5 s (the first status round)."""
    started = time.monotonic()
    last, quiet_since = status_patches(plane), time.monotonic()
    while time.monotonic() - started < SETTLE_LIMIT_S:
        time.sleep(1.0)
        now = status_patches(plane)
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= 5.0:
            return quiet_since - started
    return SETTLE_LIMIT_S


def ghz(address: str, *, count: int, rps: int, seconds: int) -> dict[str, Any]:
    requests = [
        {"model": f"m{i}", "namespace": NAMESPACE, "estimatedTokens": 10}
        for i in range(models_of(count))
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as data:
        json.dump(requests, data)
    command = [
        *ghz_route_command(),
        "--data-file",
        data.name,
        "--total",
        str(rps * seconds),
        "--concurrency",
        "16",
        "--rps",
        str(rps),
        "--format",
        "json",
        address,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    finally:
        os.unlink(data.name)
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def percentile(samples: list[float], q: int) -> float:
    if len(samples) < 2:
        return samples[0] if samples else float("nan")
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def latency_ms(report: dict[str, Any], pct: int) -> float:
    for entry in report.get("latencyDistribution") or []:
        if entry["percentage"] == pct:
            return float(entry["latency"]) / 1e6
    return float("nan")


def convergence(objects: client.CustomObjectsApi, stub: router_pb2_grpc.RouterStub) -> list[float]:
    samples = []
    for i in range(CHANGES):
        model = f"conv-{i}"
        started = time.perf_counter()
        create(
            objects,
            "backends",
            backend(f"conv-{i:03d}", "http://127.0.0.1:9", model, interval=None),
        )
        while not route(stub, model):
            time.sleep(0.005)
        samples.append(time.perf_counter() - started)
        time.sleep(0.5)
    return samples


def staleness(objects: client.CustomObjectsApi, *, count: int) -> list[float]:
    """Apply `draining: true` to CHANGES Backends 0.25 s apart while a poller reads each applied
    one's status until it says so: apply → first read showing it (read every ≤ 0.5 s)."""
    names = [f"b{(i * count) // CHANGES:05d}" for i in range(CHANGES)]
    applied: dict[str, tuple[float, int]] = {}
    samples: dict[str, float] = {}

    def poll() -> None:
        deadline = time.perf_counter() + SETTLE_LIMIT_S
        while len(samples) < len(names) and time.perf_counter() < deadline:
            for name, (at, generation) in list(applied.items()):
                if name in samples:
                    continue
                body = objects.get_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, "backends", name
                )
                if draining_written(body.get("status") or {}, generation=generation):
                    samples[name] = time.perf_counter() - at
            time.sleep(0.05)

    poller = threading.Thread(target=poll, name="staleness-poller")
    poller.start()
    for name in names:
        body = objects.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "backends", name, {"spec": {"draining": True}}
        )
        applied[name] = (time.perf_counter(), int(body["metadata"]["generation"]))
        time.sleep(0.25)
    poller.join()
    return [samples.get(name, SETTLE_LIMIT_S) for name in names]


def draining_written(status: dict[str, Any], *, generation: int) -> bool:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(
                condition.get("reason") == "Draining"
                and condition.get("observedGeneration", 0) >= generation
            )
    return False


def sigterm(process: subprocess.Popen[bytes]) -> float:
    family = processes(process.pid)
    started = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=SIGTERM_LIMIT_S)
    elapsed = time.perf_counter() - started
    for proc in alive:
        proc.kill()
    process.wait(10)
    return elapsed


def measure(plane: LocalControlPlane, count: int) -> dict[str, float]:
    cluster = Cluster.local(plane)
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    standins = StandIns()
    url = standins.start("ollama", tuple(f"m{i}" for i in range(models_of(count)))).url
    began = time.perf_counter()
    objects = populate(cluster, count=count, url=url)
    print(f"[{count}] created in {time.perf_counter() - began:.1f}s", flush=True)
    grpc_port = free_port()
    address = f"127.0.0.1:{grpc_port}"
    started = time.perf_counter()
    process = launch(plane.kubeconfig, grpc_port, namespace=NAMESPACE)
    tag = suffix(count)
    figures: dict[str, float] = {}
    try:
        with grpc.insecure_channel(address) as channel:
            wait_serving(channel, limit_s=SETTLE_LIMIT_S)
            startup_key = named(count, "startup_{}_backends_s", "startup_s_{}")
            figures[startup_key] = round(time.perf_counter() - started, 3)
            print(f"[{count}] SERVING after {figures[startup_key]} s", flush=True)
            stub = router_pb2_grpc.RouterStub(channel)
            wait_all_models(stub, count)
            print(f"[{count}] every model routes", flush=True)
            figures[f"status_settle_s_{tag}"] = round(settle(plane), 1)
            print(f"[{count}] serving, all models routed, status settled", flush=True)
            cpu0, t0 = cpu_seconds(process.pid), time.monotonic()
            time.sleep(IDLE_SECONDS)
            idle = (cpu_seconds(process.pid) - cpu0) / (time.monotonic() - t0) * 100
            figures[f"idle_cpu_pct_{tag}"] = round(idle, 1)
            print(f"[{count}] idle CPU {idle:.1f} %", flush=True)
            results: dict[str, Any] = {}
            load = threading.Thread(
                target=lambda: results.update(
                    ghz(address, count=count, rps=ROUTE_RPS, seconds=LOAD_SECONDS)
                )
            )
            load.start()
            time.sleep(2.0)
            converged = convergence(objects, stub)
            stale = staleness(objects, count=count)
            load.join()
            figures[f"route_p50_ms_{tag}"] = round(latency_ms(results, 50), 2)
            figures[f"route_p99_ms_{tag}"] = round(latency_ms(results, 99), 2)
            print(f"[{count}] Route codes: {results.get('statusCodeDistribution')}", flush=True)
            figures[f"route_failed_calls_{tag}"] = float(
                sum(
                    n
                    for code, n in (results.get("statusCodeDistribution") or {}).items()
                    if code != "OK"
                )
            )
            figures[f"convergence_p99_s_{tag}"] = round(percentile(converged, 99), 4)
            figures[f"status_staleness_p99_s_{tag}"] = round(percentile(stale, 99), 2)
            figures[named(count, "rss_{}_backends_mb", "rss_mb_{}")] = round(rss_mb(process.pid), 1)
    finally:
        if process.poll() is None:
            figures[f"sigterm_s_{tag}"] = round(sigterm(process), 2)
        standins.close()
    return figures


def main() -> int:
    sizes = [int(arg) for arg in sys.argv[1:]] or [1000, 10000]
    figures: dict[str, float] = {}
    for count in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as workdir:
            plane = LocalControlPlane(find_bin_dir(), Path(workdir))
            plane.start()
            try:
                figures.update(measure(plane, count))
            finally:
                plane.stop()
        for key, value in figures.items():
            print(f"{key}: {value}", flush=True)
    merge_results(RESULTS, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
