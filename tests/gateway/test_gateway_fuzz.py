"""Hostile and odd request bodies through a real Envoy and the picker: every answer is a
deliberate one (a completion, or an OpenAI-format error with a 4xx/503 status, never Envoy's
500 for a failed picker stream), and no routed request leaves its slot taken."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus_testkit.localcluster.standins import StandIns

from .conftest import BODY_MODES, Gateway, backend, policy, run_gateway

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DELIBERATE = {200, 400, 404, 413, 429, 503}
MODELS = st.sampled_from(["fuzz-model", "fuzz-vision", "no-such-model", "", "fast"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text()
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
CONTENT = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.one_of(
            st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=50)}),
            st.fixed_dictionaries(
                {
                    "type": st.just("image_url"),
                    "image_url": st.fixed_dictionaries({"url": st.text()}),
                }
            ),
            JSON,
        ),
        max_size=3,
    ),
    JSON,
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "x"]), "content": CONTENT}
)
CHAT = st.fixed_dictionaries(
    {"model": st.one_of(MODELS, JSON), "messages": st.one_of(st.lists(MESSAGE, max_size=3), JSON)},
    optional={
        "stream": st.one_of(st.booleans(), JSON),
        "stream_options": st.one_of(st.just({"include_usage": True}), JSON),
        "max_tokens": st.one_of(st.integers(-5, 10**9), JSON),
        "max_completion_tokens": st.integers(-5, 10**9),
        "tools": st.one_of(st.lists(JSON, max_size=2), JSON),
        "response_format": st.one_of(st.just({"type": "json_object"}), JSON),
    },
)
BODIES = st.one_of(
    CHAT.map(lambda body: json.dumps(body).encode()),
    JSON.map(lambda body: json.dumps(body).encode()),
    st.binary(max_size=300),
)
PATHS = st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/"])


@pytest.fixture(scope="module", params=BODY_MODES)
def gateway(
    request: pytest.FixtureRequest, stand_ins: StandIns, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    server = stand_ins.start("openai", ("fuzz-model", "fuzz-vision"), name=f"fuzz-{request.param}")
    documents = [
        backend(
            "fuzz",
            server,
            [
                {"id": "fuzz-model", "supportsTools": True, "supportsJsonMode": True},
                {"id": "fuzz-vision", "supportsVision": True, "maxOutputTokens": 100},
            ],
            maxConcurrency=50,
        ),
        policy("everything", ["*"], aliases={"fast": "fuzz-model"}),
    ]
    workdir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with run_gateway(workdir, documents, body_mode=request.param) as running:
        yield running


def post(gateway: Gateway, path: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}{path}",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=PATHS, body=BODIES)
def test_any_body_gets_a_deliberate_answer(gateway: Gateway, path: str, body: bytes) -> None:
    response = post(gateway, path, body)
    assert response.status_code in DELIBERATE, (response.status_code, response.text[:300])
    if response.status_code != 200:
        error: Any = response.json()["error"]
        assert isinstance(error["message"], str)
        assert error["message"]
        assert "type" in error


def test_no_slot_is_left_taken_after_the_fuzz(gateway: Gateway) -> None:
    """Runs after the fuzz in the same module (and gateway): every slot came back."""
    gateway.wait_for_metric(
        "nexus_backend_in_flight", lambda value: value == 0, namespace="default", backend="fuzz"
    )
    hello = {"model": "fuzz-model", "messages": [{"role": "user", "content": "hi"}]}
    assert post(gateway, "/v1/chat/completions", json.dumps(hello).encode()).status_code == 200
