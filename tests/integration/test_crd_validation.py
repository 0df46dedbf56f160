"""The API server itself rejects invalid Backends and RoutingPolicies (structural schema +
CEL), with a message naming the field; the same table is rejected by the pydantic models
(tests/unit/test_api_models.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from invalid_manifests import BACKEND_BASE, CLOUD_BASE, INVALID_SPECS, POLICY_BASE, InvalidSpec
from nexus_crds import GROUP, PLURALS, VERSION, install_crds
from nexus_operator import api
from nexus_testkit.localcluster import Cluster

pytestmark = pytest.mark.integration
SPEC_MODELS: dict[str, type[api.BackendSpec] | type[api.RoutingPolicySpec]] = {
    "Backend": api.BackendSpec,
    "RoutingPolicy": api.RoutingPolicySpec,
}


@pytest.fixture(scope="module")
def objects(cluster: Cluster) -> Iterator[client.CustomObjectsApi]:
    install_crds(cluster)
    with cluster.api_client() as api:
        yield client.CustomObjectsApi(api)


def _create(
    objects: client.CustomObjectsApi, *, namespace: str, kind: str, spec: dict[str, Any]
) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": "subject"},
        "spec": spec,
    }
    created: dict[str, Any] = objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[kind], body, field_validation="Strict"
    )
    return created


@pytest.mark.parametrize(
    ("kind", "spec"),
    [("Backend", BACKEND_BASE), ("Backend", CLOUD_BASE), ("RoutingPolicy", POLICY_BASE)],
    ids=["local-backend", "cloud-backend", "policy"],
)
def test_api_server_accepts_the_bases_of_the_invalid_cases(
    objects: client.CustomObjectsApi, namespace: str, kind: str, spec: dict[str, Any]
) -> None:
    created = _create(objects, namespace=namespace, kind=kind, spec=spec)
    assert created["metadata"]["name"] == "subject"


@pytest.mark.parametrize("case", INVALID_SPECS, ids=[c.id for c in INVALID_SPECS])
def test_api_server_rejects_invalid_spec_naming_the_field(
    objects: client.CustomObjectsApi, namespace: str, case: InvalidSpec
) -> None:
    with pytest.raises(ApiException) as raised:
        _create(objects, namespace=namespace, kind=case.kind, spec=case.spec)
    assert raised.value.status in (400, 422)
    assert case.field in str(raised.value.body)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://user:pw@ollama.llm:11434", "must not contain user-info"),
        ("https://sk-abc@api.openai.com/v1", "must not contain user-info"),
        ("http://:11434/v1", "must name a host"),
        ("https://", "must name a host"),
    ],
)
def test_api_server_refuses_urls_with_user_info_or_without_host_saying_why(
    objects: client.CustomObjectsApi, namespace: str, url: str, message: str
) -> None:
    with pytest.raises(ApiException) as raised:
        _create(objects, namespace=namespace, kind="Backend", spec={**BACKEND_BASE, "url": url})
    assert "spec.url" in str(raised.value.body)
    assert message in str(raised.value.body)


@pytest.mark.parametrize(
    "url", ["http://[::1]:8000", "http://10.0.0.7", "http://h/path@at", "https://api.openai.com/v1"]
)
def test_api_server_accepts_urls_the_model_accepts(
    objects: client.CustomObjectsApi, namespace: str, url: str
) -> None:
    created = _create(
        objects, namespace=namespace, kind="Backend", spec={**BACKEND_BASE, "url": url}
    )
    assert created["spec"]["url"] == url
    objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, "backends", "subject")


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("Backend", {**BACKEND_BASE, "healthCheck": {"intervalSeconds": 1, "timeoutSeconds": 1}}),
        ("Backend", {**BACKEND_BASE, "healthCheck": {"intervalSeconds": 5}}),
        ("Backend", {**BACKEND_BASE, "models": [{"id": "m", "maxOutputTokens": 4096}]}),
        ("Backend", {**BACKEND_BASE, "models": [{"id": "org/model:8b-q4_K_M@v2 ünï"}]}),
        ("RoutingPolicy", {"modelPatterns": ["gpt-{4o,4}*", "{a,{b,c}}"]}),
        ("RoutingPolicy", {**POLICY_BASE, "budget": {"monthlyLimitUsd": 0}}),
        ("RoutingPolicy", {**POLICY_BASE, "reconcilers": [{"name": "acme.latency-v2_x"}]}),
    ],
    ids=[
        "probe-timeout-equal-to-interval",
        "probe-default-timeout-equal-to-interval",
        "max-output-equal-to-default-context",
        "model-id-with-punctuation-and-unicode",
        "closed-and-nested-braces",
        "zero-budget",
        "dotted-reconciler-name",
    ],
)
def test_api_server_accepts_the_edges_of_the_cross_field_rules(
    objects: client.CustomObjectsApi, namespace: str, kind: str, spec: dict[str, Any]
) -> None:
    created = _create(objects, namespace=namespace, kind=kind, spec=spec)
    assert created["metadata"]["name"] == "subject"
    SPEC_MODELS[kind].model_validate(created["spec"])
