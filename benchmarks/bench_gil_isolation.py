"""Is a thread under the GIL enough to keep decisions apart from control-loop work? (issue 12)

The real GrpcServer (50 backends) on its own thread and event loop; ghz sends 300 Route/s
twice: once with the main thread idle, once with it running pure-Python work in 50 ms bursts
every 100 ms (what kopf event processing, a resync or a status-index rebuild look like). Prints
p50/p99 and throughput of both and writes benchmarks/results/gil_isolation.json.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from bench_grpc import BACKENDS, fleet, ghz, percentile_ms
from nexus_operator.api import Backend, RoutingPolicy
from nexus_operator.routing import Registry, RoutingEngine
from nexus_operator.serving import GrpcServer
from nexus_testkit.localcluster import find_bin_dir

RESULTS = Path(__file__).resolve().parent / "results" / "gil_isolation.json"
BURST_S = 0.05


def registry() -> Registry:
    documents = fleet(BACKENDS)
    backends = [
        Backend.model_validate({**d, "metadata": {**d["metadata"], "namespace": "default"}})
        for d in documents
        if d["kind"] == "Backend"
    ]
    policies = [
        RoutingPolicy.model_validate({**d, "metadata": {**d["metadata"], "namespace": "default"}})
        for d in documents
        if d["kind"] == "RoutingPolicy"
    ]
    built = Registry()
    built.replace_all(backends, policies)
    for backend in backends:
        built.runtime.backend("default", backend.metadata.name).set_assumed_healthy()
    built.synced = True
    return built


def serve_on_thread() -> int:
    ports: list[int] = []
    ready = threading.Event()

    async def main() -> None:
        server = GrpcServer(
            RoutingEngine(registry()),
            address="127.0.0.1:0",
            metrics_registry=CollectorRegistry(),
            max_concurrent_rpcs=10000,
        )
        ports.append(await server.start())
        ready.set()
        await asyncio.Event().wait()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
    ready.wait(30)
    return ports[0]


def control_work(stop: threading.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        while time.perf_counter() - started < BURST_S:
            sum(i * i for i in range(1000))
        time.sleep(BURST_S)


def run(address: str) -> dict[str, float]:
    report = ghz(find_bin_dir() / "ghz", address, rps=300, concurrency=16)
    return {
        "p50_ms": round(percentile_ms(report, 50), 3),
        "p99_ms": round(percentile_ms(report, 99), 3),
        "rps": round(float(report["rps"]), 1),
    }


def main() -> int:
    address = f"127.0.0.1:{serve_on_thread()}"
    idle = run(address)
    stop = threading.Event()
    worker = threading.Thread(target=control_work, args=(stop,), daemon=True)
    worker.start()
    busy = run(address)
    stop.set()
    figures = {"route_300rps_main_thread_idle": idle, "route_300rps_main_thread_busy": busy}
    print(json.dumps(figures, indent=2))
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
