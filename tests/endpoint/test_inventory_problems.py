"""GetInventory and `nexusctl get` say why a policy cannot route and which plug-ins are missing,
as the policy's status conditions do (live loopback server, real nexusctl main)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from nexus_operator.cli import ctl_views
from nexus_operator.serving.proto import router_pb2 as pb
from nexus_operator.serving.proto import router_pb2_grpc

from .fleet import default_fleet, live_server, policy, registry_of

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def stub() -> AsyncIterator[router_pb2_grpc.RouterStub]:
    fleet = [
        *default_fleet(),
        policy("nobody", patterns=["qwen*"], backendSelector={"matchLabels": {"team": "none"}}),
        policy("missing-plugin", patterns=["gpt-4o"], reconcilers=[{"name": "no-such-plugin"}]),
    ]
    async with (
        live_server(registry_of(fleet)) as (_, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield router_pb2_grpc.RouterStub(channel)


async def test_inventory_names_problems_and_unavailable_plugins(
    stub: router_pb2_grpc.RouterStub,
) -> None:
    inventory = await stub.GetInventory(pb.InventoryRequest(), timeout=5)
    policies = {p.name: p for p in inventory.policies}
    assert policies["nobody"].problem.startswith("SelectorMatchesNothing: ")
    assert list(policies["missing-plugin"].unavailable_reconcilers) == [
        "no-such-plugin: no reconciler registered as 'no-such-plugin'"
    ]
    assert policies["budgeted"].problem == ""
    assert list(policies["budgeted"].unavailable_reconcilers) == []
    table = ctl_views.inventory_view(inventory, kinds=("policies",))
    assert "PROBLEM" in table
    assert "SelectorMatchesNothing" in table
    assert "plugin no-such-plugin unavailable" in table
