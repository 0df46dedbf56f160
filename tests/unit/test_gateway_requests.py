"""OpenAI request bodies and headers → RequestRequirements, and the refusals that name the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nexus_operator.api import Privacy
from nexus_operator.serving.gateway.errors import GatewayError
from nexus_operator.serving.gateway.openai_request import (
    CHAT,
    COMPLETIONS,
    Tightening,
    endpoint_kind,
    parse_body,
    rewrite_model,
    tightening,
)
from nexus_operator.serving.proto import router_pb2 as pb
from nexus_operator.serving.requests import route_requirements


def parse(document: Any, kind: str = CHAT, **options: Any) -> Any:
    return parse_body(json.dumps(document).encode(), kind=kind, namespace="team-a", **options)


def refusal(document: Any, kind: str = CHAT) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse(document, kind)
    return caught.value


def test_the_token_estimate_is_the_one_the_grpc_api_computes() -> None:
    texts = ["hello there, " * 7, "a" * 41, "xyz"]
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": texts[0]},
            {"role": "user", "content": [{"type": "text", "text": texts[1]}]},
            {"role": "user", "content": texts[2]},
        ],
    }
    grpc_request = pb.RouteRequest(
        model="m",
        messages=[
            pb.ChatMessage(role="system", text=texts[0]),
            pb.ChatMessage(
                role="user",
                parts=pb.ContentParts(parts=[pb.ContentPart(type="text", text=texts[1])]),
            ),
            pb.ChatMessage(role="user", text=texts[2]),
        ],
    )
    gateway = parse(body).requirements
    assert gateway.estimated_tokens == route_requirements(grpc_request).estimated_tokens
    assert gateway.estimated_tokens == sum(len(t) // 4 for t in texts)


def test_capabilities_come_from_image_parts_tools_and_response_format() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_schema", "json_schema": {}},
    }
    req = parse(body).requirements
    assert (req.needs_vision, req.needs_tools, req.needs_json_mode) == (True, True, True)


def test_plain_requests_need_nothing_and_carry_the_configured_namespace() -> None:
    req = parse({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).requirements
    assert (req.needs_vision, req.needs_tools, req.needs_json_mode) == (False, False, False)
    assert req.namespace == "team-a"
    assert req.max_output_tokens is None


def test_legacy_functions_need_tools_and_text_format_is_not_json_mode() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "functions": [{"name": "f"}],
        "response_format": {"type": "text"},
    }
    req = parse(body).requirements
    assert (req.needs_tools, req.needs_json_mode) == (True, False)


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 10,
        "max_completion_tokens": 20,
    }
    assert parse(body).requirements.max_output_tokens == 20


def test_completions_prompts_count_strings_and_token_arrays() -> None:
    req = parse({"model": "m", "prompt": ["a" * 40, [1, 2, 3]]}, COMPLETIONS).requirements
    assert req.estimated_tokens == 13


def test_stream_facts_are_read() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    parsed = parse(body)
    assert (parsed.stream, parsed.include_usage) == (True, True)


@pytest.mark.parametrize(
    ("document", "code", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "missing_model", "model"),
        ({"model": "", "messages": [{}]}, "invalid_request", "model"),
        ({"model": 7, "messages": [{}]}, "invalid_request", "model"),
        ({"model": " m", "messages": [{}]}, "invalid_request", "model"),
        ({"model": "m"}, "invalid_request", "messages"),
        ({"model": "m", "messages": []}, "invalid_request", "messages"),
        ({"model": "m", "messages": ["hi"]}, "invalid_request", "messages[0]"),
        ({"model": "m", "messages": [{"content": 5}]}, "invalid_request", "messages[0].content"),
        ({"model": "m", "messages": [{}], "max_tokens": 0}, "invalid_request", "max_tokens"),
        ({"model": "m", "messages": [{}], "max_tokens": True}, "invalid_request", "max_tokens"),
        ({"model": "m", "messages": [{}], "stream": "yes"}, "invalid_request", "stream"),
        ({"model": "m", "messages": [{}], "tools": {}}, "invalid_request", "tools"),
        (
            {"model": "m", "messages": [{}], "response_format": "json"},
            "invalid_request",
            "response_format",
        ),
        ([1, 2], "invalid_json", None),
    ],
)
def test_malformed_fields_are_400_naming_the_field(
    document: Any, code: str, param: str | None
) -> None:
    error = refusal(document)
    assert (error.status, error.code, error.param) == (400, code, param)


def test_a_prompt_is_required_for_completions() -> None:
    assert refusal({"model": "m"}, COMPLETIONS).param == "prompt"


@pytest.mark.parametrize("body", [b"{", b"\xff\xfe", b"", b"[" * 100_000])
def test_bytes_that_are_not_json_are_invalid_json(body: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_body(body, kind=CHAT, namespace="default")
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")


def test_the_rewrite_changes_only_the_model() -> None:
    document = {"model": "fast", "messages": [{"role": "user", "content": "héllo"}], "n": 2}
    parsed = parse(document)
    rewritten = json.loads(rewrite_model(parsed, "llama3:8b"))
    assert rewritten == {**document, "model": "llama3:8b"}
    assert parsed.document["model"] == "fast"


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("POST", "/v1/chat/completions", CHAT),
        ("POST", "/v1/completions?x=1", COMPLETIONS),
    ],
)
def test_served_paths(method: str, path: str, kind: str) -> None:
    assert endpoint_kind(method, path) == kind


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/chat/completions"), ("POST", "/v1/embeddings"), ("POST", "/"), ("GET", "")],
)
def test_other_paths_and_methods_are_404(method: str, path: str) -> None:
    with pytest.raises(GatewayError) as caught:
        endpoint_kind(method, path)
    assert (caught.value.status, caught.value.code) == (404, "unknown_path")


def test_headers_tighten_privacy_tier_and_strictness() -> None:
    found = tightening(
        {"x-nexus-privacy": "Restricted", "x-nexus-min-tier": "3", "x-nexus-strict": "true"}
    )
    assert found == Tightening(Privacy.RESTRICTED, 3, True)
    assert tightening({"x-nexus-privacy": "unrestricted"}) == Tightening()
    assert tightening({}) == Tightening()


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-nexus-privacy", "public"),
        ("x-nexus-min-tier", "0"),
        ("x-nexus-min-tier", "6"),
        ("x-nexus-min-tier", "high"),
        ("x-nexus-strict", "maybe"),
    ],
)
def test_a_malformed_tightening_header_is_400_naming_it(header: str, value: str) -> None:
    with pytest.raises(GatewayError) as caught:
        tightening({header: value})
    assert (caught.value.status, caught.value.param) == (400, header)


def test_tightening_and_subset_reach_the_requirements() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    req = parse(
        body, tighten=Tightening(Privacy.RESTRICTED, 2, True), only_backends=frozenset({"a"})
    ).requirements
    assert (req.privacy, req.min_tier, req.strict) == (Privacy.RESTRICTED, 2, True)
    assert req.only_backends == frozenset({"a"})


def test_the_rewrite_keeps_a_lone_surrogate_as_an_escape() -> None:
    body = b'{"model": "fast", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    parsed = parse_body(body, kind=CHAT, namespace="default")
    rewritten = rewrite_model(parsed, "llama3:8b")
    assert json.loads(rewritten)["messages"][0]["content"] == "a\ud800b"
