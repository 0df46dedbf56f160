"""Credentials: a Secret's key becomes the provider's header, or a problem naming Secret and key
(never the value) that excludes the Backend with `credentials_unavailable` until fixed; probes
carry the header and fail on 401/403 with "credentials rejected"."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from loopback_http import serve_get
from routing_factories import NOW, backend, codes, engine, policy

from nexus_operator import api
from nexus_operator.api import conditions
from nexus_operator.operator.condition_list import DesiredCondition
from nexus_operator.operator.probing import HealthProber, ProbeTarget
from nexus_operator.operator.status_assembly import BackendFacts, backend_status
from nexus_operator.pipeline import reasons
from nexus_operator.routing import (
    Credential,
    CredentialProblem,
    CredentialStore,
    Outcome,
    Registry,
    RequestRequirements,
    RoutingEngine,
)
from nexus_operator.routing.credentials import header_for, resolve, secret_data

SENTINEL = "sk-SENTINEL-never-print-me"
REF = api.SecretKeyRef(name="openai", key="api-key")


@pytest.mark.parametrize(
    ("backend_type", "header"),
    [
        (api.BackendType.OPENAI, ("authorization", f"Bearer {SENTINEL}")),
        (api.BackendType.GOOGLE, ("authorization", f"Bearer {SENTINEL}")),
        (api.BackendType.VLLM, ("authorization", f"Bearer {SENTINEL}")),
        (api.BackendType.GENERIC, ("authorization", f"Bearer {SENTINEL}")),
        (api.BackendType.ANTHROPIC, ("x-api-key", SENTINEL)),
    ],
)
def test_each_type_gets_its_providers_header(
    backend_type: api.BackendType, header: tuple[str, str]
) -> None:
    assert header_for(backend_type, SENTINEL) == header
    found = resolve(backend_type, REF, namespace="ns", data={"api-key": SENTINEL.encode()})
    assert isinstance(found, Credential)
    assert (found.header_name, found.header_value) == header
    assert found.source == "openai/api-key"


def test_value_is_stripped_of_the_newline_files_often_end_with() -> None:
    found = resolve(api.BackendType.OPENAI, REF, namespace="ns", data={"api-key": b" key\n"})
    assert isinstance(found, Credential)
    assert found.header_value == "Bearer key"


@pytest.mark.parametrize(
    ("data", "reason", "names"),
    [
        (None, conditions.SECRET_NOT_FOUND, "Secret ns/openai not found"),
        ({"other": b"x"}, conditions.KEY_NOT_FOUND, "Secret ns/openai has no key 'api-key'"),
        ({"api-key": b"  \n"}, conditions.EMPTY_VALUE, "key 'api-key' of Secret ns/openai"),
        ({"api-key": b"a\nb" + SENTINEL.encode()}, conditions.INVALID_VALUE, "'api-key'"),
        ({"api-key": b"\xff\xfe"}, conditions.INVALID_VALUE, "not UTF-8"),
    ],
)
def test_unusable_secret_is_a_problem_naming_secret_and_key_never_the_value(
    data: dict[str, bytes] | None, reason: str, names: str
) -> None:
    found = resolve(api.BackendType.OPENAI, REF, namespace="ns", data=data)
    assert isinstance(found, CredentialProblem)
    assert found.reason == reason
    assert names in found.message
    assert SENTINEL not in found.message
    assert SENTINEL not in repr(found)


def test_secret_data_decodes_base64_data_and_takes_string_data_over_it() -> None:
    secret = {
        "data": {"a": base64.b64encode(b"one").decode(), "b": "bm90", "bad": "%%%"},
        "stringData": {"b": "two"},
    }
    assert secret_data(secret) == {"a": b"one", "b": b"two"}


def test_store_repr_and_credential_repr_never_hold_the_value() -> None:
    store = CredentialStore()
    store.set(("ns", "b"), Credential("authorization", f"Bearer {SENTINEL}", "s/k"))
    assert SENTINEL not in repr(store)
    assert SENTINEL not in repr(store.header(("ns", "b")))


def _cloud_engine() -> tuple[RoutingEngine, Registry]:
    cloud = backend("cloud", type="openai", url="https://api.openai.test", zone="Restricted")
    local = backend("local", priority=90)
    eng = engine([cloud, local], [policy("rp", selection={"strategy": "priorityOnly"})])
    return eng, eng.registry


def test_backend_without_usable_credentials_is_excluded_until_fixed() -> None:
    eng, registry = _cloud_engine()
    store = registry.credentials
    store.set_problem(("default", "cloud"), "Secret default/key not found")
    request = RequestRequirements(model="llama3:8b", namespace="default")
    for decision in (eng.route(request), eng.explain(request)):
        assert decision.outcome is Outcome.ROUTED
        assert decision.backend is not None
        assert decision.backend.name == "local"
        assert codes(decision)["cloud"] == reasons.CREDENTIALS_UNAVAILABLE
        excluded = next(e for e in decision.exclusions if e.backend == "cloud")
        assert "Secret default/key not found" in excluded.reason
    store.set(("default", "cloud"), Credential("authorization", "Bearer x", "key/token"))
    fixed = eng.route(request).backend
    assert fixed is not None
    assert fixed.name == "cloud"


def test_credential_problem_is_checked_before_health() -> None:
    eng, registry = _cloud_engine()
    registry.credentials.set_problem(("default", "cloud"), "Secret default/key not found")
    registry.runtime.backend("default", "cloud").record_probe(
        False, None, error="HTTP 401", failure_threshold=1, recovery_threshold=1, now=NOW
    )
    decision = eng.explain(RequestRequirements(model="llama3:8b", namespace="default"))
    assert codes(decision)["cloud"] == reasons.CREDENTIALS_UNAVAILABLE


def test_static_report_follows_credential_problems_as_they_come_and_go() -> None:
    eng, registry = _cloud_engine()
    registry.credentials.set_problem(("default", "cloud"), "Secret default/key has no key 'token'")
    excluded = eng.backend_exclusions("default", "cloud")
    assert [x.reason_code for x in excluded] == [reasons.CREDENTIALS_UNAVAILABLE]
    registry.credentials.forget(("default", "cloud"))
    assert eng.backend_exclusions("default", "cloud") == []


def test_problem_survives_a_recreated_runtime_cell() -> None:
    _, registry = _cloud_engine()
    registry.credentials.set_problem(("default", "cloud"), "gone")
    registry.runtime.forget_backend("default", "cloud")
    assert registry.runtime.backend("default", "cloud").credentials_problem == "gone"


def _facts(credentials: DesiredCondition | None) -> BackendFacts:
    return BackendFacts(
        health_state=api.HealthState.HEALTHY,
        latency_ms=None,
        last_probe_time=None,
        consecutive_failures=0,
        last_error=None,
        in_flight=0,
        credentials=credentials,
    )


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in status["conditions"]}


def test_missing_secret_sets_credentials_ready_false_and_ready_false() -> None:
    cloud = backend("cloud", type="openai", url="https://api.openai.test")
    missing = DesiredCondition(
        conditions.CREDENTIALS_READY,
        api.ConditionStatus.FALSE,
        conditions.SECRET_NOT_FOUND,
        "Secret default/key not found",
    )
    status = backend_status(cloud, _facts(missing), exclusions=[], existing=[], now=NOW)
    found = _conditions(status)
    assert found["CredentialsReady"]["status"] == "False"
    assert found["CredentialsReady"]["reason"] == "SecretNotFound"
    assert found["Ready"]["status"] == "False"
    assert found["Ready"]["reason"] == "SecretNotFound"
    assert found["Healthy"]["status"] == "True"


def test_credentials_ready_goes_away_with_the_reference() -> None:
    cloud = backend("cloud", type="openai", url="https://api.openai.test")
    ready = DesiredCondition(
        conditions.CREDENTIALS_READY, api.ConditionStatus.TRUE, conditions.SECRET_READ, "read"
    )
    before = backend_status(cloud, _facts(ready), exclusions=[], existing=[], now=NOW)
    assert _conditions(before)["Ready"]["status"] == "True"
    existing = [api.Condition.model_validate(c) for c in before["conditions"]]
    after = backend_status(cloud, _facts(None), exclusions=[], existing=existing, now=NOW)
    assert "CredentialsReady" not in _conditions(after)


@pytest.fixture
async def key_checking_server() -> AsyncIterator[str]:
    """Answers 200 only to `authorization: Bearer <SENTINEL>`, else 401."""

    async def models(request: web.Request) -> web.Response:
        if request.headers.get("authorization") == f"Bearer {SENTINEL}":
            return web.json_response({"data": []})
        return web.Response(status=401)

    async with serve_get(models) as url:
        yield url


async def _probe_with(
    url: str, credential: Credential | None
) -> tuple[api.HealthState, str | None]:
    registry = Registry()
    key = ("default", "cloud")
    if credential is not None:
        registry.credentials.set(key, credential)
    prober = HealthProber(registry, clock=lambda: NOW)
    await prober.start()
    target = ProbeTarget(
        url=url + "/v1/models",
        interval_s=10.0,
        timeout_s=2.0,
        failure_threshold=1,
        recovery_threshold=1,
        authenticated=True,
    )
    try:
        await prober.probe_once(key, target)
    finally:
        await prober.stop()
    cell = registry.runtime.backend(*key)
    return cell.health_state, cell.last_error


async def test_probe_with_the_right_key_is_healthy(key_checking_server: str) -> None:
    right = Credential("authorization", f"Bearer {SENTINEL}", "s/k")
    assert (await _probe_with(key_checking_server, right))[0] is api.HealthState.HEALTHY


async def test_probe_with_a_wrong_key_is_unhealthy_with_credentials_rejected(
    key_checking_server: str,
) -> None:
    wrong = Credential("authorization", "Bearer nope", "s/k")
    state, error = await _probe_with(key_checking_server, wrong)
    assert state is api.HealthState.UNHEALTHY
    assert error is not None
    assert "credentials rejected (HTTP 401)" in error
    assert "nope" not in error


async def test_probe_without_a_credential_takes_401_as_proof_of_life(
    key_checking_server: str,
) -> None:
    assert (await _probe_with(key_checking_server, None))[0] is api.HealthState.HEALTHY


async def test_probe_errors_print_the_url_without_user_info() -> None:
    registry = Registry()
    prober = HealthProber(registry, clock=lambda: NOW)
    await prober.start()
    target = ProbeTarget(
        url=f"http://user:{SENTINEL}@127.0.0.1:9/v1/models",
        interval_s=10.0,
        timeout_s=2.0,
        failure_threshold=1,
        recovery_threshold=1,
        authenticated=False,
    )
    try:
        await prober.probe_once(("default", "old"), target)
    finally:
        await prober.stop()
    error = registry.runtime.backend("default", "old").last_error
    assert error is not None
    assert "***@127.0.0.1:9" in error
    assert SENTINEL not in error


async def test_anthropic_probes_send_the_api_version_with_the_key() -> None:
    seen: list[dict[str, str]] = []

    async def models(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"data": []})

    async with serve_get(models, path="/v1/models") as url:
        cloud = backend("claude", type="anthropic", url=url)
        registry = Registry()
        registry.credentials.set(("default", "claude"), Credential("x-api-key", SENTINEL, "s/k"))
        prober = HealthProber(registry, clock=lambda: NOW)
        await prober.start()
        try:
            target = ProbeTarget.of(cloud)
            assert target is not None
            await prober.probe_once(("default", "claude"), target)
        finally:
            await prober.stop()
    assert seen[0]["x-api-key"] == SENTINEL
    assert seen[0]["anthropic-version"] == "2023-06-01"
