"""A stored object the models reject is reported in its status, not only in the operator's log.

Every pydantic rule has a CEL or schema twin in the CRD, so the API server never admits such an
object today; it exists when it was stored before a rule tightened (CRD validation ratcheting
keeps it). The test recreates that history: it installs a copy of the RoutingPolicy CRD without
the weights-sum rule, creates a policy that breaks it, and restores the real CRD in a `finally`.
One policy is stored before the operator starts (found by the initial list, so every status write
goes through ratcheting under the real CRD), one while it runs (found by the watch).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml
from operator_support import Objects, condition, operator_config, running_operator, wait_for

from nexus_crds import CRDS_DIR, install_crds
from nexus_operator.api.policy import WEIGHTS_RULE
from nexus_operator.operator.kube import POLICIES
from nexus_testkit.localcluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]

BAD_WEIGHTS = {
    "modelPatterns": ["llama*"],
    "selection": {"weights": {"priority": 10, "load": 10, "latency": 10}},
}


def _without_rule(node: Any, message: str) -> int:
    """Drop every CEL rule with `message` from a schema in place; the number dropped."""
    dropped = 0
    if isinstance(node, dict):
        rules = node.get("x-kubernetes-validations")
        if rules is not None:
            kept = [rule for rule in rules if rule.get("message") != message]
            dropped += len(rules) - len(kept)
            node["x-kubernetes-validations"] = kept
        for value in node.values():
            dropped += _without_rule(value, message)
    elif isinstance(node, list):
        for value in node:
            dropped += _without_rule(value, message)
    return dropped


@contextmanager
def crd_without_weights_rule(cluster: Cluster) -> Iterator[None]:
    """The RoutingPolicy CRD minus the weights rule, the real one again on exit."""
    crd = yaml.safe_load((CRDS_DIR / "routingpolicies.nexus.routing.dev.yaml").read_text())
    assert _without_rule(crd, WEIGHTS_RULE.message) == 1
    try:
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(crd))
        yield
    finally:
        install_crds(cluster)


def _ready(objects: Objects, name: str) -> dict[str, Any]:
    return condition(objects.status("routingpolicies", name), "Ready")


def _create_while_relaxed(cluster: Cluster, objects: Objects, name: str) -> dict[str, Any]:
    with crd_without_weights_rule(cluster):
        # The API server serves a changed CRD shortly after it is applied: retry until it does.
        return wait_for(lambda: objects.create("routingpolicies", name, BAD_WEIGHTS))


def test_policies_stored_before_a_rule_tightened_are_not_ready_with_invalid_spec_until_fixed(
    cluster: Cluster, namespace: str
) -> None:
    config = operator_config(cluster.kubeconfig, namespace)
    with cluster.api_client() as api:
        objects = Objects(api, namespace)
        listed = _create_while_relaxed(cluster, objects, "listed")
        with running_operator(config) as operator:
            wait_for(lambda: _ready(objects, "listed").get("reason") == "InvalidSpec")
            ready = _ready(objects, "listed")
            assert ready["status"] == "False"
            assert ready["message"] == f"spec.selection.weights: {WEIGHTS_RULE.message}"
            assert ready["observedGeneration"] == listed["metadata"]["generation"]
            status = objects.status("routingpolicies", "listed")
            assert status["observedGeneration"] == listed["metadata"]["generation"]

            watched = _create_while_relaxed(cluster, objects, "watched")
            wait_for(lambda: _ready(objects, "watched").get("reason") == "InvalidSpec")
            policies = operator.call(lambda c: set(c.registry.snapshot.policies))
            assert (namespace, "watched") not in policies
            weights = {"priority": 50, "load": 30, "latency": 20}
            objects.patch_spec("routingpolicies", "watched", {"selection": {"weights": weights}})
            wait_for(lambda: _ready(objects, "watched").get("reason") == "Accepted")
            assert _ready(objects, "watched")["status"] == "True"
            generation = watched["metadata"]["generation"] + 1
            assert objects.status("routingpolicies", "watched")["observedGeneration"] == generation

            key = (POLICIES.plural, namespace, "listed")
            record = operator.call(lambda c: c.sync.invalid.get(key))
            assert record is not None
            assert record.uid == listed["metadata"]["uid"]
            objects.delete("routingpolicies", "listed")
            wait_for(lambda: operator.call(lambda c: c.sync.invalid.get(key) is None))
