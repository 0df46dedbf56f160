"""credentialsSecretRef against the real API server: the operator reads the named Secret, the
registry's CredentialStore holds the header, probes send it; a missing Secret or key is a
CredentialsReady=False condition, an Event and the `credentials_unavailable` exclusion until the
Secret is fixed; and the value never shows in status, Events, logs or decisions."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from operator_support import (
    Objects,
    OperatorThread,
    condition,
    explain,
    operator_config,
    route,
    running_operator,
    wait_for,
)

from nexus_operator.pipeline import reasons
from nexus_operator.routing import Credential, Outcome
from nexus_testkit.localcluster import Cluster
from nexus_testkit.localcluster.standins import InferenceStandIn, StandIns

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]

SENTINEL = "sk-SENTINEL-d41d8cd98f00b204"
SECRET, KEY = "llm-key", "api-key"
REFRESH_S = 0.3


def _secret_body(value: str, *, key: str = KEY) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET},
        "data": {key: base64.b64encode(value.encode()).decode()},
    }


def _cloud_spec(url: str) -> dict[str, Any]:
    return {
        "type": "openai",
        "url": url,
        "models": [{"id": "llama3:8b"}],
        "credentialsSecretRef": {"name": SECRET, "key": KEY},
        "healthCheck": {
            "intervalSeconds": 1,
            "timeoutSeconds": 1,
            "failureThreshold": 1,
            "recoveryThreshold": 1,
        },
    }


def _keyed_standin(standins: StandIns) -> InferenceStandIn:
    server = standins.start("openai", name="cloud")
    server.behaviour.required_headers = {"authorization": f"Bearer {SENTINEL}"}
    return server


def _header(operator: OperatorThread, namespace: str) -> Credential | None:
    return operator.call(lambda c: c.registry.credentials.header((namespace, "cloud")))


def _event_reasons(api: client.ApiClient, namespace: str) -> list[str]:
    return [e.reason for e in client.CoreV1Api(api).list_namespaced_event(namespace).items]


def _credentials_ready(objects: Objects) -> dict[str, Any]:
    return condition(objects.status("backends", "cloud"), "CredentialsReady")


@pytest.fixture
def secrets(cluster: Cluster, namespace: str) -> Iterator[client.CoreV1Api]:
    with cluster.api_client() as api:
        yield client.CoreV1Api(api)


def test_backend_credential_follows_its_secret_through_deletion_and_repair(
    cluster: Cluster, namespace: str, standins: StandIns, secrets: client.CoreV1Api
) -> None:
    server = _keyed_standin(standins)
    secrets.create_namespaced_secret(namespace, _secret_body(SENTINEL))
    config = operator_config(cluster.kubeconfig, namespace, credentials_refresh_s=REFRESH_S)
    with cluster.api_client() as api, running_operator(config) as operator:
        objects = Objects(api, namespace)
        objects.create("backends", "cloud", _cloud_spec(server.url))
        wait_for(lambda: _credentials_ready(objects).get("status") == "True")
        assert _credentials_ready(objects)["reason"] == "SecretRead"
        header = _header(operator, namespace)
        assert header is not None
        assert (header.header_name, header.header_value) == ("authorization", f"Bearer {SENTINEL}")
        # The stand-in answers 200 only with the key, so Healthy proves the probe sent it.
        wait_for(
            lambda: condition(objects.status("backends", "cloud"), "Healthy")["status"] == "True"
        )
        assert route(operator, namespace).outcome is Outcome.ROUTED

        secrets.replace_namespaced_secret(SECRET, namespace, _secret_body(SENTINEL, key="other"))
        wait_for(lambda: _credentials_ready(objects).get("reason") == "KeyNotFound")
        ready = condition(objects.status("backends", "cloud"), "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "KeyNotFound")
        assert f"Secret {namespace}/{SECRET} has no key '{KEY}'" in ready["message"]
        decision = explain(operator, namespace)
        assert decision.outcome is Outcome.REJECTED
        [exclusion] = decision.rejections
        assert exclusion.reason_code == reasons.CREDENTIALS_UNAVAILABLE
        assert KEY in exclusion.reason
        assert _header(operator, namespace) is None
        wait_for(lambda: "CredentialsUnavailable" in _event_reasons(api, namespace))

        secrets.delete_namespaced_secret(SECRET, namespace)
        wait_for(lambda: _credentials_ready(objects).get("reason") == "SecretNotFound")
        assert route(operator, namespace).outcome is Outcome.REJECTED

        secrets.create_namespaced_secret(namespace, _secret_body(SENTINEL))
        wait_for(lambda: route(operator, namespace).outcome is Outcome.ROUTED)
        wait_for(lambda: _credentials_ready(objects).get("status") == "True")
        wait_for(lambda: "CredentialsAvailable" in _event_reasons(api, namespace))


def test_probes_are_healthy_only_with_the_key_the_backend_accepts(
    cluster: Cluster, namespace: str, standins: StandIns, secrets: client.CoreV1Api
) -> None:
    server = _keyed_standin(standins)
    secrets.create_namespaced_secret(namespace, _secret_body("sk-wrong"))
    config = operator_config(cluster.kubeconfig, namespace, credentials_refresh_s=REFRESH_S)
    with cluster.api_client() as api, running_operator(config) as operator:
        objects = Objects(api, namespace)
        objects.create("backends", "cloud", _cloud_spec(server.url))
        wait_for(lambda: objects.status("backends", "cloud").get("health", {}).get("lastError"))
        health = objects.status("backends", "cloud")["health"]
        assert health["state"] == "Unhealthy"
        assert "credentials rejected (HTTP 401)" in health["lastError"]
        assert codes_of(explain(operator, namespace)) == {reasons.UNHEALTHY}

        secrets.replace_namespaced_secret(SECRET, namespace, _secret_body(SENTINEL))
        wait_for(lambda: objects.status("backends", "cloud")["health"]["state"] == "Healthy")
        assert route(operator, namespace).outcome is Outcome.ROUTED


def codes_of(decision: Any) -> set[str]:
    return {x.reason_code for x in decision.rejections}


def test_a_credential_never_appears_in_status_events_logs_or_decisions(
    cluster: Cluster,
    namespace: str,
    standins: StandIns,
    secrets: client.CoreV1Api,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Route, explain and probe with the right key, a rejected key and a missing key, then scan
    everything a user or a log collector sees for the value."""
    caplog.set_level(logging.DEBUG)
    server = _keyed_standin(standins)
    secrets.create_namespaced_secret(namespace, _secret_body(SENTINEL))
    config = operator_config(cluster.kubeconfig, namespace, credentials_refresh_s=REFRESH_S)
    seen: list[str] = []
    with cluster.api_client() as api, running_operator(config) as operator:
        objects = Objects(api, namespace)
        objects.create("backends", "cloud", _cloud_spec(server.url))
        objects.create("routingpolicies", "all", {"modelPatterns": ["*"]})
        wait_for(lambda: route(operator, namespace).outcome is Outcome.ROUTED)
        seen += [repr(route(operator, namespace)), repr(explain(operator, namespace))]
        server.behaviour.required_headers = {"authorization": "Bearer rotated"}
        wait_for(
            lambda: (
                "credentials rejected"
                in (objects.status("backends", "cloud").get("health", {}).get("lastError") or "")
            )
        )
        secrets.replace_namespaced_secret(SECRET, namespace, _secret_body(SENTINEL, key="x"))
        wait_for(lambda: _credentials_ready(objects).get("reason") == "KeyNotFound")
        wait_for(lambda: objects.status("routingpolicies", "all").get("exclusions"))
        seen += [repr(route(operator, namespace)), repr(explain(operator, namespace))]
        seen.append(repr(operator.call(lambda c: c.registry.credentials)))
        for plural in ("backends", "routingpolicies"):
            seen.append(json.dumps(objects.get(plural, "cloud" if plural == "backends" else "all")))
        events = client.CoreV1Api(api).list_namespaced_event(namespace).items
        seen += [json.dumps(api.sanitize_for_serialization(e)) for e in events]
    seen += [record.getMessage() for record in caplog.records]
    seen.append(caplog.text)
    encoded = base64.b64encode(SENTINEL.encode()).decode()  # as the Secret's data holds it
    leaks = [text for text in seen if SENTINEL in text or encoded in text]
    assert leaks == []
    assert any("credentials rejected" in text for text in seen)  # the scan saw the failures
    assert any("KeyNotFound" in text for text in seen)
    assert any("credentials unavailable" in r.getMessage() for r in caplog.records)  # logs seen
