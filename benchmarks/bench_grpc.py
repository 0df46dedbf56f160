"""gRPC Route throughput, latency and CPU per call with the real ghz, 50 backends.

Against `serve --from-dir` (one process, on uvloop as shipped; and again with `--event-loop
asyncio`), the no-op grpc.aio server beside it on both loops (the floor; `noop_cpu_us_per_call`
is the plain asyncio one, as the issue set it, and `same_loop` compares like with like). CPU per
call is measured twice: at each server's own maximum (the issue's figure; a server that saturates
at a lower rate batches less per wake-up, so this overstates what a call costs it) and with every
server at EQUAL_RATE calls/s (`equal_rate`: the same operating point). And
`serve --workers 2` (the serving plane): an unthrottled run (the highest Route/s, and the
server's CPU per call from its own process accounting, workers included) and a fixed
1,000 Route/s (latency percentiles). Then churn: the real `nexus-operator run` against a local
kube-apiserver, 300 Route/s while 500 Backends are created, updated and deleted in cycles
(p99 and failed calls; `--no-churn` skips it). Prints the figures and merges them into
benchmarks/results/grpc.json. Set
NEXUS_BENCH_PROFILE=1 to profile the single-process server with pyinstrument instead (the
figures are then not recorded).

`--churn-only` runs the churn measurement alone and merges its figures into grpc.json (the
other keys stay). With NEXUS_BENCH_PYSPY=<py-spy binary> it records the serving worker with
py-spy during the churn (raw folded stacks, to benchmarks/results/churn-worker.pyspy or
NEXUS_BENCH_PYSPY_OUT) instead, and records no figures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import yaml
from kubernetes import client

from benchkit import cpu_seconds, ghz_route_command, merge_results, processes, wait_serving
from nexus_operator.api import GROUP, VERSION
from nexus_testkit.gateway import free_port
from nexus_testkit.localcluster import Cluster, LocalControlPlane, find_bin_dir

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "grpc.json"
BACKENDS = 50
DURATION = os.environ.get("NEXUS_BENCH_DURATION", "10s")
MAX_CONCURRENCY = int(os.environ.get("NEXUS_BENCH_CONCURRENCY", "64"))
CONNECTIONS = int(os.environ.get("NEXUS_BENCH_CONNECTIONS", "4"))
# CPU per call falls as load rises (grpc and the event loop handle more completions per wake-up),
# so servers are also compared at one rate every one of them sustains: what a call costs at the
# same operating point, not at each one's own saturation.
EQUAL_RATE = int(os.environ.get("NEXUS_BENCH_EQUAL_RATE", "2500"))
REQUEST = {"model": "llama3:8b", "estimatedTokens": 200, "maxOutputTokens": 100}
CHURN_BACKENDS = 500
CHURN_RPS = 300
CHURN_CALLS = int(os.environ.get("NEXUS_BENCH_CHURN_CALLS", "18000"))  # 60 s at 300/s
CHURN_NAMESPACE = "churn"
LOCAL_TYPES = ("ollama", "vllm", "llamacpp", "lmstudio", "generic")
API_VERSION = "nexus.routing.dev/v1alpha1"


def fleet(count: int) -> list[dict[str, Any]]:
    """`count` Backends that all serve the benchmark model (plus one of a few others), one policy."""
    documents: list[dict[str, Any]] = []
    for index in range(count):
        spec = {
            "type": LOCAL_TYPES[index % len(LOCAL_TYPES)],
            "url": f"http://backend-{index}.invalid:8080",
            "priority": index % 100,
            "tier": 1 + index % 3,
            "models": [
                {
                    "id": "llama3:8b",
                    "contextLength": 8192,
                    "pricing": {"inputPer1k": 0.0001, "outputPer1k": 0.0002},
                },
                {"id": f"family-{index % 5}", "contextLength": 4096},
            ],
        }
        documents.append(
            {
                "apiVersion": API_VERSION,
                "kind": "Backend",
                "metadata": {"name": f"backend-{index:02d}"},
                "spec": spec,
            }
        )
    policy = {"modelPatterns": ["llama3:*"], "budget": {"monthlyLimitUsd": 1_000_000}}
    documents.append(
        {
            "apiVersion": API_VERSION,
            "kind": "RoutingPolicy",
            "metadata": {"name": "llama"},
            "spec": policy,
        }
    )
    return documents


def start_server(
    directory: Path, *, profile: bool, workers: int = 0, event_loop: str = "auto"
) -> tuple[subprocess.Popen[str], str]:
    serve = [
        "-m",
        "nexus_operator.cli.operator_main",
        "serve",
        "--from-dir",
        str(directory),
        "--assume-healthy",
        "--grpc-address",
        "127.0.0.1:0",
        "--metrics-port",
        "0",
        "--extproc-address",
        "off",
        "--log-level",
        "WARNING",
        "--max-concurrent-rpcs",
        "10000",
        "--extproc-address",
        "off",
        "--workers",
        str(workers),
        "--event-loop",
        event_loop,
    ]
    profiler = (
        ["-m", "pyinstrument", "-r", "text", "-o", str(directory / "profile.txt")]
        if profile
        else []
    )
    return _spawn([*profiler, *serve])


def start_noop_server(event_loop: str = "asyncio") -> tuple[subprocess.Popen[str], str]:
    return _spawn([str(Path(__file__).with_name("noop_grpc_server.py")), event_loop])


def _spawn(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server that prints 'port N' on its first line; return it and its address."""
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    port = line.split("port ")[1].split(",")[0]
    return process, f"127.0.0.1:{port}"


def measure(ghz_bin: Path, process: subprocess.Popen[str], address: str) -> dict[str, float]:
    """The three ghz runs: unthrottled throughput (and CPU per call), CPU per call at
    EQUAL_RATE, then latency at 1,000/s."""
    try:
        ghz(ghz_bin, address, rps=500, concurrency=8)  # warm-up
        # Throughput as a data plane drives it: several gateway connections, not one.
        before = cpu_seconds(process.pid)
        unthrottled = ghz(
            ghz_bin, address, rps=0, concurrency=MAX_CONCURRENCY, connections=CONNECTIONS
        )
        cpu = cpu_seconds(process.pid) - before
        before = cpu_seconds(process.pid)
        paced = ghz(
            ghz_bin,
            address,
            rps=EQUAL_RATE,
            concurrency=MAX_CONCURRENCY,
            connections=CONNECTIONS,
        )
        paced_cpu = cpu_seconds(process.pid) - before
        steady = ghz(ghz_bin, address, rps=1000, concurrency=16)
    finally:
        process.terminate()
        process.wait(timeout=60)
    return {
        "max_rps": round(unthrottled["rps"], 1),
        "cpu_us_per_call": round(cpu * 1e6 / max(1, int(unthrottled["count"])), 1),
        "cpu_us_per_call_at_equal_rate": round(paced_cpu * 1e6 / max(1, int(paced["count"])), 1),
        "rps_at_equal_rate": round(paced["rps"], 1),
        "p50_ms_at_1000rps": round(percentile_ms(steady, 50), 3),
        "p99_ms_at_1000rps": round(percentile_ms(steady, 99), 3),
    }


def ghz(
    ghz_bin: Path,
    address: str,
    *,
    rps: int,
    concurrency: int,
    connections: int = 1,
    total: int | None = None,
    request: dict[str, Any] = REQUEST,
    allow_failures: bool = False,
) -> dict[str, Any]:
    """One ghz run for DURATION (or exactly `total` calls); raises on failed calls unless told."""
    length = ["--total", str(total)] if total is not None else ["--duration", DURATION]
    command = [
        *ghz_route_command(ghz_bin=ghz_bin),
        "--data",
        json.dumps(request),
        *length,
        "--concurrency",
        str(concurrency),
        "--connections",
        str(connections),
        "--rps",
        str(rps),
        "--format",
        "json",
        address,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    report: dict[str, Any] = json.loads(result.stdout)
    codes = report.get("statusCodeDistribution", {})
    failed = sum(codes.values()) - codes.get("OK", 0)
    # Calls still in flight when --duration ends are cut off by ghz; anything beyond that is real.
    if failed > concurrency and not allow_failures:
        raise RuntimeError(f"ghz saw {failed} failed calls: {codes}")
    return report


def percentile_ms(report: dict[str, Any], percentage: int) -> float:
    for entry in report["latencyDistribution"]:
        if entry["percentage"] == percentage:
            return float(entry["latency"]) / 1e6
    raise KeyError(percentage)


def churn_backend(name: str, priority: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Backend",
        "metadata": {"name": name},
        "spec": {
            "type": "ollama",
            "url": f"http://{name}.invalid:8080",
            "priority": priority,
            "healthCheck": {"enabled": False},
            "models": [{"id": "llama3:8b", "contextLength": 8192}],
        },
    }


def churn(objects: client.CustomObjectsApi, stop: threading.Event) -> int:
    """Create, update and delete CHURN_BACKENDS Backends in cycles until `stop`; cycles done."""
    names = [f"churn-{i:03d}" for i in range(CHURN_BACKENDS)]
    args = (GROUP, VERSION, CHURN_NAMESPACE, "backends")
    cycles = 0
    with ThreadPoolExecutor(8) as pool:
        while not stop.is_set():
            list(
                pool.map(
                    lambda n: objects.create_namespaced_custom_object(*args, churn_backend(n, 1)),
                    names,
                )
            )
            patch = {"spec": {"priority": 2 + cycles % 50}}
            list(
                pool.map(
                    lambda n, p=patch: objects.patch_namespaced_custom_object(*args, n, p), names
                )
            )
            list(pool.map(lambda n: objects.delete_namespaced_custom_object(*args, n), names))
            while objects.list_namespaced_custom_object(*args)["items"][1:]:
                time.sleep(0.2)  # deletion is asynchronous; the stable Backend stays
            cycles += 1
    return cycles


def serving_worker(operator: subprocess.Popen[bytes]) -> int:
    """The pid of the operator's serving worker (a spawned child running spawn_main)."""
    for proc in processes(operator.pid)[1:]:
        if any("spawn_main" in part for part in proc.cmdline()):
            return int(proc.pid)
    raise RuntimeError("the operator has no serving worker")


def start_spy(spy: str, pid: int) -> tuple[subprocess.Popen[bytes], Path]:
    """py-spy recording `pid` (raw folded stacks) until it is sent SIGINT."""
    default = RESULTS.parent / "churn-worker.pyspy"
    out = Path(os.environ.get("NEXUS_BENCH_PYSPY_OUT", str(default)))
    command = [spy, "record", "-p", str(pid), "-f", "raw", "-r", "200", "-o", str(out)]
    return subprocess.Popen(command), out


def measure_churn(ghz_bin: Path) -> dict[str, Any]:
    """300 Route/s through `run --workers 1` while 500 Backends churn: p99 and failed calls."""
    with tempfile.TemporaryDirectory(prefix="bench-churn-") as workdir:
        plane = LocalControlPlane(find_bin_dir(), Path(workdir))
        plane.start()
        try:
            cluster = Cluster.local(plane)
            cluster.kubectl("apply", "-f", str(ROOT / "crds"))
            cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
            api = cluster.api_client()
            client.CoreV1Api(api).create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=CHURN_NAMESPACE))
            )
            objects = client.CustomObjectsApi(api)
            objects.create_namespaced_custom_object(
                GROUP, VERSION, CHURN_NAMESPACE, "backends", churn_backend("stable", 0)
            )
            address = f"127.0.0.1:{free_port()}"
            argv = [sys.executable, "-m", "nexus_operator.cli.operator_main", "run"]
            argv += ["--kubeconfig", str(plane.kubeconfig), "--grpc-address", address]
            argv += ["--metrics-port", "-1", "--health-port", str(free_port())]
            argv += ["--extproc-address", "off", "--namespace", CHURN_NAMESPACE]
            argv += ["--lease-namespace", CHURN_NAMESPACE, "--log-level", "WARNING"]
            argv += ["--workers", "1", "--max-concurrent-rpcs", "10000"]
            operator = subprocess.Popen(argv)
            try:
                with grpc.insecure_channel(address) as channel:
                    wait_serving(channel, limit_s=120.0)
                spy = os.environ.get("NEXUS_BENCH_PYSPY")
                profiler = start_spy(spy, serving_worker(operator)) if spy else None
                stop = threading.Event()
                load_before = os.getloadavg()[0]
                with ThreadPoolExecutor(1) as pool:
                    cycles = pool.submit(churn, objects, stop)
                    report = ghz(
                        ghz_bin,
                        address,
                        rps=CHURN_RPS,
                        concurrency=16,
                        total=CHURN_CALLS,
                        request={**REQUEST, "namespace": CHURN_NAMESPACE},
                        allow_failures=True,
                    )
                    stop.set()
                    load_after = os.getloadavg()[0]
                    done = cycles.result()
                if profiler is not None:
                    profiler[0].send_signal(signal.SIGINT)
                    profiler[0].wait(60)
                    print(f"py-spy profile of the serving worker: {profiler[1]}", file=sys.stderr)
            finally:
                operator.send_signal(signal.SIGTERM)
                operator.wait(60)
        finally:
            plane.stop()
    codes = report.get("statusCodeDistribution", {})
    return {
        "churn_p99_ms": round(percentile_ms(report, 99), 3),
        "churn_failed_calls": sum(codes.values()) - codes.get("OK", 0),
        "churn_calls": sum(codes.values()),
        "churn_cycles": done,
        # The machine's 1-minute load average as the Route load started and ended (2 cores:
        # the API server, etcd, the operator, ghz and this process share them).
        "churn_load_1m": [round(load_before, 2), round(load_after, 2)],
    }


def main() -> int:
    ghz_bin = find_bin_dir() / "ghz"
    if "--churn-only" in sys.argv[1:]:
        churned = measure_churn(ghz_bin)
        print(json.dumps(churned, indent=2))
        if not os.environ.get("NEXUS_BENCH_PYSPY"):
            merge_results(RESULTS, churned)
        return 0
    profile = os.environ.get("NEXUS_BENCH_PROFILE") == "1"
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        (directory / "fleet.yaml").write_text(yaml.safe_dump_all(fleet(BACKENDS)))
        process, address = start_server(directory, profile=profile)
        routed = measure(ghz_bin, process, address)
        if profile:
            print((directory / "profile.txt").read_text())
            return 0  # profiled figures are slowed down by the sampler: not recorded
        noop = measure(ghz_bin, *start_noop_server("asyncio"))
        noop_uvloop = measure(ghz_bin, *start_noop_server("uvloop"))
        on_asyncio = measure(ghz_bin, *start_server(directory, profile=False, event_loop="asyncio"))
        workers = measure(ghz_bin, *start_server(directory, profile=False, workers=2))
    cpu = routed["cpu_us_per_call"]
    figures = {
        "backends": BACKENDS,
        **routed,
        "event_loop": "uvloop",
        "server_cpu_us_per_call": cpu,
        "noop_cpu_us_per_call": noop["cpu_us_per_call"],
        "server_to_noop_cpu_ratio": round(cpu / noop["cpu_us_per_call"], 2),
        # The same comparison with both servers on the same loop: what routing itself adds.
        "same_loop": {
            "uvloop": {
                "server_cpu_us_per_call": cpu,
                "noop_cpu_us_per_call": noop_uvloop["cpu_us_per_call"],
                "ratio": round(cpu / noop_uvloop["cpu_us_per_call"], 2),
            },
            "asyncio": {
                "server_cpu_us_per_call": on_asyncio["cpu_us_per_call"],
                "noop_cpu_us_per_call": noop["cpu_us_per_call"],
                "ratio": round(on_asyncio["cpu_us_per_call"] / noop["cpu_us_per_call"], 2),
            },
        },
        # Like for like: both at EQUAL_RATE calls/s (the figures above are each at its own maximum).
        "equal_rate": {
            "rps": EQUAL_RATE,
            "server_cpu_us_per_call": routed["cpu_us_per_call_at_equal_rate"],
            "noop_cpu_us_per_call": noop["cpu_us_per_call_at_equal_rate"],
            "ratio": round(
                routed["cpu_us_per_call_at_equal_rate"] / noop["cpu_us_per_call_at_equal_rate"], 2
            ),
            "noop_uvloop_cpu_us_per_call": noop_uvloop["cpu_us_per_call_at_equal_rate"],
            "ratio_uvloop": round(
                routed["cpu_us_per_call_at_equal_rate"]
                / noop_uvloop["cpu_us_per_call_at_equal_rate"],
                2,
            ),
        },
        "max_rps_workers_2": workers["max_rps"],
        "noop_server": noop,
        "noop_server_uvloop": noop_uvloop,
        "server_asyncio": on_asyncio,
        "workers_2": workers,
        **({} if "--no-churn" in sys.argv else measure_churn(ghz_bin)),
        "load_generator": f"ghz --cpus 1, {CONNECTIONS} connections x {MAX_CONCURRENCY} "
        "concurrent calls unthrottled; 1 connection x 16 at 1,000/s; churn: 16 x 300/s "
        f"for {CHURN_CALLS} calls",
        "machine": f"{os.cpu_count()} cores, shared with the load generator",
    }
    print(json.dumps(figures, indent=2))
    merge_results(RESULTS, figures)  # --no-churn keeps the churn figures of the last full run
    return 0


if __name__ == "__main__":
    sys.exit(main())
