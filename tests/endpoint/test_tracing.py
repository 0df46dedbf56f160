"""OpenTelemetry decision traces: off without configuration; with the standard OTLP environment
a live server exports one span per Route and a child per reconciler, received here by a real
OTLP/gRPC trace collector endpoint (the opentelemetry-proto service, in-process)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from nexus_operator.routing import RequestRequirements, RoutingEngine
from nexus_operator.serving import tracing
from nexus_operator.serving.proto import router_pb2 as pb
from nexus_operator.serving.proto import router_pb2_grpc

from .fleet import default_fleet, live_server, registry_of

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_off_unless_the_environment_asks_for_otlp(
    environ: dict[str, str], on: bool
) -> None:
    assert tracing.requested(environ) is on
    tracer = tracing.from_environment(environ)
    assert (tracer is not None) is on
    if tracer is not None:
        tracer.shutdown()


def test_a_decision_becomes_a_span_with_a_child_per_reconciler_in_order() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = RoutingEngine(registry_of(default_fleet()))
    decision = engine.route(RequestRequirements(model="mixtral", request_id="r-1"))
    start = time.time_ns()
    tracing.DecisionTracer(provider).record(
        decision, method="Route", namespace="default", started_ns=start, ended_ns=time.time_ns()
    )
    spans = exporter.get_finished_spans()
    (parent,) = [s for s in spans if s.name == "nexus.Route"]
    children = sorted((s for s in spans if s.parent is not None), key=lambda s: s.start_time or 0)
    assert [s.name for s in children] == [entry.reconciler for entry in decision.trace]
    assert {s.parent.span_id for s in children if s.parent} == {parent.context.span_id}
    assert parent.attributes is not None
    assert parent.attributes["nexus.outcome"] == "ROUTED"
    assert parent.attributes["nexus.request_id"] == "r-1"
    assert decision.backend is not None
    assert parent.attributes["nexus.backend"] == decision.backend.name
    for earlier, later in itertools.pairwise(children):
        assert earlier.end_time == later.start_time


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def collector() -> AsyncIterator[tuple[_Collector, int]]:
    server = grpc.aio.server()
    sink = _Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield sink, port
    finally:
        await server.stop(0)


@pytest.fixture
def otlp_environment(
    collector: tuple[_Collector, int], monkeypatch: pytest.MonkeyPatch
) -> _Collector:
    sink, port = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "nexus-test")
    return sink


async def test_a_live_server_exports_route_spans_over_otlp(otlp_environment: _Collector) -> None:
    async with (
        live_server(registry_of(default_fleet())) as (_, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        stub = router_pb2_grpc.RouterStub(channel)
        await stub.Route(pb.RouteRequest(model="mixtral", request_id="traced-1"), timeout=5)
        deadline = time.monotonic() + 30
        while not any(s.name == "nexus.Route" for s in otlp_environment.spans):
            assert time.monotonic() < deadline, "no span exported"
            await asyncio.sleep(0.05)
    names = [s.name for s in otlp_environment.spans]
    assert "RequestAnalyzer" in names
    assert "SelectionReconciler" in names
    (route,) = [s for s in otlp_environment.spans if s.name == "nexus.Route"]
    attributes = {a.key: a.value.string_value for a in route.attributes}
    assert attributes["nexus.request_id"] == "traced-1"
