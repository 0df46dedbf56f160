"""`make run`: the whole product on this machine, from nothing to a routing decision.

Steps, each with a progress line: reuse (or build) the control-plane binaries, start etcd
and kube-apiserver, install the CRDs generated from the models, start two inference
stand-ins on the ports the examples name (Ollama on 11434, vLLM on 8000) so health is
real, apply `examples/`, run the operator with its gRPC endpoint on localhost, and wait
until the local backends are reported Healthy in their status. Then it prints what to
try, and Ctrl-C (or SIGTERM) stops everything it started, in reverse order.

The kubeconfig is always written to the same place (`DEMO_DIR/kubeconfig`), so the
README's commands work as printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nexus_operator.api import crdgen
from nexus_testkit.localcluster import (
    BinariesMissingError,
    ComponentFailedError,
    LocalControlPlane,
    find_bin_dir,
    kubectl_path,
    repo_root,
)
from nexus_testkit.localcluster.standins import StandIns

DEMO_DIR = Path(
    os.environ.get("NEXUS_DEMO_DIR", Path.home() / ".cache" / "nexus-operator" / "demo")
)
GRPC_ADDRESS = "127.0.0.1:50051"
METRICS_PORT = 9090
HEALTH_PORT = 8080
STEPS = 7
# The stand-ins answer where examples/backend-{ollama,vllm}.yaml point.
STAND_INS = (
    ("ollama", 11434, ["llama3.1:8b", "llava:7b"]),
    (
        "openai",
        8000,
        ["qwen2.5-32b-instruct", "internal-support-assistant", "internal-code-reviewer"],
    ),
)
LOCAL_BACKENDS = ("ollama-workstation", "vllm-gpu")


class DemoError(Exception):
    """A step failed; the message says which and where its log is."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    begin = time.monotonic()
    with ExitStack() as stack:
        try:
            _run_steps(stack, examples=args.examples)
        except (DemoError, BinariesMissingError, ComponentFailedError) as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 1
        _print_next_steps(time.monotonic() - begin)
        _wait_for_interrupt()
        print("stopping: operator, stand-ins, kube-apiserver, etcd", flush=True)
    print("stopped", flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nexus-demo", description=__doc__)
    parser.add_argument(
        "--examples", type=Path, default=repo_root() / "examples", help="folder to apply"
    )
    return parser


def _run_steps(stack: ExitStack, *, examples: Path) -> None:
    with _step(1, "control-plane binaries") as done:
        bin_dir = find_bin_dir()
        done(str(bin_dir))
    with _step(2, "etcd + kube-apiserver") as done:
        plane = _start_control_plane(stack, bin_dir)
        done(f"ready at {plane.server}")
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
    with _step(3, "CRDs") as done:
        _install_crds(env)
        done("backends, routingpolicies established")
    with _step(4, "inference stand-ins") as done:
        urls = _start_stand_ins(stack)
        done(", ".join(urls))
    with _step(5, "examples") as done:
        done(_kubectl(env, "apply", "-f", str(examples)).strip().replace("\n", "; "))
    with _step(6, "operator") as done:
        log = _start_operator(stack, env)
        _wait_for_grpc_serving(timeout=60, log=log)
        done(f"gRPC SERVING on {GRPC_ADDRESS}, metrics on :{METRICS_PORT}, log {log}")
    with _step(7, "status") as done:
        done(_wait_for_local_backends_healthy(env, timeout=60, log=log))


@contextmanager
def _step(number: int, title: str) -> Iterator[Callable[[str], None]]:
    begin = time.monotonic()
    print(f"[{number}/{STEPS}] {title} ...", flush=True)

    def done(detail: str) -> None:
        print(f"[{number}/{STEPS}] {title}: {detail} ({time.monotonic() - begin:.1f}s)", flush=True)

    yield done


def _start_control_plane(stack: ExitStack, bin_dir: Path) -> LocalControlPlane:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    plane = LocalControlPlane(bin_dir, DEMO_DIR)
    plane.start()
    stack.callback(plane.stop)
    return plane


def _install_crds(env: dict[str, str]) -> None:
    manifest = "---\n".join(crdgen.render(kind) for kind in crdgen.KINDS)
    _kubectl(env, "apply", "-f", "-", stdin=manifest)
    _kubectl(
        env,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/backends.nexus.routing.dev",
        "crd/routingpolicies.nexus.routing.dev",
    )


def _start_stand_ins(stack: ExitStack) -> list[str]:
    stand_ins = StandIns()
    stack.callback(stand_ins.close)
    try:
        started = [stand_ins.start(f, tuple(models), port=port) for f, port, models in STAND_INS]
    except OSError as exc:
        raise DemoError(
            f"could not listen on 127.0.0.1:{STAND_INS[0][1]} / :{STAND_INS[1][1]} "
            f"(the ports examples/ point at): {exc}; stop whatever holds them"
        ) from exc
    return [f"{server.flavour} {server.url}" for server in started]


def _start_operator(stack: ExitStack, env: dict[str, str]) -> Path:
    log = DEMO_DIR / "logs" / "operator.log"
    argv = [
        sys.executable,
        "-m",
        "nexus_operator.cli.operator_main",
        "run",
        f"--grpc-address={GRPC_ADDRESS}",
        f"--metrics-port={METRICS_PORT}",
        f"--health-port={HEALTH_PORT}",
        "--lease-namespace=default",
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)

    def stop() -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    stack.callback(stop)
    return log


def _wait_for_grpc_serving(*, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(GRPC_ADDRESS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise DemoError(f"gRPC health did not reach SERVING in {timeout:.0f}s; see {log}")


def _wait_for_local_backends_healthy(env: dict[str, str], *, timeout: float, log: Path) -> str:
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        items = json.loads(_kubectl(env, "get", "backends", "-o", "json"))["items"]
        states = {
            item["metadata"]["name"]: (item.get("status") or {})
            .get("health", {})
            .get("state", "Unknown")
            for item in items
        }
        if all(states.get(name) == "Healthy" for name in LOCAL_BACKENDS):
            return ", ".join(f"{name} {state}" for name, state in sorted(states.items()))
        time.sleep(0.5)
    raise DemoError(f"local backends not Healthy in {timeout:.0f}s ({states}); see {log}")


def _kubectl(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(kubectl_path()), *args], env=env, input=stdin, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise DemoError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _print_next_steps(elapsed: float) -> None:
    kubeconfig = DEMO_DIR / "kubeconfig"
    print(
        f"\nnexus-operator is running ({elapsed:.1f}s). In another terminal, from this folder:\n"
        f"  .venv/bin/nexusctl route llama3.1:8b\n"
        f"  .venv/bin/nexusctl explain gpt-4o\n"
        f"  .venv/bin/kubectl --kubeconfig {kubeconfig} get be,rp\n"
        "Press Ctrl-C to stop everything.",
        flush=True,
    )


def _wait_for_interrupt() -> None:
    """Block until SIGINT or SIGTERM, so `kill` stops the children as cleanly as Ctrl-C."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)
    stop.wait()


if __name__ == "__main__":
    sys.exit(main())
