"""`nexus-operator run` startup: a failed start leaves nothing serving, so kopf's retry can bind."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import kopf
import pytest

from nexus_operator.cli import cmd_run, serving_options
from nexus_operator.cli.serving_options import StartupError
from nexus_operator.operator import handlers
from nexus_operator.operator.replica import ControllerConfig
from nexus_operator.routing import Registry, RoutingEngine
from nexus_operator.serving import GrpcServer


class RecordingServer(GrpcServer):
    """The real gRPC server, remembering the port each instance bound."""

    ports: ClassVar[list[int]] = []

    async def start(self) -> int:
        port = await super().start()
        RecordingServer.ports.append(port)
        return port


@dataclass
class FakeController:
    engine: RoutingEngine


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A TCP port held by a listening socket for the test's duration."""
    sock = socket.socket()
    sock.bind(("0.0.0.0", 0))
    sock.listen()
    yield int(sock.getsockname()[1])
    sock.close()


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_a_metrics_port_in_use_stops_the_grpc_server_started_before_it(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    monkeypatch.setattr(serving_options, "GrpcServer", RecordingServer)
    RecordingServer.ports.clear()
    parser = argparse.ArgumentParser()
    cmd_run.add_arguments(parser)
    args = parser.parse_args(
        ["--grpc-address", "127.0.0.1:0", "--metrics-port", str(taken_port), "--workers", "0"]
    )
    hooks = cmd_run.serving_hooks(args)
    assert hooks.started is not None
    memo = kopf.Memo()
    with pytest.raises(StartupError, match="--metrics-port"):
        await hooks.started(FakeController(RoutingEngine(Registry())), memo)  # type: ignore[arg-type]
    [grpc_port] = RecordingServer.ports
    assert not _accepts(grpc_port)
    assert "grpc" not in memo


class RecordingController:
    """Stands in for the Controller; records the order of start/stop calls."""

    events: ClassVar[list[str]] = []

    def __init__(self, *_: Any) -> None:
        pass

    async def start(self) -> None:
        RecordingController.events.append("controller started")

    async def stop(self) -> None:
        RecordingController.events.append("controller stopped")


async def test_a_failed_startup_runs_the_stopping_hook_before_stopping_the_controller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "Controller", RecordingController)
    monkeypatch.setattr(handlers, "KubeApi", lambda _: None)
    monkeypatch.setattr(handlers, "load_configuration", lambda _: None)
    RecordingController.events.clear()

    async def fails(*_: Any) -> None:
        raise OSError(98, "Address already in use")

    async def stopping(*_: Any) -> None:
        RecordingController.events.append("hook stopping")

    hooks = handlers.Hooks(started=fails, stopping=stopping)
    registry = handlers.build_registry(ControllerConfig(), hooks)
    [startup] = [h for h in registry._activities.get_all_handlers() if h.activity == "startup"]
    with pytest.raises(OSError, match="in use"):
        await startup.fn(settings=kopf.OperatorSettings(), memo=kopf.Memo())
    assert RecordingController.events == [
        "controller started",
        "hook stopping",
        "controller stopped",
    ]
