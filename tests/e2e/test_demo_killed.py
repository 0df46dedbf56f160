"""`make run` killed with SIGKILL (no chance to clean up) leaves no process and no port behind.

The demo runs as `make run` runs it (`python -m nexus_testkit.demo`), in its own directory and
with gRPC on a free port, so it neither needs nor disturbs a developer's own `make run`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from nexus_testkit.gateway import free_port
from nexus_testkit.localcluster import repo_root

pytestmark = pytest.mark.e2e

READY_LINE = "nexus-operator is running"
# Every kind of child the demo starts, by a piece of its command line.
CHILDREN = {
    "etcd": "/etcd ",
    "kube-apiserver": "/kube-apiserver ",
    "operator": "nexus_operator.cli.operator_main run",
    "serving worker": "multiprocessing.spawn",
    "envoy": "/envoy ",
}


@pytest.fixture
def running_demo(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "NEXUS_DEMO_DIR": str(tmp_path / "demo"),
        "NEXUS_DEMO_GRPC_PORT": str(free_port()),
    }
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nexus_testkit.demo"],
            cwd=repo_root(),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_ready(log, proc=proc, timeout=300)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(60)


def wait_for_ready(log: Path, *, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while READY_LINE not in log.read_text():
        if proc.poll() is not None:
            pytest.fail(f"the demo exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the demo was not ready in {timeout}s:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


def command_line(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def listening_ports(processes: list[psutil.Process]) -> set[int]:
    ports = set()
    for process in processes:
        connections = process.net_connections(kind="tcp")
        ports |= {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}
    return ports


def running(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def wait_until_gone(processes: list[psutil.Process], *, timeout: float) -> list[psutil.Process]:
    """The processes still running once all have exited or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while (alive := running(processes)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a holder
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_every_child_of_a_sigkilled_demo_exits_and_frees_its_ports(
    running_demo: subprocess.Popen[bytes],
) -> None:
    children = psutil.Process(running_demo.pid).children(recursive=True)
    started = {
        kind for kind, piece in CHILDREN.items() for c in children if piece in command_line(c)
    }
    assert started == set(CHILDREN)
    ports = listening_ports(children)
    assert ports  # etcd, kube-apiserver, gRPC, picker, metrics, health, Envoy

    running_demo.send_signal(signal.SIGKILL)
    running_demo.wait()

    survivors = wait_until_gone(children, timeout=120)  # kube-apiserver takes ~30 s
    named = [f"{p.pid} {command_line(p)[:120]}" for p in survivors]
    for survivor in survivors:  # never leave them behind for the next test, even on failure
        with contextlib.suppress(psutil.NoSuchProcess):
            survivor.kill()
    assert named == []
    assert sorted(port for port in ports if not port_is_free(port)) == []
