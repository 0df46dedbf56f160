"""Over a live loopback server: a Route without request_id gets a server-assigned one that a
later ReportUsage frees the slot with, and a usage report for a Backend the namespace does not
hold says so (accepted=false) instead of being silently ignored."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from nexus_operator.serving.proto import router_pb2 as pb
from nexus_operator.serving.proto import router_pb2_grpc

from .fleet import default_fleet, live_server, registry_of

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def stub() -> AsyncIterator[router_pb2_grpc.RouterStub]:
    async with (
        live_server(registry_of(default_fleet())) as (_, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield router_pb2_grpc.RouterStub(channel)


async def _in_flight(stub: router_pb2_grpc.RouterStub, backend: str) -> int:
    inventory = await stub.GetInventory(pb.InventoryRequest(), timeout=5)
    return int(next(b.in_flight for b in inventory.backends if b.ref.name == backend))


async def test_route_without_request_id_gets_one_that_frees_its_slot(
    stub: router_pb2_grpc.RouterStub,
) -> None:
    first = await stub.Route(pb.RouteRequest(model="llama3:70b"), timeout=5)
    second = await stub.Route(pb.RouteRequest(model="llama3:70b"), timeout=5)
    assert first.outcome == pb.OUTCOME_ROUTED
    assert first.request_id
    assert second.request_id
    assert first.request_id != second.request_id
    backend = first.backend.name
    assert await _in_flight(stub, backend) == 2
    ack = await stub.ReportUsage(
        pb.UsageReport(backend=backend, model="llama3:70b", request_id=first.request_id),
        timeout=5,
    )
    assert ack.accepted
    assert await _in_flight(stub, backend) == 1


async def test_explain_echoes_the_clients_request_id(stub: router_pb2_grpc.RouterStub) -> None:
    explained = await stub.Explain(pb.RouteRequest(model="llama3:70b", request_id="r-9"), timeout=5)
    assert explained.decision.request_id == "r-9"


async def test_usage_for_an_unknown_backend_is_not_accepted(
    stub: router_pb2_grpc.RouterStub,
) -> None:
    ack = await stub.ReportUsage(
        pb.UsageReport(backend="no-such-backend", model="llama3:70b", cost_usd=1.0), timeout=5
    )
    assert not ack.accepted
    other_namespace = await stub.ReportUsage(
        pb.UsageReport(backend="big", namespace="elsewhere", model="llama3:70b"), timeout=5
    )
    assert not other_namespace.accepted
    known = await stub.ReportUsage(pb.UsageReport(backend="big", model="llama3:70b"), timeout=5)
    assert known.accepted
