"""EPP wire details: streamed body framing, subset hints, served endpoint, error bodies."""

from __future__ import annotations

import json

import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

from nexus_operator.api import BudgetState
from nexus_operator.pipeline import Exclusion
from nexus_operator.routing import Decision, Outcome
from nexus_operator.serving.gateway import wire
from nexus_operator.serving.gateway.errors import GatewayError, decision_error


def streamed(body: bytes) -> list[tuple[bytes, bool]]:
    return [
        (
            r.request_body.response.body_mutation.streamed_response.body,
            r.request_body.response.body_mutation.streamed_response.end_of_stream,
        )
        for r in wire.streamed_request_body(body)
    ]


@pytest.mark.parametrize(
    ("size", "chunks"), [(0, 1), (1, 1), (62_000, 1), (62_001, 2), (124_000, 2), (124_001, 3)]
)
def test_streamed_bodies_are_cut_at_62000_bytes_with_end_of_stream_on_the_last(
    size: int, chunks: int
) -> None:
    body = bytes(i % 251 for i in range(size))
    parts = streamed(body)
    assert len(parts) == chunks
    assert b"".join(p for p, _ in parts) == body
    assert [eos for _, eos in parts] == [False] * (chunks - 1) + [True]


def test_an_echoed_response_chunk_keeps_its_end_of_stream() -> None:
    [answer] = wire.streamed_response_body(b"abc", end_of_stream=False)
    chunk = answer.response_body.response.body_mutation.streamed_response
    assert (chunk.body, chunk.end_of_stream) == (b"abc", False)


def with_subset(value: object) -> ext.ProcessingRequest:
    request = ext.ProcessingRequest()
    field = request.metadata_context.filter_metadata[wire.SUBSET_NAMESPACE].fields[wire.SUBSET_KEY]
    if isinstance(value, str):
        field.string_value = value
    else:
        assert isinstance(value, list)
        for item in value:
            field.list_value.values.add().string_value = item
    return request


def test_subset_hints_come_as_lists_or_comma_separated_strings() -> None:
    both = frozenset({"1.1.1.1:80", "2.2.2.2:80"})
    assert wire.subset_hint(with_subset(["1.1.1.1:80", "2.2.2.2:80"])) == both
    assert wire.subset_hint(with_subset(" 1.1.1.1:80 ,2.2.2.2:80,")) == both
    assert wire.subset_hint(with_subset([])) == frozenset()
    assert wire.subset_hint(ext.ProcessingRequest()) is None


def test_the_served_endpoint_is_read_from_envoy_lb() -> None:
    request = ext.ProcessingRequest()
    lb = request.metadata_context.filter_metadata[wire.DESTINATION_NAMESPACE]
    lb.fields[wire.SERVED_KEY].string_value = "10.0.0.1:8000"
    assert wire.served_endpoint(request) == "10.0.0.1:8000"
    assert wire.served_endpoint(ext.ProcessingRequest()) is None


def test_the_destination_is_in_the_header_and_the_metadata_alike() -> None:
    answer = wire.routed_request_headers(
        [(wire.DESTINATION_KEY, "10.0.0.1:8000")], endpoint="10.0.0.1:8000"
    )
    [option] = answer.request_headers.response.header_mutation.set_headers
    metadata = answer.dynamic_metadata.fields["envoy.lb"].struct_value.fields
    assert (option.header.key, option.header.raw_value) == (
        "x-gateway-destination-endpoint",
        b"10.0.0.1:8000",
    )
    assert metadata["x-gateway-destination-endpoint"].string_value == "10.0.0.1:8000"
    assert answer.request_headers.response.clear_route_cache


def decision(outcome: Outcome, reason: str, **fields: object) -> Decision:
    return Decision(outcome=outcome, model="m", reason=reason, policy="p", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("model_not_found", 404),
        ("alias_cycle", 404),
        ("no_eligible_backends", 503),
        ("reconciler_failed", 503),
    ],
)
def test_rejections_map_to_statuses(reason: str, status: int) -> None:
    assert decision_error(decision(Outcome.REJECTED, reason)).status == status


@pytest.mark.parametrize(("wait_ms", "seconds"), [(0, 1), (1, 1), (1000, 1), (1001, 2), (4500, 5)])
def test_queue_is_429_with_retry_after_rounded_up(wait_ms: int, seconds: int) -> None:
    error = decision_error(decision(Outcome.QUEUED, "at_capacity", retry_after_ms=wait_ms))
    assert (error.status, error.retry_after_s, error.type) == (429, seconds, "rate_limit_error")


def test_the_error_body_is_openai_shaped_with_the_exclusions() -> None:
    exclusion = Exclusion(
        backend="b",
        reconciler="CapabilityReconciler",
        reason_code="tier_too_low",
        reason="tier 1 < 3",
        suggested_action="use a higher tier",
        required_tier=3,
    )
    error = decision_error(
        decision(
            Outcome.REJECTED,
            "no_eligible_backends",
            rejections=[exclusion],
            budget_state=BudgetState.SOFT_LIMIT,
        )
    )
    body = json.loads(error.body())["error"]
    assert set(body) == {"message", "type", "code", "param", "nexus"}
    assert body["nexus"] == {
        "outcome": "REJECTED",
        "policy": "p",
        "reasonCode": "no_eligible_backends",
        "model": "m",
        "budgetState": "SoftLimit",
        "exclusions": [
            {
                "backend": "b",
                "reconciler": "CapabilityReconciler",
                "reasonCode": "tier_too_low",
                "reason": "tier 1 < 3",
                "suggestedAction": "use a higher tier",
                "requiredTier": 3,
            }
        ],
    }


def test_gateway_errors_of_the_request_itself_say_invalid() -> None:
    body = json.loads(GatewayError(413, "request_too_large", "too big").body())["error"]
    assert body["nexus"] == {"outcome": "INVALID", "reasonCode": "request_too_large"}
    assert body["type"] == "invalid_request_error"


def test_an_immediate_response_is_json_with_the_extra_headers() -> None:
    answer = wire.immediate(429, b"{}", headers={"retry-after": "2"}, details="at_capacity")
    immediate = answer.immediate_response
    headers = {h.header.key: h.header.raw_value for h in immediate.headers.set_headers}
    assert immediate.status.code == 429
    assert headers == {"content-type": b"application/json", "retry-after": b"2"}
