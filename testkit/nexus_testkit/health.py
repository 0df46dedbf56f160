"""Waiting for a gRPC server's grpc.health.v1 to report SERVING (operators, pickers, benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def until_serving(
    channel: grpc.Channel,
    *,
    limit_s: float,
    service: str = "",
    period_s: float = 0.05,
    still_running: Callable[[], None] = lambda: None,
) -> bool:
    """Poll `service`'s health over `channel` every `period_s` seconds: True once it is
    SERVING, False when `limit_s` seconds passed first. `still_running` is called before each
    check and raises the caller's own error when the server process has already exited."""
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        still_running()
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return True
        except grpc.RpcError:
            pass
        time.sleep(period_s)
    return False
