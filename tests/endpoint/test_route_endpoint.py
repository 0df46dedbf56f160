"""Route, Explain, ReportUsage, GetInventory and health over a live loopback server (Python client)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, generate_latest

from nexus_operator.pipeline import ReconcileErrorPolicy, RoutingIntent
from nexus_operator.routing import Registry, RoutingEngine
from nexus_operator.serving import SERVICE_NAME, GrpcServer, service
from nexus_operator.serving.proto import router_pb2 as pb
from nexus_operator.serving.proto import router_pb2_grpc

from .fleet import BUDGET_LIMIT_USD, default_fleet, live_server, policy, registry_of

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def registry() -> Registry:
    return registry_of(default_fleet())


@pytest.fixture
async def served(
    registry: Registry,
) -> AsyncIterator[tuple[GrpcServer, router_pb2_grpc.RouterStub]]:
    async with (
        live_server(registry) as (server, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield server, router_pb2_grpc.RouterStub(channel)


async def test_route_picks_the_preferred_backend_and_names_the_policy(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub],
) -> None:
    _, stub = served
    response = await stub.Route(pb.RouteRequest(model="mixtral", estimated_tokens=100), timeout=5)
    assert response.outcome == pb.OUTCOME_ROUTED
    assert (response.backend.name, response.backend.zone, response.backend.type) == (
        "cloud",
        "Open",
        "openai",
    )
    assert response.policy == "budgeted"
    assert response.budget_state == pb.BUDGET_STATE_NORMAL
    assert response.reason.startswith("highest_score:cloud:")
    assert response.cost_estimate > 0


async def test_restricted_request_excludes_open_backends_with_the_zone_it_needed(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub],
) -> None:
    _, stub = served
    explained = await stub.Explain(
        pb.RouteRequest(model="mixtral", privacy=pb.PRIVACY_RESTRICTED), timeout=5
    )
    assert explained.decision.backend.name == "local"
    privacy = [e for e in explained.exclusions if e.backend == "cloud"]
    assert [e.reconciler for e in privacy] == ["PrivacyReconciler"]
    assert privacy[0].privacy_zone_required == "Restricted"


async def test_tier_rejection_carries_the_required_tier(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub],
) -> None:
    _, stub = served
    response = await stub.Route(pb.RouteRequest(model="llama3:8b", min_tier=3), timeout=5)
    assert response.outcome == pb.OUTCOME_REJECTED
    tiers = {r.backend: r.required_tier for r in response.rejections if r.HasField("required_tier")}
    assert tiers == {"local": 3}


async def test_unknown_model_rejects_with_the_available_models(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub],
) -> None:
    _, stub = served
    response = await stub.Route(pb.RouteRequest(model="no-such-model"), timeout=5)
    assert response.outcome == pb.OUTCOME_REJECTED
    assert [r.reason_code for r in response.rejections] == ["model_not_found"]
    assert list(response.available_models) == ["gpt-4o", "llama3:70b", "llama3:8b", "mixtral"]


async def test_explain_has_the_per_reconciler_trace(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub],
) -> None:
    _, stub = served
    explained = await stub.Explain(pb.RouteRequest(model="mixtral"), timeout=5)
    names = [t.reconciler for t in explained.trace]
    assert names[0] == "RequestAnalyzer"
    assert names[-1] == "SelectionReconciler"
    assert explained.trace[0].candidates_after == 2


async def test_explain_takes_no_slot_and_route_does_until_usage_is_reported(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub],
) -> None:
    _, stub = served
    for _ in range(3):
        await stub.Explain(pb.RouteRequest(model="llama3:70b"), timeout=5)
    assert await _backend_counts(stub, "big") == (0, 0)
    routed = await stub.Route(pb.RouteRequest(model="llama3:70b", request_id="req-1"), timeout=5)
    assert await _backend_counts(stub, "big") == (1, 1)
    await stub.ReportUsage(
        pb.UsageReport(
            backend="big",
            model="llama3:70b",
            policy=routed.policy,
            input_tokens=10,
            output_tokens=5,
            success=True,
            latency_ms=12.0,
            request_id="req-1",
        ),
        timeout=5,
    )
    assert await _backend_counts(stub, "big") == (0, 1)


async def test_reported_spend_moves_the_budget_from_normal_to_soft_to_hard_limit(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub],
) -> None:
    _, stub = served
    route = pb.RouteRequest(model="mixtral", estimated_tokens=100)
    normal = await stub.Route(route, timeout=5)
    assert (normal.budget_state, normal.backend.name) == (pb.BUDGET_STATE_NORMAL, "cloud")
    await _spend(stub, 0.75 * BUDGET_LIMIT_USD)
    soft = await stub.Route(route, timeout=5)
    # SoftLimit halves Open-zone scores: the local backend now wins.
    assert (soft.budget_state, soft.backend.name) == (pb.BUDGET_STATE_SOFT_LIMIT, "local")
    await _spend(stub, 0.25 * BUDGET_LIMIT_USD)
    hard = await stub.Explain(route, timeout=5)
    assert (hard.decision.budget_state, hard.decision.backend.name) == (
        pb.BUDGET_STATE_HARD_LIMIT,
        "local",
    )
    budget = [e for e in hard.exclusions if e.backend == "cloud"]
    assert [e.reconciler for e in budget] == ["BudgetReconciler"]
    restricted_only = await stub.Route(pb.RouteRequest(model="gpt-4o"), timeout=5)
    assert restricted_only.outcome == pb.OUTCOME_ROUTED  # gpt-4o matches no budgeted policy


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"model": ""}, "model"),
        ({"model": "x" * 300}, "model"),
        ({"model": "mixtral", "estimated_tokens": -1}, "estimated_tokens"),
        ({"model": "mixtral", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "mixtral", "min_tier": 6}, "min_tier"),
        ({"model": "mixtral", "min_tier": 0}, "min_tier"),
        ({"model": "mixtral", "privacy": 7}, "privacy"),
        ({"model": "mixtral", "namespace": "Not_A_Namespace"}, "namespace"),
        ({"model": "mixtral", "request_id": "r" * 129}, "request_id"),
        (
            {
                "model": "mixtral",
                "messages": [
                    pb.ChatMessage(
                        role="user", parts=pb.ContentParts(parts=[pb.ContentPart(type="audio")])
                    )
                ],
            },
            "messages[0].content.parts[0].type",
        ),
    ],
)
async def test_malformed_route_requests_are_invalid_argument_naming_the_field(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub],
    request_fields: dict[str, Any],
    field: str,
) -> None:
    _, stub = served
    details = await _invalid_argument_details(
        stub.Route(pb.RouteRequest(**request_fields), timeout=5)
    )
    assert details.startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("report_fields", "field"),
    [
        ({"model": "mixtral"}, "backend"),
        ({"backend": "cloud", "model": "mixtral", "input_tokens": -5}, "input_tokens"),
        ({"backend": "cloud", "model": "mixtral", "cost_usd": float("nan")}, "cost_usd"),
        ({"backend": "cloud", "model": "mixtral", "latency_ms": -1.0}, "latency_ms"),
    ],
)
async def test_malformed_usage_reports_are_invalid_argument_naming_the_field(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub],
    report_fields: dict[str, Any],
    field: str,
) -> None:
    _, stub = served
    details = await _invalid_argument_details(
        stub.ReportUsage(pb.UsageReport(**report_fields), timeout=5)
    )
    assert details.startswith(f"{field}: ")


async def test_messages_give_the_token_estimate_and_images_need_vision(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub],
) -> None:
    _, stub = served
    image = pb.ContentPart(
        type="image_url", image_url=pb.ImageUrl(url="data:image/png;base64,AAAA")
    )
    request = pb.RouteRequest(
        model="mixtral",
        messages=[
            pb.ChatMessage(
                role="user",
                parts=pb.ContentParts(parts=[pb.ContentPart(type="text", text="x" * 40), image]),
            )
        ],
    )
    explained = await stub.Explain(request, timeout=5)
    # Neither backend lists vision support, so both are excluded by capability.
    assert explained.decision.outcome == pb.OUTCOME_REJECTED
    assert {e.reconciler for e in explained.exclusions} == {"CapabilityReconciler"}


async def test_oversized_requests_are_refused_by_the_message_size_limit(registry: Registry) -> None:
    async with (
        live_server(registry, max_message_bytes=64 * 1024) as (_, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        stub = router_pb2_grpc.RouterStub(channel)
        request = pb.RouteRequest(
            model="mixtral", messages=[pb.ChatMessage(role="user", text="x" * 100_000)]
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Route(request, timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_health_is_not_serving_until_the_registry_is_synced() -> None:
    registry = registry_of(default_fleet())
    registry.synced = False
    async with (
        live_server(registry) as (server, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        assert await _health(health, SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
        registry.synced = True
        assert await _eventually_serving(health, SERVICE_NAME)
        server.set_serving(False)
        await asyncio.sleep(0)
        assert await _health(health, "") == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_metrics_count_route_decisions_by_outcome(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub], registry: Registry
) -> None:
    server, stub = served
    await stub.Route(pb.RouteRequest(model="mixtral"), timeout=5)
    await stub.Route(pb.RouteRequest(model="nope"), timeout=5)
    server.metrics.refresh_gauges()
    scrape = CollectorRegistry()
    scrape.register(server.metrics)
    text = generate_latest(scrape).decode()
    assert 'nexus_decisions_total{outcome="ROUTED"} 1.0' in text
    assert 'nexus_decisions_total{outcome="REJECTED"} 1.0' in text
    assert 'nexus_reconciler_duration_seconds_count{reconciler="RequestAnalyzer"} 2.0' in text
    assert 'nexus_backend_in_flight{backend="cloud",namespace="default"} 1.0' in text
    assert 'nexus_budget_state{namespace="default",policy="budgeted",state="Normal"} 1.0' in text


async def _invalid_argument_details(call: Awaitable[object]) -> str:
    """The details of a call that must fail with INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.details() or ""


async def _backend_counts(stub: router_pb2_grpc.RouterStub, name: str) -> tuple[int, int]:
    inventory = await stub.GetInventory(pb.InventoryRequest(), timeout=5)
    [info] = [b for b in inventory.backends if b.ref.name == name]
    return info.in_flight, info.selected_total


async def _spend(stub: router_pb2_grpc.RouterStub, usd: float) -> None:
    await stub.ReportUsage(
        pb.UsageReport(
            backend="cloud",
            model="mixtral",
            policy="budgeted",
            input_tokens=1,
            output_tokens=1,
            cost_usd=usd,
            success=True,
        ),
        timeout=5,
    )


async def _health(stub: health_pb2_grpc.HealthStub, service: str) -> int:
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(response.status)


async def _eventually_serving(stub: health_pb2_grpc.HealthStub, service: str) -> bool:
    for _ in range(50):
        if await _health(stub, service) == health_pb2.HealthCheckResponse.SERVING:
            return True
        await asyncio.sleep(0.1)
    return False


class _AsyncNoop:
    """An async plug-in: the engine's synchronous path refuses policies that run one."""

    name = "async-noop"
    error_policy = ReconcileErrorPolicy.FAIL_OPEN

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    async def reconcile(self, intent: RoutingIntent) -> None:
        intent.trace("async plug-in ran")


async def test_policies_with_async_plugins_are_routed_through_the_async_path() -> None:
    documents = [
        *default_fleet(),
        policy("plugged", patterns=["llama3:70b"], reconcilers=[{"name": "async-noop"}]),
    ]
    registry = registry_of(documents)
    engine = RoutingEngine(registry, plugins={"async-noop": _AsyncNoop})
    server = GrpcServer(engine, address="127.0.0.1:0", metrics_registry=CollectorRegistry())
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = router_pb2_grpc.RouterStub(channel)
            routed = await stub.Route(pb.RouteRequest(model="llama3:70b"), timeout=5)
            explained = await stub.Explain(pb.RouteRequest(model="llama3:70b"), timeout=5)
    finally:
        await server.stop(0.5)
    assert (routed.outcome, routed.backend.name, routed.policy) == (
        pb.OUTCOME_ROUTED,
        "big",
        "plugged",
    )
    assert "async-noop" in [t.reconciler for t in explained.trace]


async def test_inventory_of_an_invalid_namespace_is_invalid_argument_naming_it(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub],
) -> None:
    _, stub = served
    details = await _invalid_argument_details(
        stub.GetInventory(pb.InventoryRequest(namespace="BAD!!"), timeout=5)
    )
    assert details.startswith("namespace: ")


async def test_a_failing_inventory_is_internal_not_an_unhandled_error(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> pb.Inventory:
        raise RuntimeError("inventory exploded")

    monkeypatch.setattr(service, "inventory", broken)
    _, stub = served
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetInventory(pb.InventoryRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "inventory exploded" not in (caught.value.details() or "")
