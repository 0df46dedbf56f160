"""Through a real Envoy and the picker, with the OpenAI SDK: requests reach the backend the
policy picks, in both body modes; refusals come back in OpenAI's error format."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionUserMessageParam,
)

from nexus_operator.cli.cmd_envoy_config import EnvoyOptions
from nexus_testkit.localcluster.standins import NAME_HEADER, StandIns

from .conftest import BODY_MODES, HELLO, Gateway, backend, held_stream, policy, run_gateway

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

IMAGE: ChatCompletionUserMessageParam = {
    "role": "user",
    "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ],
}
TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


class Fleet:
    """Three stand-ins: local-chat (Restricted, chat-model and a plain shared-model),
    local-vision (Restricted, shared-model with vision and tools) and open-chat (Open zone,
    open-model only)."""

    def __init__(self, servers: StandIns) -> None:
        self.chat = servers.start("openai", ("chat-model", "shared-model"), name="local-chat")
        self.vision = servers.start("ollama", ("shared-model",), name="local-vision")
        self.open = servers.start("openai", ("open-model",), name="open-chat")

    def documents(self) -> list[dict[str, Any]]:
        return [
            backend(
                "local-chat",
                self.chat,
                [{"id": "chat-model", "supportsTools": True}, {"id": "shared-model"}],
            ),
            backend(
                "local-vision",
                self.vision,
                [{"id": "shared-model", "supportsVision": True, "supportsTools": True}],
                kind="ollama",
            ),
            backend("open-chat", self.open, [{"id": "open-model"}], kind="generic", zone="Open"),
            policy("catch-all", ["*"], precedence=9000, aliases={"fast": "chat-model"}),
            policy("retired", ["retired-*"], precedence=100, fallbacks=["chat-model"]),
        ]


@pytest.fixture(scope="module")
def fleet(stand_ins: StandIns) -> Fleet:
    return Fleet(stand_ins)


# Every body mode, and buffered with `envoy-config --skip-response-headers` (the picker then
# sees no response headers: client headers come from its metadata, status from an attribute).
GATEWAYS = [*BODY_MODES, "buffered-skip-response-headers"]


@pytest.fixture(scope="module", params=GATEWAYS)
def gateway(
    request: pytest.FixtureRequest, fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp(f"gateway-{request.param}")
    skip = request.param.endswith("-skip-response-headers")
    body_mode = request.param.removesuffix("-skip-response-headers")
    options = EnvoyOptions(skip_response_headers=skip)
    with run_gateway(workdir, fleet.documents(), body_mode=body_mode, options=options) as running:
        yield running


def served_by(response: Any) -> str:
    return str(response.headers.get(NAME_HEADER))


def error_body(error: openai.APIStatusError) -> dict[str, Any]:
    body = error.response.json()
    assert isinstance(body, dict)
    return body


def test_non_streaming_completion_reaches_the_backend_the_policy_picks(
    gateway: Gateway, fleet: Fleet
) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="chat-model", messages=HELLO
    )
    completion = raw.parse()
    assert served_by(raw) == "local-chat"
    assert raw.headers["x-nexus-backend"] == "default/local-chat"
    assert raw.headers["x-nexus-policy"].endswith("catch-all")
    assert raw.headers["x-nexus-route-reason"]
    assert completion.model == "chat-model"
    assert completion.choices[0].message.content
    assert completion.choices[0].message.content.startswith("hello from local-chat")
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0


def test_streaming_completion_arrives_in_chunks_and_ends_with_usage(
    gateway: Gateway, fleet: Fleet
) -> None:
    with gateway.client().chat.completions.with_streaming_response.create(
        model="chat-model",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    ) as raw:
        assert served_by(raw) == "local-chat"
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("hello from local-chat")
    assert len(chunks) > 2
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_legacy_completions_path_is_routed_too(gateway: Gateway) -> None:
    raw = gateway.client().completions.with_raw_response.create(model="chat-model", prompt="Hi")
    assert served_by(raw) == "local-chat"
    assert raw.parse().choices[0].text.startswith("hello from local-chat")


def test_vision_request_reaches_the_vision_capable_backend(gateway: Gateway) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="shared-model",
        messages=[IMAGE],
    )
    assert served_by(raw) == "local-vision"


def test_tools_request_reaches_the_tools_capable_backend(gateway: Gateway) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="shared-model",
        messages=HELLO,
        tools=[TOOL],
    )
    assert served_by(raw) == "local-vision"


def test_alias_reaches_the_upstream_with_the_rewritten_model(
    gateway: Gateway, fleet: Fleet
) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(model="fast", messages=HELLO)
    assert served_by(raw) == "local-chat"
    assert fleet.chat.received[-1].model == "chat-model"
    assert raw.headers["x-nexus-model"] == "chat-model"


def test_fallback_reaches_the_upstream_with_the_fallback_model(
    gateway: Gateway, fleet: Fleet
) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="retired-model", messages=HELLO, stream=False
    )
    assert served_by(raw) == "local-chat"
    assert fleet.chat.received[-1].model == "chat-model"
    assert raw.headers.get("x-nexus-fallback") == "true"


def test_streamed_request_with_a_rewritten_model_keeps_its_framing(
    gateway: Gateway, fleet: Fleet
) -> None:
    """The rewritten body is shorter than the original: Envoy must forward it whole."""
    stream = gateway.client().chat.completions.create(
        model="fast", messages=HELLO, stream=True, max_tokens=7
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert fleet.chat.received[-1].body["max_tokens"] == 7
    assert fleet.chat.received[-1].model == "chat-model"


def test_restricted_request_never_reaches_an_open_backend(gateway: Gateway, fleet: Fleet) -> None:
    before = len(fleet.open.received)
    client = gateway.client(**{"x-nexus-privacy": "restricted"})
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="open-model", messages=HELLO)
    assert refused.value.status_code == 503
    assert len(fleet.open.received) == before
    error = error_body(refused.value)["error"]
    exclusions = error["nexus"]["exclusions"]
    assert any(e["backend"].endswith("open-chat") for e in exclusions), exclusions
    assert all(e["reasonCode"] and e["reason"] for e in exclusions)


def test_a_minimum_tier_header_tightens_the_policy(gateway: Gateway, fleet: Fleet) -> None:
    before = len(fleet.chat.received)
    with pytest.raises(openai.APIStatusError) as refused:
        gateway.client(**{"x-nexus-min-tier": "5"}).chat.completions.create(
            model="chat-model", messages=HELLO
        )
    assert refused.value.status_code == 503
    assert len(fleet.chat.received) == before


def test_a_malformed_tightening_header_is_400_naming_it(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        gateway.client(**{"x-nexus-min-tier": "lots"}).chat.completions.create(
            model="chat-model", messages=HELLO
        )
    assert "x-nexus-min-tier" in refused.value.response.text


def test_unknown_model_is_404_in_openai_error_format(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as refused:
        gateway.client().chat.completions.create(model="no-such-model", messages=HELLO)
    error = error_body(refused.value)["error"]
    assert set(error) >= {"message", "type", "code", "param"}
    assert error["code"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b'{"messages": []}', 400),
    ],
    ids=["not-json", "no-model"],
)
def test_bad_request_bodies_are_refused_in_openai_error_format(
    gateway: Gateway, fleet: Fleet, body: bytes, status: int
) -> None:
    before = len(fleet.chat.received)
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == status
    assert "error" in response.json()
    assert len(fleet.chat.received) == before


def test_client_supplied_destination_header_cannot_pick_the_upstream(
    gateway: Gateway, fleet: Fleet
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "chat-model", "messages": HELLO},
        headers={"x-gateway-destination-endpoint": fleet.open.endpoint},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers[NAME_HEADER] == "local-chat"


def test_client_abort_mid_stream_leaves_no_request_in_flight(
    gateway: Gateway, fleet: Fleet
) -> None:
    with held_stream(gateway, fleet.chat, backend="local-chat", model="chat-model"):
        pass  # leaving closes the stream from the client's side, mid-way
    # the client is gone; the picker must release the slot it took
    gateway.wait_for_in_flight("local-chat", 0)


def test_upstream_500_reaches_the_client_and_counts_as_a_failure(
    gateway: Gateway, fleet: Fleet
) -> None:
    failures_before = failures(gateway)
    fleet.chat.behaviour.fail_status = 500
    try:
        with pytest.raises(openai.InternalServerError):
            gateway.client().chat.completions.create(model="chat-model", messages=HELLO)
    finally:
        fleet.chat.behaviour.fail_status = None
    deadline = time.monotonic() + 20
    while failures(gateway) <= failures_before:
        assert time.monotonic() < deadline, "the upstream 500 was never accounted as a failure"
        time.sleep(0.1)
    gateway.wait_for_metric(
        "nexus_backend_in_flight",
        lambda value: value == 0,
        namespace="default",
        backend="local-chat",
    )


def test_upstream_503_without_a_body_counts_as_a_failure(gateway: Gateway, fleet: Fleet) -> None:
    failures_before = failures(gateway)
    fleet.open.behaviour.fail_status = 503
    fleet.open.behaviour.fail_empty = True
    try:
        with pytest.raises(openai.InternalServerError):
            gateway.client().chat.completions.create(model="open-model", messages=HELLO)
    finally:
        fleet.open.behaviour.fail_status = None
        fleet.open.behaviour.fail_empty = False
    deadline = time.monotonic() + 20
    while failures(gateway) <= failures_before:
        assert time.monotonic() < deadline, "the bodiless 503 was never accounted as a failure"
        time.sleep(0.1)
    gateway.wait_for_in_flight("open-chat", 0)


def failures(gateway: Gateway) -> float:
    """Accounted requests that failed, whether usage came from the response or an estimate."""
    return sum(
        gateway.metric("nexus_gateway_usage_reports_total", source=source, success="false") or 0.0
        for source in ("response", "estimated")
    )
