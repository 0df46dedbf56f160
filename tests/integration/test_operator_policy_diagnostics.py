"""A RoutingPolicy that can never route, or whose plug-in is missing, says so where users look:
its conditions name the specific reason, and an Event is posted once per transition. Real
API server, the operator in-process (no kubelet needed)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from operator_support import Objects, operator_config, running_operator, wait_for

from nexus_testkit.localcluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]

UNPROBED = {"healthCheck": {"enabled": False}}


def _backend(model: str) -> dict[str, Any]:
    return {"type": "ollama", "url": "http://127.0.0.1:9", "models": [{"id": model}], **UNPROBED}


def _conditions(objects: Objects, name: str) -> dict[str, tuple[str, str, str]]:
    status = objects.status("routingpolicies", name)
    return {
        c["type"]: (c["status"], c["reason"], c.get("message", ""))
        for c in status.get("conditions") or []
    }


def _condition(objects: Objects, name: str, type_: str) -> tuple[str, str, str]:
    """The condition's (status, reason, message); KeyError (wait_for retries) while absent."""
    return _conditions(objects, name)[type_]


def _events(api: client.ApiClient, namespace: str, name: str) -> list[tuple[str, str, str]]:
    listed = client.CoreV1Api(api).list_namespaced_event(namespace)
    return [
        (e.type, e.reason, e.message or "")
        for e in listed.items
        if e.involved_object.name == name and e.involved_object.kind == "RoutingPolicy"
    ]


def test_policies_that_cannot_route_say_why_in_conditions_and_events(
    cluster: Cluster, namespace: str
) -> None:
    config = operator_config(cluster.kubeconfig, namespace)
    with cluster.api_client() as api, running_operator(config):
        objects = Objects(api, namespace)
        objects.create("backends", "llama", _backend("llama3:8b"))
        objects.create("backends", "qwen", _backend("qwen2:7b"))
        objects.create(
            "routingpolicies",
            "nothing-selected",
            {"modelPatterns": ["llama*"], "backendSelector": {"matchLabels": {"team": "nobody"}}},
        )
        objects.create("routingpolicies", "no-patterns", {})
        objects.create("routingpolicies", "no-backend", {"modelPatterns": ["mistral*"]})
        objects.create(
            "routingpolicies",
            "missing-plugin",
            {"modelPatterns": ["qwen*"], "reconcilers": [{"name": "no-such-plugin"}]},
        )

        selected = wait_for(lambda: _condition(objects, "nothing-selected", "Ready"))
        assert selected[:2] == ("False", "SelectorMatchesNothing")
        assert "spec.backendSelector matches no Backend" in selected[2]
        assert _conditions(objects, "nothing-selected")["NoEligibleBackends"][:2] == (
            "True",
            "SelectorMatchesNothing",
        )
        warned = wait_for(lambda: _events(api, namespace, "nothing-selected"))
        assert ("Warning", "SelectorMatchesNothing") in {(t, r) for t, r, _ in warned}

        no_patterns = wait_for(lambda: _condition(objects, "no-patterns", "Ready"))
        assert no_patterns[:2] == ("False", "NoModelPatterns")

        no_backend = wait_for(lambda: _condition(objects, "no-backend", "NoEligibleBackends"))
        assert no_backend[:2] == ("True", "NoBackendOffersModels")
        assert "mistral*" in no_backend[2]
        assert _conditions(objects, "no-backend")["Ready"][:2] == ("True", "Accepted")
        status = objects.status("routingpolicies", "no-backend")
        assert (status["matchedBackends"], status.get("exclusions", [])) == (0, [])

        plugin = wait_for(lambda: _condition(objects, "missing-plugin", "ReconcilersReady"))
        assert plugin[:2] == ("False", "ReconcilerUnavailable")
        assert "no-such-plugin" in plugin[2]
        assert _conditions(objects, "missing-plugin")["Ready"][:2] == ("True", "Accepted")
        plugin_events = wait_for(lambda: _events(api, namespace, "missing-plugin"))
        assert any(
            r == "ReconcilerUnavailable" and "no-such-plugin" in m for _, r, m in plugin_events
        )

        objects.patch_spec("routingpolicies", "nothing-selected", {"backendSelector": None})
        wait_for(lambda: _conditions(objects, "nothing-selected")["Ready"][1] == "Accepted")
        assert objects.status("routingpolicies", "nothing-selected")["matchedBackends"] == 1
        recovered = wait_for(
            lambda: [e for e in _events(api, namespace, "nothing-selected") if e[0] == "Normal"]
        )
        assert recovered[0][1] == "Accepted"
        warnings = [e for e in _events(api, namespace, "nothing-selected") if e[0] == "Warning"]
        assert len({r for _, r, _ in warnings}) == len(warnings), "one Event per transition"
