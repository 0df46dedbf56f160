"""Hostile and broken clients exhaust only their own share: stalled streams, undecodable bytes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, generate_latest

from nexus_operator.routing import Registry
from nexus_operator.serving import SERVICE_NAME, GrpcServer, ServerLimits
from nexus_operator.serving.proto import router_pb2 as pb
from nexus_operator.serving.proto import router_pb2_grpc

from .fleet import default_fleet, live_server, registry_of

pytestmark = pytest.mark.timeout(300)

ROUTE = f"/{SERVICE_NAME}/Route"
STALLED_CHANNELS = 12
STREAMS_PER_CHANNEL = 100
STALLED_AT_LEAST = 1100  # above the 1,000 admitted-call cap (a few of 1,200 may still be queued)


@pytest.fixture
def registry() -> Registry:
    return registry_of(default_fleet())


def _own_connection(address: str) -> grpc.aio.Channel:
    """A channel on its own TCP connection (channels in one process otherwise share one)."""
    return grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


async def _never(stop: asyncio.Event) -> AsyncIterator[bytes]:
    """A request stream that sends headers and then nothing until `stop`."""
    await stop.wait()
    if False:  # pragma: no cover - makes this an async generator
        yield b""


async def _until(predicate: object, what: str) -> None:
    for _ in range(600):
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached: {what}")


async def _scrape(server: GrpcServer) -> str:
    scrape = CollectorRegistry()
    scrape.register(server.metrics)
    text: str = generate_latest(scrape).decode()
    return text


async def test_stalled_streams_from_one_client_do_not_starve_another_clients_routes(
    registry: Registry,
) -> None:
    limits = ServerLimits(request_read_timeout_s=120.0)
    stop = asyncio.Event()
    hostile: list[grpc.aio.StreamUnaryCall[bytes, bytes]] = []
    async with live_server(registry, limits=limits) as (server, address):
        channels = [_own_connection(address) for _ in range(STALLED_CHANNELS)]
        try:
            for channel in channels:
                method = channel.stream_unary(ROUTE)
                hostile.extend(method(_never(stop)) for _ in range(STREAMS_PER_CHANNEL))
            await _until(
                lambda: server.guard.reading >= STALLED_AT_LEAST,
                f"{STALLED_AT_LEAST} stalled streams",
            )
            async with _own_connection(address) as legit:
                stub = router_pb2_grpc.RouterStub(legit)
                # One call first, so the client knows the server's stream cap before it
                # multiplexes (streams opened before SETTINGS arrive may be refused).
                await stub.Route(pb.RouteRequest(model="mixtral"), timeout=30)
                answers = await asyncio.gather(
                    *(stub.Route(pb.RouteRequest(model="mixtral"), timeout=30) for _ in range(300)),
                    return_exceptions=True,
                )
            failures = [a for a in answers if isinstance(a, BaseException)]
            assert failures == []
            assert all(
                a.outcome == pb.OUTCOME_ROUTED for a in answers if isinstance(a, pb.RouteResponse)
            )
        finally:
            for call in hostile:
                call.cancel()
            stop.set()
            for channel in channels:
                await channel.close()


async def test_one_connection_holds_at_most_its_stream_cap(registry: Registry) -> None:
    limits = ServerLimits(max_streams_per_connection=20, request_read_timeout_s=120.0)
    stop = asyncio.Event()
    async with (
        live_server(registry, limits=limits) as (server, address),
        _own_connection(address) as channel,
    ):
        method = channel.stream_unary(ROUTE)
        calls = [method(_never(stop)) for _ in range(60)]
        await _until(lambda: server.guard.reading >= 20, "20 stalled streams")
        # A call on another connection completes, so any stream beyond the cap would have
        # had time to arrive: the 40 others wait in the client, not on the server.
        async with _own_connection(address) as other:
            stub = router_pb2_grpc.RouterStub(other)
            await stub.Route(pb.RouteRequest(model="mixtral"), timeout=10)
        assert server.guard.reading == 20
        for call in calls:
            call.cancel()
        stop.set()


async def test_a_request_never_delivered_ends_at_the_read_deadline(registry: Registry) -> None:
    limits = ServerLimits(request_read_timeout_s=0.2)
    stop = asyncio.Event()
    async with (
        live_server(registry, limits=limits) as (server, address),
        _own_connection(address) as channel,
    ):
        call = channel.stream_unary(ROUTE)(_never(stop))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        stop.set()
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert server.guard.reading == 0
        text = await _scrape(server)
    assert 'nexus_grpc_errors_total{code="DEADLINE_EXCEEDED",method="Route"} 1.0' in text


async def test_undecodable_payloads_are_invalid_argument_counted_and_logged_once_per_burst(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nexus_operator.serving.limits")
    garbage = [
        b"\xff\xff\xff\xff",
        b"\x0a\x80",
        b"\x12\x05abc",
        b"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80",
    ]
    async with (
        live_server(registry) as (server, address),
        _own_connection(address) as channel,
    ):
        raw = channel.unary_unary(ROUTE)
        codes = []
        for payload in garbage * 10:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw(payload, timeout=5)
            codes.append(caught.value.code())
        health = health_pb2_grpc.HealthStub(channel)
        status = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        routed = await router_pb2_grpc.RouterStub(channel).Route(
            pb.RouteRequest(model="mixtral"), timeout=5
        )
        text = await _scrape(server)
    assert set(codes) == {grpc.StatusCode.INVALID_ARGUMENT}
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert routed.outcome == pb.OUTCOME_ROUTED
    assert (
        f'nexus_grpc_errors_total{{code="INVALID_ARGUMENT",method="Route"}} {len(codes)}.0' in text
    )
    lines = [r for r in caplog.records if r.name == "nexus_operator.serving.limits"]
    assert len(lines) == 1
    assert "\n" not in lines[0].getMessage()
