"""Route/ReportUsage requests become routing requirements; malformed ones name their field."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from nexus_operator.api import Privacy
from nexus_operator.routing import RequestRequirements
from nexus_operator.serving.proto import router_pb2 as pb
from nexus_operator.serving.requests import (
    InvalidArgument,
    inventory_namespace,
    route_requirements,
    usage_report,
)


def _parts(*parts: pb.ContentPart) -> pb.ChatMessage:
    return pb.ChatMessage(role="user", parts=pb.ContentParts(parts=list(parts)))


def test_tokens_are_the_sum_of_len_over_4_of_each_text_content() -> None:
    request = pb.RouteRequest(
        model="m",
        messages=[
            pb.ChatMessage(role="system", text="a" * 11),
            _parts(
                pb.ContentPart(type="text", text="b" * 7), pb.ContentPart(type="text", text="c" * 9)
            ),
        ],
    )
    assert route_requirements(request).estimated_tokens == 2 + 1 + 2


def test_estimated_tokens_win_over_messages_when_given() -> None:
    request = pb.RouteRequest(
        model="m", estimated_tokens=500, messages=[pb.ChatMessage(text="x" * 40)]
    )
    assert route_requirements(request).estimated_tokens == 500


def test_an_image_part_makes_the_request_need_vision() -> None:
    image = pb.ContentPart(type="image_url", image_url=pb.ImageUrl(url="https://example.com/a.png"))
    assert route_requirements(pb.RouteRequest(model="m", messages=[_parts(image)])).needs_vision


def test_unset_optional_fields_stay_none_and_namespace_defaults() -> None:
    requirements = route_requirements(pb.RouteRequest(model="m"))
    assert (requirements.max_output_tokens, requirements.min_tier, requirements.privacy) == (
        None,
        None,
        None,
    )
    assert requirements.namespace == "default"


def test_a_request_without_id_gets_a_fresh_server_assigned_one() -> None:
    first = route_requirements(pb.RouteRequest(model="m")).request_id
    second = route_requirements(pb.RouteRequest(model="m")).request_id
    assert first is not None
    assert second is not None
    assert len(first) == 32
    assert int(first, 16) >= 0
    assert first != second
    assert route_requirements(pb.RouteRequest(model="m", request_id="mine")).request_id == "mine"


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ({"model": "chosen"}, {"model": "chosen"}),
        ({"estimated_tokens": 123}, {"estimated_tokens": 123}),
        ({"needs_vision": True}, {"needs_vision": True}),
        ({"needs_tools": True}, {"needs_tools": True}),
        ({"needs_json_mode": True}, {"needs_json_mode": True}),
        ({"max_output_tokens": 7}, {"max_output_tokens": 7}),
        ({"privacy": pb.PRIVACY_UNRESTRICTED}, {"privacy": Privacy.UNRESTRICTED}),
        ({"min_tier": 2}, {"min_tier": 2}),
        ({"strict": True}, {"strict": True}),
        ({"namespace": "team"}, {"namespace": "team"}),
        ({"request_id": "r-9"}, {"request_id": "r-9"}),
    ],
)
def test_each_request_field_reaches_its_requirement(
    request_fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    """One field at a time: nothing else moves from its default."""
    fields = {"model": "m", "request_id": "r", **request_fields}
    made = route_requirements(pb.RouteRequest(**fields))
    defaults = RequestRequirements(model="m", request_id="r")
    assert made == dataclasses.replace(defaults, **expected)


def test_privacy_and_tier_are_carried_over() -> None:
    requirements = route_requirements(
        pb.RouteRequest(model="m", privacy=pb.PRIVACY_RESTRICTED, min_tier=4, max_output_tokens=64)
    )
    assert (requirements.privacy, requirements.min_tier, requirements.max_output_tokens) == (
        Privacy.RESTRICTED,
        4,
        64,
    )


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"model": " padded "}, "model"),
        ({"model": "m\n"}, "model"),
        ({"model": "m", "messages": [pb.ChatMessage(role="r" * 65)]}, "messages[0].role"),
        (
            {"model": "m", "messages": [_parts(pb.ContentPart(type="image_url"))]},
            "messages[0].content.parts[0].image_url.url",
        ),
        ({"model": "m", "min_tier": -1}, "min_tier"),
    ],
)
def test_malformed_fields_are_named_in_the_error(
    request_fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        route_requirements(pb.RouteRequest(**request_fields))
    assert caught.value.field == field


def test_usage_report_keeps_absent_amounts_absent() -> None:
    report = usage_report(
        pb.UsageReport(backend="b", model="m", input_tokens=3, output_tokens=4, success=True)
    )
    assert (report.cost_usd, report.latency_ms, report.ttft_ms, report.policy) == (
        None,
        None,
        None,
        None,
    )
    assert (report.namespace, report.input_tokens, report.output_tokens) == ("default", 3, 4)


def test_usage_report_with_an_invalid_backend_name_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        usage_report(pb.UsageReport(backend="Not/A/Name", model="m"))
    assert caught.value.field == "backend"


@pytest.mark.parametrize(
    ("field", "value"),
    [("cost_usd", 1e308), ("cost_usd", 1e6 + 1), ("latency_ms", 1e308), ("ttft_ms", 3.6e6 + 1)],
)
def test_usage_report_with_an_implausibly_large_amount_is_refused(field: str, value: float) -> None:
    amount: dict[str, Any] = {field: value}
    with pytest.raises(InvalidArgument) as caught:
        usage_report(pb.UsageReport(backend="b", model="m", **amount))
    assert caught.value.field == field


def test_usage_report_accepts_amounts_at_their_bounds() -> None:
    report = usage_report(
        pb.UsageReport(backend="b", model="m", cost_usd=1e6, latency_ms=3.6e6, ttft_ms=3.6e6)
    )
    assert (report.cost_usd, report.latency_ms, report.ttft_ms) == (1e6, 3.6e6, 3.6e6)


def test_inventory_without_a_namespace_lists_all_and_a_malformed_one_is_refused() -> None:
    assert inventory_namespace(pb.InventoryRequest()) is None
    assert inventory_namespace(pb.InventoryRequest(namespace="team-a")) == "team-a"
    with pytest.raises(InvalidArgument) as caught:
        inventory_namespace(pb.InventoryRequest(namespace="BAD!!"))
    assert caught.value.field == "namespace"


def test_server_assigned_ids_differ_in_a_forked_child() -> None:
    """A forked process draws its own prefix, so two processes never hand out the same id."""
    import os

    parent = route_requirements(pb.RouteRequest(model="m")).request_id
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.write(write, (route_requirements(pb.RouteRequest(model="m")).request_id or "").encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert parent is not None
    assert len(child) == len(parent) == 32
    assert child[:16] != parent[:16]
