"""gRPC Route throughput and latency with the real ghz against `serve --from-dir`, 50 backends.

Two runs over loopback: unthrottled (the highest Route/s one server process sustains) and a
fixed 1,000 Route/s (latency percentiles at a realistic load). Prints the figures and writes
benchmarks/results/grpc.json. Set NEXUS_BENCH_PROFILE=1 to also profile the server with
pyinstrument and print where its time goes (the figures are then not recorded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from nexus_testkit.localcluster import find_bin_dir

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "grpc.json"
PROTO_ROOT = ROOT / "proto"
BACKENDS = 50
DURATION = os.environ.get("NEXUS_BENCH_DURATION", "10s")
MAX_CONCURRENCY = int(os.environ.get("NEXUS_BENCH_CONCURRENCY", "64"))
CONNECTIONS = int(os.environ.get("NEXUS_BENCH_CONNECTIONS", "4"))
REQUEST = {"model": "llama3:8b", "estimatedTokens": 200, "maxOutputTokens": 100}
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


def start_server(directory: Path, *, profile: bool) -> tuple[subprocess.Popen[str], str]:
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
    ]
    profiler = (
        ["-m", "pyinstrument", "-r", "text", "-o", str(directory / "profile.txt")]
        if profile
        else []
    )
    return _spawn([*profiler, *serve])


def start_noop_server() -> tuple[subprocess.Popen[str], str]:
    return _spawn([str(Path(__file__).with_name("noop_grpc_server.py"))])


def _spawn(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server that prints 'port N' on its first line; return it and its address."""
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    port = line.split("port ")[1].split(",")[0]
    return process, f"127.0.0.1:{port}"


def measure(ghz_bin: Path, process: subprocess.Popen[str], address: str) -> dict[str, float]:
    """The two ghz runs: unthrottled throughput, then latency at a steady 1,000 Route/s."""
    try:
        ghz(ghz_bin, address, rps=500, concurrency=8)  # warm-up
        # Throughput as a data plane drives it: several gateway connections, not one.
        unthrottled = ghz(
            ghz_bin, address, rps=0, concurrency=MAX_CONCURRENCY, connections=CONNECTIONS
        )
        steady = ghz(ghz_bin, address, rps=1000, concurrency=16)
    finally:
        process.terminate()
        process.wait(timeout=60)
    return {
        "max_rps": round(unthrottled["rps"], 1),
        "p50_ms_at_1000rps": round(percentile_ms(steady, 50), 3),
        "p99_ms_at_1000rps": round(percentile_ms(steady, 99), 3),
    }


def ghz(
    ghz_bin: Path, address: str, *, rps: int, concurrency: int, connections: int = 1
) -> dict[str, Any]:
    command = [
        str(ghz_bin),
        # The load generator gets one of the two cores; left alone it takes both and starves
        # the server it measures (a no-op grpc.aio server: 3,400/s without the cap, 4,200/s with).
        "--cpus",
        "1",
        "--insecure",
        "--proto",
        str(PROTO_ROOT / "nexus/routing/v1/router.proto"),
        "--import-paths",
        str(PROTO_ROOT),
        "--call",
        "nexus.routing.v1.Router.Route",
        "--data",
        json.dumps(REQUEST),
        "--duration",
        DURATION,
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
    if failed > concurrency:
        raise RuntimeError(f"ghz saw {failed} failed calls: {codes}")
    return report


def percentile_ms(report: dict[str, Any], percentage: int) -> float:
    for entry in report["latencyDistribution"]:
        if entry["percentage"] == percentage:
            return float(entry["latency"]) / 1e6
    raise KeyError(percentage)


def main() -> int:
    ghz_bin = find_bin_dir() / "ghz"
    profile = os.environ.get("NEXUS_BENCH_PROFILE") == "1"
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        (directory / "fleet.yaml").write_text(yaml.safe_dump_all(fleet(BACKENDS)))
        process, address = start_server(directory, profile=profile)
        routed = measure(ghz_bin, process, address)
        if profile:
            print((directory / "profile.txt").read_text())
            return 0  # profiled figures are slowed down by the sampler: not recorded
    figures = {
        "backends": BACKENDS,
        **routed,
        "noop_server": measure(ghz_bin, *start_noop_server()),
        "load_generator": f"ghz --cpus 1, {CONNECTIONS} connections x {MAX_CONCURRENCY} "
        "concurrent calls unthrottled; 1 connection x 16 at 1,000/s",
    }
    print(json.dumps(figures, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
