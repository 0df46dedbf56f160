"""The gateway's moving parts for tests, benchmarks and the demo: a picker process and an
Envoy in front of it, wired by `nexus-operator envoy-config`'s renderer.

`Picker` runs the product as a user would — `nexus-operator serve --from-dir DIR` or
`nexus-operator run` against a cluster — in a subprocess on free loopback ports (ext_proc,
gRPC, /metrics, and for `run` the health port), waits until the ext_proc service's gRPC
health says SERVING, reads /metrics, and restarts on the same ports. The process is tied to the
one that starts it (nexus_testkit.lifeline): a test run killed with SIGKILL leaves no picker.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import grpc

from .health import until_serving
from .lifeline import tied_to_this_process

__all__ = ["EXT_PROC_SERVICE", "Picker", "PickerError", "free_port", "metric_value"]

EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
START_TIMEOUT_S = 60.0


class PickerError(Exception):
    """The picker process exited or never reported SERVING."""


def free_port() -> int:
    """A port free on 127.0.0.1 right now (bound to :0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Picker:
    """`nexus-operator serve|run ...` with the ext_proc picker on a loopback port."""

    def __init__(
        self,
        command: Sequence[str],
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        python_args: Sequence[str] = (),
    ) -> None:
        """`command` is the subcommand and its own flags, e.g. ["serve", "--from-dir", DIR];
        `python_args` go between the interpreter and `-m` (e.g. a profiler's `-m pyinstrument`)."""
        self.command = list(command)
        self.python_args = list(python_args)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "picker.log"
        self.env = {**os.environ, **(env or {})}
        self.extproc_port = free_port()
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.health_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def extproc_address(self) -> str:
        return f"127.0.0.1:{self.extproc_port}"

    @property
    def pid(self) -> int | None:
        """The picker process's id while it runs (its serving workers are its children)."""
        return self._process.pid if self._process is not None else None

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def argv(self) -> list[str]:
        argv = [
            sys.executable,
            *self.python_args,
            "-m",
            "nexus_operator.cli.operator_main",
            *self.command,
            f"--extproc-address={self.extproc_address}",
            f"--grpc-address={self.grpc_address}",
            f"--metrics-port={self.metrics_port}",
        ]
        if self.command and self.command[0] == "run":
            argv.append(f"--health-port={self.health_port}")
        return argv

    def start(self, *, timeout: float = START_TIMEOUT_S) -> Picker:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(  # tied: gone with a SIGKILLed test run
                tied_to_this_process(self.argv()),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self.wait_serving(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, *, kill: bool = False) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, *, kill: bool = False) -> Picker:
        """Stop (SIGTERM, or SIGKILL with kill=True) and start again on the same ports."""
        self.stop(kill=kill)
        return self.start()

    def __enter__(self) -> Picker:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def wait_serving(self, *, timeout: float) -> None:
        def still_running() -> None:
            if self._process is not None and self._process.poll() is not None:
                raise PickerError(
                    f"picker exited with {self._process.returncode}:\n{self.log_tail()}"
                )

        with grpc.insecure_channel(self.extproc_address) as channel:
            serving = until_serving(
                channel,
                limit_s=timeout,
                service=EXT_PROC_SERVICE,
                period_s=0.1,
                still_running=still_running,
            )
        if not serving:
            raise PickerError(f"ext_proc not SERVING in {timeout:.0f}s:\n{self.log_tail()}")

    def metrics(self) -> str:
        """The Prometheus text of the picker's /metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body: bytes = response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise PickerError(f"/metrics unreachable: {exc}") from exc
        return body.decode()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, matched by name and a subset of labels."""
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)", line.strip())
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(3))
    return None
