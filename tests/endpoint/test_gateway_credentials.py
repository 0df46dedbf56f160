"""The picker and the credentials the operator reads: a Backend whose Secret is unusable is
refused in OpenAI's error format with `credentials_unavailable` (naming Secret and key), and the
injected key never reaches the client, in headers or error bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nexus_operator.routing import Credential, Registry

from .extproc import ExtProcStream, chat, live_gateway, request_body, request_headers, set_headers
from .fleet import backend, policy, registry_of

pytestmark = pytest.mark.timeout(60)
SENTINEL = "sk-SENTINEL-098f6bcd4621d373"
CLOUD = ("default", "cloud")


@pytest.fixture
def registry() -> Registry:
    return registry_of(
        [
            backend("cloud", type_="openai", models=["gpt-4o"], url="https://api.openai.example"),
            policy("open", patterns=["gpt-4o"]),
        ]
    )


@pytest.fixture
async def stub(registry: Registry) -> AsyncIterator[Any]:
    async with live_gateway(registry, credentials=registry.credentials) as (_, stub):
        yield stub


async def _ask(stub: Any) -> Any:
    stream = ExtProcStream(stub)
    await stream.send(request_headers())
    first = await stream.recv()
    if first.WhichOneof("response") == "immediate_response":
        await stream.close()
        return first
    await stream.send(request_body(chat("gpt-4o")))
    answer = await stream.recv()
    await stream.close()
    return answer


async def test_the_operators_credential_is_injected_upstream_only(
    stub: Any, registry: Registry
) -> None:
    registry.credentials.set(CLOUD, Credential("authorization", f"Bearer {SENTINEL}", "k/apiKey"))
    answer = await _ask(stub)
    assert set_headers(answer.request_body.response)["authorization"] == f"Bearer {SENTINEL}"


async def test_an_unusable_secret_refuses_with_credentials_unavailable_and_no_value(
    stub: Any, registry: Registry
) -> None:
    registry.credentials.set(CLOUD, Credential("authorization", f"Bearer {SENTINEL}", "k/apiKey"))
    registry.credentials.set_problem(CLOUD, "Secret default/cloud-key has no key 'apiKey'")
    answer = await _ask(stub)
    immediate = answer.immediate_response
    assert immediate.status.code == 503
    body = json.loads(immediate.body)
    [exclusion] = body["error"]["nexus"]["exclusions"]
    assert exclusion["reasonCode"] == "credentials_unavailable"
    assert "Secret default/cloud-key has no key 'apiKey'" in exclusion["reason"]
    assert SENTINEL not in immediate.body.decode()
    assert SENTINEL not in str(immediate.headers)
