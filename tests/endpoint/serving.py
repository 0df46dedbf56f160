"""`nexus-operator serve --from-dir` as a subprocess, for tests that drive the real CLI and tools."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_READY = re.compile(
    r"serving gRPC on port (\d+), metrics on port (\d+|None), ext_proc on port (\d+|None)"
)


@dataclass(frozen=True)
class ServeProcess:
    process: subprocess.Popen[str]
    grpc_port: int
    metrics_port: int | None
    extproc_port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def serve_command(directory: Path) -> list[str]:
    """`nexus-operator serve --from-dir DIR` run by this interpreter, the ext_proc picker on a
    free port (its default 9002 may be taken on a shared machine; a later flag overrides)."""
    return [
        sys.executable,
        "-m",
        "nexus_operator.cli.operator_main",
        "serve",
        "--from-dir",
        str(directory),
        "--extproc-address",
        "127.0.0.1:0",
    ]


@contextmanager
def serve_from_dir(directory: Path, *extra: str) -> Iterator[ServeProcess]:
    """Start serve on free ports, wait for its ready line, SIGTERM it afterwards."""
    command = [
        *serve_command(directory),
        "--grpc-address",
        "127.0.0.1:0",
        "--metrics-port",
        "0",
        "--extproc-address",
        "127.0.0.1:0",
        *extra,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = _READY.search(line)
        assert match is not None, f"serve did not start: {line!r} (exit {process.poll()})"
        metrics = None if match.group(2) == "None" else int(match.group(2))
        extproc = None if match.group(3) == "None" else int(match.group(3))
        yield ServeProcess(
            process=process,
            grpc_port=int(match.group(1)),
            metrics_port=metrics,
            extproc_port=extproc,
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
