"""The operator keeps the registry and status true to the cluster; decisions follow at once."""

from __future__ import annotations

import pytest
import yaml
from operator_support import (
    Objects,
    backend_spec,
    condition,
    explain,
    operator_config,
    reason_codes,
    route,
    routed_name,
    running_operator,
    wait_for,
)

from nexus_operator.routing import Outcome
from nexus_testkit.localcluster import Cluster
from nexus_testkit.localcluster.standins import StandIns

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]


def test_backend_apply_modify_delete_converge_into_decisions_and_status(
    cluster: Cluster, namespace: str, standins: StandIns
) -> None:
    server = standins.start()
    config = operator_config(cluster.kubeconfig, namespace)
    with cluster.api_client() as api, running_operator(config) as operator:
        objects = Objects(api, namespace)
        objects.create("backends", "local", backend_spec(server.url))
        wait_for(lambda: route(operator, namespace).outcome is Outcome.ROUTED)
        assert routed_name(operator, namespace) == "local"
        wait_for(
            lambda: condition(objects.status("backends", "local"), "Ready")["status"] == "True"
        )
        status = objects.status("backends", "local")
        assert status["health"]["state"] == "Healthy"
        assert condition(status, "Healthy")["reason"] == "HealthCheckPassed"

        objects.patch_spec("backends", "local", {"draining": True})
        wait_for(lambda: "draining" in reason_codes(explain(operator, namespace)))
        wait_for(
            lambda: condition(objects.status("backends", "local"), "Ready")["reason"] == "Draining"
        )

        objects.delete("backends", "local")
        wait_for(lambda: "model_not_found" in reason_codes(explain(operator, namespace)))


def test_restricted_policy_lists_every_open_backend_in_status_exclusions(
    cluster: Cluster, namespace: str, standins: StandIns
) -> None:
    local = standins.start()
    open_vllm = standins.start("openai")
    config = operator_config(cluster.kubeconfig, namespace)
    with cluster.api_client() as api, running_operator(config) as operator:
        objects = Objects(api, namespace)
        objects.create("backends", "local", backend_spec(local.url))
        objects.create(
            "backends", "vllm-open", backend_spec(open_vllm.url, type="vllm", zone="Open")
        )
        cloud = backend_spec(
            "http://127.0.0.1:9",
            type="openai",
            credentialsSecretRef={"name": "openai", "key": "apiKey"},
            healthCheck={"enabled": False},
        )
        objects.create("backends", "openai", cloud)
        objects.create(
            "routingpolicies", "private", {"modelPatterns": ["*"], "privacy": "restricted"}
        )
        wait_for(lambda: route(operator, namespace).outcome is Outcome.ROUTED)

        def excluded() -> dict[str, dict[str, str]]:
            out = cluster.kubectl("get", "rp", "private", "-n", namespace, "-o", "yaml").stdout
            status = yaml.safe_load(out).get("status") or {}
            return {x["backend"]: x for x in status.get("exclusions") or []}

        wait_for(lambda: len(excluded()) == 2)
        exclusions = excluded()
        assert set(exclusions) == {"vllm-open", "openai"}
        for exclusion in exclusions.values():
            assert exclusion["reconciler"] == "PrivacyReconciler"
            assert exclusion["reason"]
            assert exclusion["suggestedAction"]
        assert routed_name(operator, namespace) == "local"
