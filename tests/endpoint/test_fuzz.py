"""Fuzz the request fields: the server answers OK or INVALID_ARGUMENT, never anything else,
names the offending field, and stays healthy throughout."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus_operator.serving.proto import router_pb2 as pb
from nexus_operator.serving.proto import router_pb2_grpc

from .fleet import default_fleet, live_server, registry_of

pytestmark = pytest.mark.timeout(600)

ROUTE_FIELDS = {f.name for f in pb.RouteRequest.DESCRIPTOR.fields}
USAGE_FIELDS = {f.name for f in pb.UsageReport.DESCRIPTOR.fields}
MODELS = ["mixtral", "llama3:8b", "llama3:70b", "gpt-4o", "unknown-model"]
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """A live server on its own event loop thread, so hypothesis can drive a sync client."""
    ready: list[str] = []
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def run() -> None:
        async with live_server(registry_of(default_fleet())) as (_, bound):
            ready.append(bound)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert started.wait(30)
    yield ready[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)


@pytest.fixture(scope="module")
def channel(address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(address) as opened:
        yield opened


parts = st.builds(
    pb.ContentPart,
    type=st.sampled_from(["text", "image_url", "", "audio"]),
    text=st.text(max_size=200),
    image_url=st.builds(pb.ImageUrl, url=st.text(max_size=30)),
)
messages = st.one_of(
    st.builds(pb.ChatMessage, role=st.text(max_size=70), text=st.text(max_size=400)),
    st.builds(
        pb.ChatMessage,
        role=st.sampled_from(["user", "system"]),
        parts=st.builds(pb.ContentParts, parts=st.lists(parts, max_size=4)),
    ),
)


@st.composite
def any_route_request(draw: st.DrawFn) -> pb.RouteRequest:
    request = pb.RouteRequest(
        model=draw(st.one_of(st.sampled_from(MODELS), st.text(max_size=300))),
        namespace=draw(st.one_of(st.just(""), st.just("default"), st.text(max_size=70))),
        estimated_tokens=draw(st.one_of(st.integers(0, 100_000), INT64)),
        messages=draw(st.lists(messages, max_size=4)),
        needs_vision=draw(st.booleans()),
        needs_tools=draw(st.booleans()),
        needs_json_mode=draw(st.booleans()),
        privacy=pb.Privacy.ValueType(draw(st.integers(min_value=-3, max_value=5))),
        strict=draw(st.booleans()),
        request_id=draw(st.text(max_size=140)),
    )
    if draw(st.booleans()):
        request.max_output_tokens = draw(st.one_of(st.integers(1, 10_000), INT64))
    if draw(st.booleans()):
        request.min_tier = draw(st.one_of(st.integers(1, 5), INT32))
    return request


@st.composite
def valid_route_request(draw: st.DrawFn) -> pb.RouteRequest:
    text_part = st.builds(pb.ContentPart, type=st.just("text"), text=st.text(max_size=200))
    image_part = st.builds(
        pb.ContentPart,
        type=st.just("image_url"),
        image_url=st.builds(pb.ImageUrl, url=st.just("https://example.com/cat.png")),
    )
    request = pb.RouteRequest(
        model=draw(st.sampled_from(MODELS)),
        estimated_tokens=draw(st.integers(0, 100_000)),
        messages=[
            pb.ChatMessage(
                role="user",
                parts=pb.ContentParts(
                    parts=draw(st.lists(st.one_of(text_part, image_part), max_size=3))
                ),
            )
        ],
        needs_tools=draw(st.booleans()),
        privacy=draw(
            st.sampled_from(
                [pb.PRIVACY_UNSPECIFIED, pb.PRIVACY_RESTRICTED, pb.PRIVACY_UNRESTRICTED]
            )
        ),
        strict=draw(st.booleans()),
    )
    if draw(st.booleans()):
        request.max_output_tokens = draw(st.integers(1, 10_000))
    if draw(st.booleans()):
        request.min_tier = draw(st.integers(1, 5))
    return request


usage_reports = st.builds(
    pb.UsageReport,
    backend=st.one_of(st.sampled_from(["cloud", "local", "big", "ghost"]), st.text(max_size=260)),
    namespace=st.one_of(st.just(""), st.text(max_size=70)),
    model=st.one_of(st.sampled_from(MODELS), st.text(max_size=300)),
    policy=st.one_of(st.just(""), st.just("budgeted"), st.text(max_size=30)),
    input_tokens=INT64,
    output_tokens=INT64,
    cost_usd=st.one_of(
        st.floats(min_value=-1.0, max_value=1e-3), st.sampled_from([math.nan, math.inf, -math.inf])
    ),
    success=st.booleans(),
    latency_ms=st.floats(allow_nan=True, allow_infinity=True),
    request_id=st.text(max_size=140),
)

FUZZ = settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _field_named(error: grpc.RpcError, fields: set[str]) -> bool:
    details = error.details() or ""
    field = details.split(":", 1)[0].split("[", 1)[0].split(".", 1)[0]
    return field in fields


def _error_of(call: grpc.UnaryUnaryMultiCallable, request: object) -> grpc.RpcError | None:
    """The RPC's error, or None when it succeeded."""
    try:
        call(request, timeout=10)
    except grpc.RpcError as error:
        return error
    return None


@FUZZ
@given(request=any_route_request())
def test_any_route_request_is_answered_or_invalid_argument_naming_a_field(
    channel: grpc.Channel, request: pb.RouteRequest
) -> None:
    stub = router_pb2_grpc.RouterStub(channel)
    for call in (stub.Route, stub.Explain):
        error = _error_of(call, request)
        if error is not None:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert _field_named(error, ROUTE_FIELDS), error.details()


@FUZZ
@given(request=valid_route_request())
def test_valid_route_requests_always_get_a_decision(
    channel: grpc.Channel, request: pb.RouteRequest
) -> None:
    response = router_pb2_grpc.RouterStub(channel).Route(request, timeout=10)
    assert response.outcome in (pb.OUTCOME_ROUTED, pb.OUTCOME_QUEUED, pb.OUTCOME_REJECTED)


@settings(FUZZ, max_examples=800)
@given(report=usage_reports)
def test_any_usage_report_is_acknowledged_or_invalid_argument_naming_a_field(
    channel: grpc.Channel, report: pb.UsageReport
) -> None:
    error = _error_of(router_pb2_grpc.RouterStub(channel).ReportUsage, report)
    if error is not None:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert _field_named(error, USAGE_FIELDS), error.details()


def test_server_is_still_serving_after_the_fuzzing(channel: grpc.Channel) -> None:
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=5
    )
    assert response.status == health_pb2.HealthCheckResponse.SERVING
