"""The metrics a platform team builds dashboards on, scraped from a live server: decisions by
policy, backend, model and outcome; fallbacks; tokens and spend by policy and backend;
build_info. Labels only ever carry names the registry holds, whatever clients send."""

from __future__ import annotations

import platform
import re
from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from nexus_operator import __version__
from nexus_operator.serving import GrpcServer
from nexus_operator.serving.proto import router_pb2 as pb
from nexus_operator.serving.proto import router_pb2_grpc

from .fleet import default_fleet, live_server, policy, registry_of

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def served() -> AsyncIterator[tuple[GrpcServer, router_pb2_grpc.RouterStub]]:
    fleet = [
        *default_fleet(),
        # gpt-4o is served only by an Open-zone backend: restricted, it falls back to mixtral.
        policy("private-gpt", patterns=["gpt-4o"], privacy="restricted", fallbacks=["mixtral"]),
    ]
    async with (
        live_server(registry_of(fleet)) as (server, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield server, router_pb2_grpc.RouterStub(channel)


def _scrape(server: GrpcServer) -> str:
    server.metrics.refresh_gauges()
    scrape = CollectorRegistry()
    scrape.register(server.metrics)
    return str(generate_latest(scrape).decode())


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the series `name` with exactly these labels, None when absent."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))) == labels:
            return float(match.group(2))
    return None


async def test_decisions_are_counted_by_policy_backend_model_and_outcome(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub],
) -> None:
    server, stub = served
    for _ in range(2):
        await stub.Route(pb.RouteRequest(model="mixtral"), timeout=5)
    await stub.Route(pb.RouteRequest(model="gpt-4o"), timeout=5)
    await stub.Route(pb.RouteRequest(model="no-such-model-x1"), timeout=5)
    text = _scrape(server)
    routed = dict(namespace="default", policy="budgeted", model="mixtral", outcome="ROUTED")
    assert _sample(text, "nexus_route_decisions_total", backend="cloud", **routed) == 2.0
    fallback = dict(namespace="default", policy="budgeted", backend="local", outcome="ROUTED")
    assert _sample(text, "nexus_route_decisions_total", model="mixtral", **fallback) == 1.0
    assert _sample(text, "nexus_fallbacks_total", namespace="default", policy="budgeted") == 1.0
    unknown = dict(namespace="default", policy="", backend="", model="", outcome="REJECTED")
    assert _sample(text, "nexus_route_decisions_total", **unknown) == 1.0
    assert "no-such-model-x1" not in text, "client input never becomes a label"


async def test_usage_is_counted_as_tokens_and_spend_by_policy_and_backend(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub],
) -> None:
    server, stub = served

    def report(backend: str = "cloud", cost_usd: float | None = None) -> pb.UsageReport:
        usage = pb.UsageReport(
            backend=backend, model="mixtral", input_tokens=1000, output_tokens=500
        )
        if cost_usd is not None:
            usage.cost_usd = cost_usd
        return usage

    await stub.ReportUsage(report(cost_usd=0.25), timeout=5)
    await stub.ReportUsage(report(), timeout=5)  # priced: 0.01 per 1k tokens each way
    await stub.ReportUsage(report("typo"), timeout=5)
    text = _scrape(server)
    where = dict(namespace="default", policy="budgeted", backend="cloud")
    assert _sample(text, "nexus_usage_tokens_total", direction="input", **where) == 2000.0
    assert _sample(text, "nexus_usage_tokens_total", direction="output", **where) == 1000.0
    spend = _sample(text, "nexus_usage_spend_usd_total", **where)
    assert spend == pytest.approx(0.25 + 0.015)
    assert "typo" not in text


async def test_build_info_names_the_version(
    served: tuple[GrpcServer, router_pb2_grpc.RouterStub],
) -> None:
    server, _ = served
    labels = dict(version=__version__, python_version=platform.python_version())
    assert _sample(_scrape(server), "nexus_build_info", **labels) == 1.0
