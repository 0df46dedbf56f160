"""The ext_proc picker over real gRPC, driven by a raw client playing Envoy's side of the stream.

Every phase Envoy sends (request headers, body, response headers, body) in both body modes the
gateways configure (BUFFERED, FULL_DUPLEX_STREAMED), and the stream ends Envoy can produce
(normal end, client abort = stream cancelled, upstream 5xx).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, generate_latest

from nexus_operator.routing import Credential, Registry
from nexus_operator.serving.gateway import GatewayServer, openai_request, service
from nexus_operator.serving.gateway.usage import UsageMeter

from .extproc import (
    FULL_DUPLEX,
    ExtProcStream,
    chat,
    destination_metadata,
    immediate_headers,
    live_gateway,
    request_body,
    request_headers,
    response_body,
    response_headers,
    set_headers,
)
from .fleet import backend, policy, registry_of

pytestmark = pytest.mark.timeout(60)

LOCAL = "127.0.0.1:18001"
SECOND = "127.0.0.1:18002"
BUSY = "127.0.0.1:18003"


def gateway_fleet() -> list[dict[str, Any]]:
    return [
        backend("local", type_="ollama", models=["llama3:8b"], priority=10, url=f"http://{LOCAL}"),
        backend("second", type_="vllm", models=["llama3:8b"], priority=90, url=f"http://{SECOND}"),
        backend("busy", type_="vllm", models=["solo"], maxConcurrency=1, url=f"http://{BUSY}"),
        backend(
            "cloud",
            type_="openai",
            models=["gpt-4o"],
            price=0.01,
            url="https://api.openai.example/v1",
        ),
        policy("llamas", patterns=["llama3:*"], aliases={"fast": "llama3:8b"}),
        policy(
            "priced",
            patterns=["gpt-4o"],
            budget={"monthlyLimitUsd": 100, "softLimitPercent": 75, "hardLimitAction": "blockAll"},
        ),
    ]


@pytest.fixture
def registry() -> Registry:
    registry = registry_of(gateway_fleet())
    registry.credentials.set(
        ("default", "cloud"), Credential("authorization", "Bearer sk-upstream", "cloud-key/apiKey")
    )
    return registry


@pytest.fixture
async def gateway(registry: Registry) -> AsyncIterator[tuple[GatewayServer, Any]]:
    async with live_gateway(registry, max_body_bytes=128 * 1024) as pair:
        yield pair


def in_flight(registry: Registry, name: str) -> int:
    return registry.runtime.backend("default", name).in_flight


async def routed_buffered(stub: Any, body: bytes, **headers: Any) -> tuple[ExtProcStream, Any]:
    stream = ExtProcStream(stub)
    await stream.send(request_headers(**headers))
    first = await stream.recv()
    assert first.WhichOneof("response") == "request_headers"
    await stream.send(request_body(body))
    return stream, await stream.recv()


async def test_buffered_route_names_the_endpoint_in_the_header_and_the_envoy_lb_metadata(
    gateway: tuple[GatewayServer, Any], registry: Registry
) -> None:
    _, stub = gateway
    stream, answer = await routed_buffered(stub, chat())
    assert answer.WhichOneof("response") == "request_body"
    common = answer.request_body.response
    assert set_headers(common)["x-gateway-destination-endpoint"] == LOCAL
    assert destination_metadata(answer) == LOCAL
    assert common.clear_route_cache
    assert not common.HasField("body_mutation")  # same model: the body passes unchanged
    assert in_flight(registry, "local") == 1
    await stream.send(response_headers(200), response_body(b'{"usage":{}}'))
    headers_answer = await stream.recv()
    client = set_headers(headers_answer.response_headers.response)
    assert client["x-nexus-backend"] == "default/local"
    assert client["x-nexus-model"] == "llama3:8b"
    assert client["x-nexus-policy"] == "llamas"
    assert client["x-nexus-route-reason"]
    assert "x-nexus-fallback" not in client
    await stream.recv()
    await stream.close()
    assert in_flight(registry, "local") == 0


async def test_full_duplex_holds_the_headers_answer_until_the_body_is_complete(
    gateway: tuple[GatewayServer, Any], registry: Registry
) -> None:
    _, stub = gateway
    stream = ExtProcStream(stub)
    body = chat()
    await stream.send(request_headers(body_mode=FULL_DUPLEX, content_length=len(body)))
    await stream.send(request_body(body[:10], end_of_stream=False))
    await stream.send(request_body(body[10:], end_of_stream=True))
    headers_answer = await stream.recv()
    assert headers_answer.WhichOneof("response") == "request_headers"
    common = headers_answer.request_headers.response
    assert set_headers(common)["x-gateway-destination-endpoint"] == LOCAL
    assert "content-length" not in set_headers(common)
    assert destination_metadata(headers_answer) == LOCAL
    assert common.clear_route_cache
    body_answer = await stream.recv()
    streamed = body_answer.request_body.response.body_mutation.streamed_response
    assert (streamed.body, streamed.end_of_stream) == (body, True)
    await stream.close()
    assert in_flight(registry, "local") == 0


async def test_request_trailers_end_a_full_duplex_body(
    gateway: tuple[GatewayServer, Any],
) -> None:
    _, stub = gateway
    stream = ExtProcStream(stub)
    body = chat()
    await stream.send(request_headers(body_mode=FULL_DUPLEX))
    await stream.send(request_body(body, end_of_stream=False))
    await stream.send(ext.ProcessingRequest(request_trailers=ext.HttpTrailers()))
    kinds = [(await stream.recv()).WhichOneof("response") for _ in range(3)]
    assert kinds == ["request_headers", "request_body", "request_trailers"]
    await stream.close()


async def test_without_protocol_config_the_picker_assumes_buffered(
    gateway: tuple[GatewayServer, Any],
) -> None:
    _, stub = gateway
    stream = ExtProcStream(stub)
    first = request_headers()
    first.ClearField("protocol_config")
    await stream.send(first)
    assert (await stream.recv()).WhichOneof("response") == "request_headers"
    await stream.send(request_body(chat()))
    answer = await stream.recv()
    assert set_headers(answer.request_body.response)["x-gateway-destination-endpoint"] == LOCAL
    await stream.close()


async def test_an_alias_rewrites_the_model_and_the_content_length_in_buffered_mode(
    gateway: tuple[GatewayServer, Any],
) -> None:
    _, stub = gateway
    original = chat("fast")
    stream, answer = await routed_buffered(stub, original, content_length=len(original))
    common = answer.request_body.response
    rewritten = common.body_mutation.body
    assert json.loads(rewritten)["model"] == "llama3:8b"
    assert json.loads(rewritten)["messages"] == json.loads(original)["messages"]
    assert set_headers(common)["content-length"] == str(len(rewritten))
    await stream.close()


async def test_an_alias_rewrites_the_streamed_body_in_full_duplex_mode(
    gateway: tuple[GatewayServer, Any],
) -> None:
    _, stub = gateway
    original = chat("fast", padding="x" * 70_000)  # more than one 62,000-byte chunk
    stream = ExtProcStream(stub)
    await stream.send(request_headers(body_mode=FULL_DUPLEX, content_length=len(original)))
    await stream.send(request_body(original))
    headers_answer = await stream.recv()
    chunks = []
    while True:
        part = (await stream.recv()).request_body.response.body_mutation.streamed_response
        chunks.append(part)
        if part.end_of_stream:
            break
    rewritten = b"".join(c.body for c in chunks)
    assert len(chunks) == 2
    assert json.loads(rewritten)["model"] == "llama3:8b"
    assert set_headers(headers_answer.request_headers.response)["content-length"] == str(
        len(rewritten)
    )
    await stream.close()


async def test_unknown_model_is_a_404_in_openai_error_format(
    gateway: tuple[GatewayServer, Any],
) -> None:
    _, stub = gateway
    stream, answer = await routed_buffered(stub, chat("no-such-model"))
    immediate = answer.immediate_response
    assert immediate.status.code == 404
    error = json.loads(immediate.body)["error"]
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "model"
    assert error["nexus"]["outcome"] == "REJECTED"
    assert "llama3:8b" in error["nexus"]["availableModels"]
    assert await stream.recv_eof()


async def test_no_eligible_backend_is_a_503_listing_every_exclusion(
    gateway: tuple[GatewayServer, Any],
) -> None:
    _, stub = gateway
    vision = {
        "model": "llama3:8b",
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
        ],
    }
    _, answer = await routed_buffered(stub, json.dumps(vision).encode())
    immediate = answer.immediate_response
    assert immediate.status.code == 503
    error = json.loads(immediate.body)["error"]
    assert error["code"] == "no_eligible_backends"
    assert error["nexus"]["policy"] == "llamas"
    excluded = {e["backend"]: e for e in error["nexus"]["exclusions"]}
    assert set(excluded) == {"local", "second"}
    assert excluded["local"]["reasonCode"] == "missing_capabilities"
    assert excluded["local"]["reconciler"] == "CapabilityReconciler"
    assert excluded["local"]["suggestedAction"]


async def test_a_full_backend_queues_as_429_with_retry_after_in_seconds(
    gateway: tuple[GatewayServer, Any], registry: Registry
) -> None:
    _, stub = gateway
    first, answer = await routed_buffered(stub, chat("solo"))
    assert set_headers(answer.request_body.response)["x-gateway-destination-endpoint"] == BUSY
    _, refused = await routed_buffered(stub, chat("solo"))
    immediate = refused.immediate_response
    assert immediate.status.code == 429
    assert int(immediate_headers(refused)["retry-after"]) >= 1
    assert json.loads(immediate.body)["error"]["type"] == "rate_limit_error"
    await first.close()
    assert in_flight(registry, "busy") == 0


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"[1, 2]", "invalid_json", None),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "missing_model", "model"),
        (b'{"model": "llama3:8b", "messages": "hi"}', "invalid_request", "messages"),
        (
            b'{"model": "llama3:8b", "messages": [{}], "max_tokens": -1}',
            "invalid_request",
            "max_tokens",
        ),
    ],
)
async def test_malformed_bodies_are_400_naming_the_problem(
    gateway: tuple[GatewayServer, Any], body: bytes, code: str, param: str | None
) -> None:
    _, stub = gateway
    _, answer = await routed_buffered(stub, body)
    immediate = answer.immediate_response
    assert immediate.status.code == 400
    error = json.loads(immediate.body)["error"]
    assert (error["code"], error["param"]) == (code, param)


async def test_an_unknown_path_is_a_404_before_any_body(
    gateway: tuple[GatewayServer, Any],
) -> None:
    _, stub = gateway
    stream = ExtProcStream(stub)
    await stream.send(request_headers(path="/v1/embeddings"))
    answer = await stream.recv()
    assert answer.immediate_response.status.code == 404
    assert json.loads(answer.immediate_response.body)["error"]["code"] == "unknown_path"


async def test_metrics_count_requests_by_outcome_and_status(
    gateway: tuple[GatewayServer, Any],
) -> None:
    server, stub = gateway
    stream, _ = await routed_buffered(stub, chat())
    await stream.close()
    await routed_buffered(stub, chat("no-such-model"))
    registry = CollectorRegistry()
    registry.register(server.metrics)
    text = generate_latest(registry).decode()
    assert 'nexus_gateway_requests_total{outcome="ROUTED",status="0"} 1.0' in text
    assert 'nexus_gateway_requests_total{outcome="REJECTED",status="404"} 1.0' in text
    assert 'nexus_gateway_usage_reports_total{source="estimated",success="true"} 1.0' in text


async def test_the_model_list_is_answered_from_the_registry(
    gateway: tuple[GatewayServer, Any],
) -> None:
    _, stub = gateway
    stream = ExtProcStream(stub)
    await stream.send(request_headers(method="GET", path="/v1/models", end_of_stream=True))
    answer = (await stream.recv()).immediate_response
    assert answer.status.code == 200
    listed = json.loads(answer.body)
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == ["fast", "gpt-4o", "llama3:8b", "solo"]


async def test_a_declared_or_streamed_body_over_the_limit_is_413(
    gateway: tuple[GatewayServer, Any],
) -> None:
    _, stub = gateway
    declared = ExtProcStream(stub)
    await declared.send(request_headers(content_length=10**6))
    assert (await declared.recv()).immediate_response.status.code == 413
    streamed = ExtProcStream(stub)
    await streamed.send(request_headers(body_mode=FULL_DUPLEX))
    for _ in range(3):
        await streamed.send(request_body(b"x" * 50_000, end_of_stream=False))
    assert (await streamed.recv()).immediate_response.status.code == 413


async def test_a_tightening_header_is_applied_and_a_malformed_one_is_400(
    gateway: tuple[GatewayServer, Any],
) -> None:
    _, stub = gateway
    _, answer = await routed_buffered(stub, chat(), extra={"x-nexus-min-tier": "4"})
    assert answer.immediate_response.status.code == 503
    stream = ExtProcStream(stub)
    await stream.send(request_headers(extra={"x-nexus-min-tier": "high"}))
    bad = await stream.recv()
    error = json.loads(bad.immediate_response.body)["error"]
    assert (bad.immediate_response.status.code, error["param"]) == (400, "x-nexus-min-tier")


@pytest.mark.parametrize("subset", [[SECOND], f"10.0.0.9:80, {SECOND}"])
async def test_the_subset_hint_restricts_the_choice(
    gateway: tuple[GatewayServer, Any], subset: list[str] | str
) -> None:
    _, stub = gateway
    _, answer = await routed_buffered(stub, chat(), subset=subset)
    assert set_headers(answer.request_body.response)["x-gateway-destination-endpoint"] == SECOND


async def test_a_subset_hint_with_nothing_eligible_is_a_503(
    gateway: tuple[GatewayServer, Any], registry: Registry
) -> None:
    _, stub = gateway
    _, answer = await routed_buffered(stub, chat(), subset=["10.0.0.9:80"])
    immediate = answer.immediate_response
    assert immediate.status.code == 503
    codes = {e["reasonCode"] for e in json.loads(immediate.body)["error"]["nexus"]["exclusions"]}
    assert codes == {"outside_subset_hint"}
    assert in_flight(registry, "local") == in_flight(registry, "second") == 0


async def test_a_cloud_backend_gets_its_upstream_header_and_credential_not_the_clients(
    gateway: tuple[GatewayServer, Any],
) -> None:
    _, stub = gateway
    stream, answer = await routed_buffered(
        stub, chat("gpt-4o"), extra={"authorization": "Bearer client-token"}
    )
    common = answer.request_body.response
    upstream = set_headers(common)
    assert upstream["x-nexus-upstream"] == "default.cloud"
    assert upstream["authorization"] == "Bearer sk-upstream"
    assert "x-gateway-destination-endpoint" not in upstream
    assert set(common.header_mutation.remove_headers) == {"x-api-key", "api-key"}
    await stream.send(response_headers(200))
    client = set_headers((await stream.recv()).response_headers.response)
    assert client["x-nexus-budget"] == "Normal"
    assert "sk-upstream" not in json.dumps(client)
    await stream.close()


async def test_a_cloud_backend_whose_secret_is_missing_is_excluded_with_its_reason(
    gateway: tuple[GatewayServer, Any], registry: Registry
) -> None:
    _, stub = gateway
    registry.credentials.set_problem(("default", "cloud"), "Secret cloud-key not found")
    _, answer = await routed_buffered(stub, chat("gpt-4o"))
    immediate = answer.immediate_response
    assert immediate.status.code == 503
    [exclusion] = json.loads(immediate.body)["error"]["nexus"]["exclusions"]
    assert exclusion["backend"] == "cloud"
    assert exclusion["reasonCode"] == "credentials_unavailable"
    assert in_flight(registry, "cloud") == 0


async def test_client_copies_of_the_routing_headers_never_steer_the_route(
    gateway: tuple[GatewayServer, Any],
) -> None:
    _, stub = gateway
    spoofed = {"x-nexus-upstream": "default.cloud", "x-gateway-destination-endpoint": "10.9.9.9:22"}
    _, local = await routed_buffered(stub, chat(), extra=spoofed)
    common = local.request_body.response
    assert set_headers(common)["x-gateway-destination-endpoint"] == LOCAL
    assert list(common.header_mutation.remove_headers) == ["x-nexus-upstream"]
    _, cloud = await routed_buffered(stub, chat("gpt-4o"), extra=spoofed)
    removed = set(cloud.request_body.response.header_mutation.remove_headers)
    assert "x-gateway-destination-endpoint" in removed


async def test_json_usage_is_accounted_as_spend_and_releases_the_slot(
    gateway: tuple[GatewayServer, Any], registry: Registry
) -> None:
    _, stub = gateway
    stream, _ = await routed_buffered(stub, chat("gpt-4o"))
    assert in_flight(registry, "cloud") == 1
    usage = {"usage": {"prompt_tokens": 1000, "completion_tokens": 1000}}
    await stream.send(response_headers(200), response_body(json.dumps(usage).encode()))
    await stream.recv()
    await stream.recv()
    await stream.close()
    assert in_flight(registry, "cloud") == 0
    spent = registry.runtime.policy("default", "priced").spent_at(datetime.now(UTC))
    assert spent == pytest.approx(0.02)


async def test_sse_usage_from_the_final_chunk_with_full_duplex_echo(
    gateway: tuple[GatewayServer, Any], registry: Registry
) -> None:
    _, stub = gateway
    stream = ExtProcStream(stub)
    body = chat("gpt-4o", stream=True, stream_options={"include_usage": True})
    await stream.send(request_headers(body_mode=FULL_DUPLEX, response_mode=FULL_DUPLEX))
    await stream.send(request_body(body))
    await stream.recv()
    await stream.recv()
    events = [
        {"choices": [{"delta": {"content": "Hel"}}]},
        {"choices": [{"delta": {"content": "lo"}}]},
        {"choices": [], "usage": {"prompt_tokens": 500, "completion_tokens": 500}},
    ]
    sse = (
        b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    )
    await stream.send(response_headers(200, content_type="text/event-stream"))
    await stream.recv()
    await stream.send(response_body(sse[:30], end_of_stream=False))
    echoed = (await stream.recv()).response_body.response.body_mutation.streamed_response
    assert (echoed.body, echoed.end_of_stream) == (sse[:30], False)
    await stream.send(response_body(sse[30:], end_of_stream=True))
    last = (await stream.recv()).response_body.response.body_mutation.streamed_response
    assert (last.body, last.end_of_stream) == (sse[30:], True)
    await stream.close()
    spent = registry.runtime.policy("default", "priced").spent_at(datetime.now(UTC))
    assert spent == pytest.approx(0.01)
    assert in_flight(registry, "cloud") == 0


async def test_a_client_abort_mid_response_releases_the_slot(
    gateway: tuple[GatewayServer, Any], registry: Registry
) -> None:
    server, stub = gateway
    stream, _ = await routed_buffered(stub, chat(), response_mode=FULL_DUPLEX)
    await stream.send(response_headers(200, content_type="text/event-stream"))
    await stream.recv()
    await stream.send(response_body(b'data: {"choices": []}\n\n', end_of_stream=False))
    await stream.recv()
    assert in_flight(registry, "local") == 1
    stream.cancel()
    for _ in range(200):
        if server.metrics.active_streams == 0:
            break
        await asyncio.sleep(0.01)
    assert in_flight(registry, "local") == 0


async def test_an_upstream_500_counts_as_a_failure(
    gateway: tuple[GatewayServer, Any], registry: Registry
) -> None:
    _, stub = gateway
    stream, _ = await routed_buffered(stub, chat())
    await stream.send(response_headers(500, end_of_stream=True))
    await stream.recv()
    await stream.close()
    assert registry.runtime.backend("default", "local").error_rate(datetime.now(UTC)) == 1.0
    assert in_flight(registry, "local") == 0


async def test_a_picker_bug_refuses_before_the_decision_and_passes_responses_after_it(
    gateway: tuple[GatewayServer, Any], registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, stub = gateway

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("bug")

    stream, _ = await routed_buffered(stub, chat(), response_mode=FULL_DUPLEX)
    monkeypatch.setattr(UsageMeter, "feed", broken)
    await stream.send(response_headers(200), response_body(b"{}", end_of_stream=True))
    await stream.recv()
    echoed = (await stream.recv()).response_body.response.body_mutation.streamed_response
    assert (echoed.body, echoed.end_of_stream) == (b"{}", True)
    await stream.close()
    assert in_flight(registry, "local") == 0
    monkeypatch.setattr(openai_request, "parse_body", broken)
    monkeypatch.setattr(service, "parse_body", broken)
    _, refused = await routed_buffered(stub, chat())
    assert refused.immediate_response.status.code == 503
    assert json.loads(refused.immediate_response.body)["error"]["code"] == "routing_failed"


async def test_usage_goes_to_the_endpoint_the_proxy_reports_as_served(
    gateway: tuple[GatewayServer, Any], registry: Registry
) -> None:
    _, stub = gateway
    stream, _ = await routed_buffered(stub, chat())
    await stream.send(response_headers(500, served=SECOND, end_of_stream=True))
    await stream.recv()
    await stream.close()
    now = datetime.now(UTC)
    assert registry.runtime.backend("default", "second").error_rate(now) == 1.0
    assert registry.runtime.backend("default", "local").error_rate(now) is None
    assert in_flight(registry, "local") == 0


async def test_readiness_follows_the_registry_sync_and_set_serving_liveness_stays() -> None:
    registry = registry_of(gateway_fleet())
    registry.synced = False
    async with live_gateway(registry) as (server, _):
        port = server.port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def status(service: str) -> int:
                answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
                return int(answer.status)

            serving = health_pb2.HealthCheckResponse.SERVING
            assert await status("liveness") == serving
            assert await status("readiness") != serving
            assert await status("envoy.service.ext_proc.v3.ExternalProcessor") != serving
            registry.synced = True
            for _ in range(100):
                if await status("readiness") == serving:
                    break
                await asyncio.sleep(0.05)
            assert await status("envoy.service.ext_proc.v3.ExternalProcessor") == serving
            server.set_serving(False)
            for _ in range(100):
                if await status("readiness") != serving:
                    break
                await asyncio.sleep(0.05)
            assert await status("envoy.service.ext_proc.v3.ExternalProcessor") != serving
            assert await status("liveness") == serving


STREAMED = processing_mode_pb2.ProcessingMode.STREAMED


def attributed_body(body: bytes, *, status: int) -> ext.ProcessingRequest:
    """The first response-body message of a proxy skipping response headers: it carries the
    `response.code` attribute (envoy-config --skip-response-headers)."""
    request = response_body(body)
    code = request.attributes["envoy.filters.http.ext_proc"].fields["response.code"]
    code.number_value = status
    return request


async def test_the_routed_answer_carries_the_client_headers_as_nexus_gateway_metadata(
    gateway: tuple[GatewayServer, Any],
) -> None:
    _, stub = gateway
    stream, answer = await routed_buffered(stub, chat())
    client = answer.dynamic_metadata.fields["nexus.gateway"].struct_value.fields
    assert client["x-nexus-backend"].string_value == "default/local"
    assert client["x-nexus-model"].string_value == "llama3:8b"
    assert "x-nexus-fallback" not in client
    assert destination_metadata(answer) == LOCAL
    await stream.close()


async def test_without_response_headers_the_status_comes_from_the_response_code_attribute(
    gateway: tuple[GatewayServer, Any], registry: Registry
) -> None:
    _, stub = gateway
    stream, _ = await routed_buffered(stub, chat(), response_mode=STREAMED)
    await stream.send(attributed_body(b'{"error": {}}', status=500))
    await stream.recv()
    await stream.close()
    assert registry.runtime.backend("default", "local").error_rate(datetime.now(UTC)) == 1.0
    assert in_flight(registry, "local") == 0


async def test_without_response_headers_a_response_with_no_body_counts_as_a_failure(
    gateway: tuple[GatewayServer, Any], registry: Registry
) -> None:
    _, stub = gateway
    stream, _ = await routed_buffered(stub, chat(), response_mode=STREAMED)
    await stream.close()  # the proxy had nothing to send: a bodiless response, status unknown
    assert registry.runtime.backend("default", "local").error_rate(datetime.now(UTC)) == 1.0
    assert in_flight(registry, "local") == 0
