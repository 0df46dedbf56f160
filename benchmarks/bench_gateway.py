"""What the picker costs a request through Envoy, measured with the real vegeta.

One run, one machine, one stand-in (an OpenAI-compatible server answering a chat completion
with `usage`), the same Envoy bootstrap from `nexus-operator envoy-config`'s renderer twice:

- direct: `--no-picker` — Envoy routes every request straight to the stand-in;
- picker: the ext_proc filter asks `nexus-operator serve --from-dir` (a subprocess, on the event
  loop NEXUS_BENCH_EVENT_LOOP names, default auto = uvloop; BUFFERED
  body mode, or NEXUS_BENCH_BODY_MODE=full-duplex-streamed) for a decision, which writes the
  stand-in's ip:port, and reads the response for usage; once from one process (the `picker_*` figures) and once with serving workers
  (`--workers N`, N from NEXUS_BENCH_PICKER_WORKERS, default 2: `picker_workers_N_*`).

For each: latency percentiles at a fixed 500 requests/s (`rate_rps`), then the highest rate
it sustains (vegeta unthrottled with a fixed number of workers: successful requests/s). For
the picker also its CPU per request at the fixed rate (every process of it, psutil) and
Envoy's ext_proc messages per request, next to the same figures for
`noop_extproc_server.py` (grpc.aio answering prebuilt messages: the transport's floor).
Prints the figures and writes benchmarks/results/gateway.json. The machine is shared (two
cores, other work running), so figures move between runs; compare direct and picker from
the same run only. NEXUS_BENCH_PROFILE=1 runs only the picker at the fixed rate under
pyinstrument and prints where the picker's time goes (nothing is recorded). The picker and
the no-op are measured again with `envoy-config --skip-response-headers` (3 messages a request
instead of 4: `skip_response_headers_*`).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from benchkit import cpu_seconds
from nexus_operator.cli.cmd_envoy_config import EnvoyOptions, render_bootstrap
from nexus_testkit.envoy import Envoy
from nexus_testkit.gateway import Picker, free_port
from nexus_testkit.localcluster import find_bin_dir
from nexus_testkit.localcluster.standins import InferenceStandIn, StandIns

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "gateway.json"
RATE = int(os.environ.get("NEXUS_BENCH_RATE", "500"))
DURATION = os.environ.get("NEXUS_BENCH_DURATION", "10s")
MAX_WORKERS = int(os.environ.get("NEXUS_BENCH_WORKERS", "32"))
ENVOY_THREADS = int(os.environ.get("NEXUS_BENCH_ENVOY_THREADS", "1"))
PICKER_WORKERS = int(os.environ.get("NEXUS_BENCH_PICKER_WORKERS", "2"))
BODY_MODE = os.environ.get("NEXUS_BENCH_BODY_MODE", "buffered")  # or full-duplex-streamed
EVENT_LOOP = os.environ.get("NEXUS_BENCH_EVENT_LOOP", "auto")  # the picker's --event-loop
EXT_PROC_STATS = "http.nexus_gateway.ext_proc."
MSGS_SENT = EXT_PROC_STATS + "stream_msgs_sent"
MODEL = "bench-model"
REQUEST = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Say hello in five words."}],
    "max_tokens": 16,
}
API_VERSION = "nexus.routing.dev/v1alpha1"


def manifests(directory: Path, standin_url: str) -> None:
    backend = {
        "apiVersion": API_VERSION,
        "kind": "Backend",
        "metadata": {"name": "bench-standin"},
        "spec": {"type": "vllm", "url": standin_url, "models": [{"id": MODEL}]},
    }
    policy = {
        "apiVersion": API_VERSION,
        "kind": "RoutingPolicy",
        "metadata": {"name": "everything"},
        "spec": {"modelPatterns": ["*"]},
    }
    (directory / "fleet.yaml").write_text(yaml.safe_dump_all([backend, policy]))


def attack(vegeta: Path, url: str, *, workdir: Path, rate: int, duration: str) -> dict[str, Any]:
    """vegeta attack | vegeta report -type=json; rate 0 = as fast as MAX_WORKERS allow."""
    target = {
        "method": "POST",
        "url": f"{url}/v1/chat/completions",
        "header": {"Content-Type": ["application/json"]},
        "body": base64.b64encode(json.dumps(REQUEST).encode()).decode(),
    }
    targets = workdir / "targets.json"
    targets.write_text(json.dumps(target) + "\n")
    argv = [
        str(vegeta),
        "attack",
        "-format=json",
        f"-targets={targets}",
        f"-rate={rate}/s" if rate else "-rate=0",
        f"-duration={duration}",
        "-timeout=10s",
        "-keepalive=true",
    ]
    if not rate:
        argv += [f"-workers={MAX_WORKERS}", f"-max-workers={MAX_WORKERS}"]
    attack_run = subprocess.run(argv, capture_output=True, check=True)
    report = subprocess.run(
        [str(vegeta), "report", "-type=json"],
        input=attack_run.stdout,
        capture_output=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(report.stdout)
    return result


def measure(
    vegeta: Path,
    envoy: Envoy,
    *,
    workdir: Path,
    label: str,
    pid: int | None = None,
    unthrottled: bool = True,
) -> dict[str, float]:
    """Latency at RATE (and the max rate unless `unthrottled=False`); with `pid`, that process
    tree's CPU per request and Envoy's ext_proc messages per request over the fixed-rate run."""
    attack(vegeta, envoy.url, workdir=workdir, rate=100, duration="2s")  # warm up
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    stats_before = envoy.stats(EXT_PROC_STATS)
    fixed = attack(vegeta, envoy.url, workdir=workdir, rate=RATE, duration=DURATION)
    requests = max(1, int(fixed["requests"]))
    figures = {
        "p50_ms": fixed["latencies"]["50th"] / 1e6,
        "p99_ms": fixed["latencies"]["99th"] / 1e6,
        "success_at_rate": fixed["success"],
    }
    note = ""
    if pid is not None:
        stats = envoy.stats(EXT_PROC_STATS)
        sent = stats.get(MSGS_SENT, 0) - stats_before.get(MSGS_SENT, 0)
        figures["cpu_ms_per_request"] = (cpu_seconds(pid) - cpu_before) * 1000 / requests
        figures["extproc_messages_per_request"] = sent / requests
        note = (
            f"; {figures['cpu_ms_per_request']:.3f} ms CPU and "
            f"{figures['extproc_messages_per_request']:.2f} ext_proc messages per request"
        )
    if unthrottled:
        most = attack(vegeta, envoy.url, workdir=workdir, rate=0, duration=DURATION)
        figures["max_rps"] = most["throughput"]
        figures["success_at_max"] = most["success"]
        note += (
            f"; max {figures['max_rps']:,.0f}/s (success {most['success']:.3f}, "
            f"{MAX_WORKERS} workers)"
        )
    print(
        f"{label:>7}: p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms at "
        f"{RATE}/s (success {fixed['success']:.3f}){note}",
        flush=True,
    )
    return figures


def measure_noop(
    vegeta: Path, base: EnvoyOptions, *, work: Path, endpoint: str
) -> dict[str, float]:
    """Envoy + noop_extproc_server.py (grpc.aio answering prebuilt messages) at the fixed rate."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "noop_extproc_server.py"), str(port), endpoint]
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the no-op ext_proc server did not start") from None
                time.sleep(0.1)
        options = replace(base, picker_address=f"127.0.0.1:{port}")
        with Envoy(
            render_bootstrap(options), work / "envoy-noop", concurrency=ENVOY_THREADS
        ) as envoy:
            return measure(
                vegeta, envoy, workdir=work, label="no-op", pid=server.pid, unthrottled=False
            )
    finally:
        server.terminate()
        server.wait(10)


def measure_picker(
    vegeta: Path, base: EnvoyOptions, *, work: Path, workers: int, label: str
) -> dict[str, float]:
    """Envoy + `serve --from-dir --workers N` (0: one process) at the fixed rate and unthrottled."""
    picker = Picker(
        [
            "serve",
            "--from-dir",
            str(work / "manifests"),
            "--assume-healthy",
            "--log-level=WARNING",
            f"--workers={workers}",
            f"--event-loop={EVENT_LOOP}",
        ],
        work / f"picker-{workers}",
    )
    with picker:
        options = replace(base, picker_address=picker.extproc_address)
        with Envoy(
            render_bootstrap(options), work / f"envoy-picker-{workers}", concurrency=ENVOY_THREADS
        ) as envoy:
            assert picker.pid is not None
            return measure(vegeta, envoy, workdir=work, label=label, pid=picker.pid)


def profile(vegeta: Path, work: Path, standin_url: str) -> None:
    """The picker under pyinstrument at the fixed rate; prints the profile."""
    report = work / "profile.txt"
    picker = Picker(
        ["serve", "--from-dir", str(work / "manifests"), "--assume-healthy", "--log-level=WARNING"],
        work / "picker-profiled",
        python_args=["-m", "pyinstrument", "-r", "text", "-o", str(report)],
    )
    with picker:
        options = EnvoyOptions(
            listener_address="127.0.0.1",
            listener_port=0,
            access_log=False,
            picker_address=picker.extproc_address,
        )
        with Envoy(render_bootstrap(options), work / "envoy-profiled") as envoy:
            fixed = attack(vegeta, envoy.url, workdir=work, rate=RATE, duration=DURATION)
    print(
        f"profiled picker: p50 {fixed['latencies']['50th'] / 1e6:.2f} ms, "
        f"p99 {fixed['latencies']['99th'] / 1e6:.2f} ms at {RATE}/s (slower under the profiler)"
    )
    print(report.read_text())


@contextmanager
def workspace() -> Iterator[tuple[Path, InferenceStandIn]]:
    """A scratch folder holding manifests/ for one stand-in, and that stand-in."""
    stand_ins = StandIns()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
            work = Path(tmp)
            standin = stand_ins.start("openai", (MODEL,), name="bench-standin")
            (work / "manifests").mkdir()
            manifests(work / "manifests", standin.url)
            yield work, standin
    finally:
        stand_ins.close()


def main() -> int:
    vegeta = find_bin_dir() / "vegeta"
    if os.environ.get("NEXUS_BENCH_PROFILE") == "1":
        with workspace() as (work, standin):
            profile(vegeta, work, standin.url)
        return 0
    with workspace() as (work, standin):
        base = EnvoyOptions(
            listener_address="127.0.0.1", listener_port=0, access_log=False, body_mode=BODY_MODE
        )
        direct_options = replace(base, direct_endpoint=standin.endpoint)
        with Envoy(
            render_bootstrap(direct_options), work / "envoy-direct", concurrency=ENVOY_THREADS
        ) as envoy:
            direct = measure(vegeta, envoy, workdir=work, label="direct")
        noop = measure_noop(vegeta, base, work=work, endpoint=standin.endpoint)
        via_picker = measure_picker(vegeta, base, work=work, workers=0, label="picker")
        via_workers = measure_picker(
            vegeta,
            base,
            work=work,
            workers=PICKER_WORKERS,
            label=f"picker, {PICKER_WORKERS} workers",
        )
        # envoy-config --skip-response-headers: the same two, without the response-headers
        # message (client headers from the picker's dynamic metadata).
        skip = replace(base, skip_response_headers=True)
        shutil.copytree(work / "manifests", work / "skip" / "manifests")
        noop_skip = measure_noop(vegeta, skip, work=work / "skip", endpoint=standin.endpoint)
        picker_skip = measure_picker(
            vegeta, skip, work=work / "skip", workers=0, label="picker, skip response headers"
        )
    result: dict[str, object] = {
        "direct_p50_ms": round(direct["p50_ms"], 3),
        "direct_p99_ms": round(direct["p99_ms"], 3),
        "picker_p50_ms": round(via_picker["p50_ms"], 3),
        "picker_p99_ms": round(via_picker["p99_ms"], 3),
        "rate_rps": RATE,
        "picker_max_rps": round(via_picker["max_rps"], 1),
        "direct_max_rps": round(direct["max_rps"], 1),
        f"picker_workers_{PICKER_WORKERS}_p50_ms": round(via_workers["p50_ms"], 3),
        f"picker_workers_{PICKER_WORKERS}_p99_ms": round(via_workers["p99_ms"], 3),
        f"picker_workers_{PICKER_WORKERS}_max_rps": round(via_workers["max_rps"], 1),
        "picker_workers": PICKER_WORKERS,
        "noop_extproc_p50_ms": round(noop["p50_ms"], 3),
        "noop_extproc_p99_ms": round(noop["p99_ms"], 3),
        "noop_extproc_cpu_ms_per_request": round(noop["cpu_ms_per_request"], 3),
        "picker_cpu_ms_per_request": round(via_picker["cpu_ms_per_request"], 3),
        f"picker_workers_{PICKER_WORKERS}_cpu_ms_per_request": round(
            via_workers["cpu_ms_per_request"], 3
        ),
        "extproc_messages_per_request": round(via_picker["extproc_messages_per_request"], 2),
        "skip_response_headers_picker_p50_ms": round(picker_skip["p50_ms"], 3),
        "skip_response_headers_picker_p99_ms": round(picker_skip["p99_ms"], 3),
        "skip_response_headers_picker_max_rps": round(picker_skip["max_rps"], 1),
        "skip_response_headers_picker_cpu_ms_per_request": round(
            picker_skip["cpu_ms_per_request"], 3
        ),
        "skip_response_headers_noop_extproc_p50_ms": round(noop_skip["p50_ms"], 3),
        "skip_response_headers_noop_extproc_p99_ms": round(noop_skip["p99_ms"], 3),
        "skip_response_headers_extproc_messages_per_request": round(
            picker_skip["extproc_messages_per_request"], 2
        ),
        "direct_success_at_rate": direct["success_at_rate"],
        "picker_success_at_rate": via_picker["success_at_rate"],
        "max_rate_workers": MAX_WORKERS,
        "envoy_worker_threads": ENVOY_THREADS,
        "duration": DURATION,
        "body_mode": BODY_MODE,
        "load_generator": "vegeta v12.13.0",
    }
    print(
        f"picker adds {via_picker['p50_ms'] - direct['p50_ms']:+.2f} ms at p50, "
        f"{via_picker['p99_ms'] - direct['p99_ms']:+.2f} ms at p99 ({RATE}/s); "
        f"no-op ext_proc {noop['p50_ms'] - direct['p50_ms']:+.2f} ms at p50"
    )
    print(
        "with --skip-response-headers: picker adds "
        f"{picker_skip['p50_ms'] - direct['p50_ms']:+.2f} ms at p50, "
        f"{picker_skip['p99_ms'] - direct['p99_ms']:+.2f} ms at p99; no-op ext_proc "
        f"{noop_skip['p50_ms'] - direct['p50_ms']:+.2f} ms at p50"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
