"""A backend that stops answering turns Unhealthy after the threshold, is excluded, recovers."""

from __future__ import annotations

import pytest
from kubernetes import client
from operator_support import (
    Objects,
    backend_spec,
    condition,
    explain,
    operator_config,
    route,
    running_operator,
    wait_for,
)

from nexus_operator.routing import Outcome
from nexus_testkit.localcluster import Cluster
from nexus_testkit.localcluster.standins import StandIns

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]


def _event_reasons(api: client.ApiClient, namespace: str) -> set[str]:
    """Reasons of the events.k8s.io/v1 Events the operator posted about Backend `flaky`."""
    events = client.EventsV1Api(api).list_namespaced_event(namespace).items
    return {
        e.reason
        for e in events
        if e.reporting_controller == "nexus-operator"
        and e.regarding.kind == "Backend"
        and e.regarding.name == "flaky"
        and e.action == "ProbeHealth"
    }


def test_backend_that_stops_answering_is_excluded_until_it_recovers(
    cluster: Cluster, namespace: str, standins: StandIns
) -> None:
    server = standins.start()
    config = operator_config(cluster.kubeconfig, namespace)
    with cluster.api_client() as api, running_operator(config) as operator:
        objects = Objects(api, namespace)
        objects.create("backends", "flaky", backend_spec(server.url))
        wait_for(lambda: route(operator, namespace).outcome is Outcome.ROUTED)

        server.set_healthy(False)
        wait_for(
            lambda: condition(objects.status("backends", "flaky"), "Healthy")["status"] == "False"
        )
        status = objects.status("backends", "flaky")
        assert status["health"]["state"] == "Unhealthy"
        assert status["health"]["consecutiveFailures"] >= 2
        assert "503" in status["health"]["lastError"]
        decision = explain(operator, namespace)
        assert decision.outcome is Outcome.REJECTED
        [exclusion] = decision.rejections
        assert (exclusion.backend, exclusion.reconciler) == ("flaky", "HealthReconciler")
        assert exclusion.reason
        wait_for(lambda: "BackendUnhealthy" in _event_reasons(api, namespace))

        server.set_healthy(True)
        wait_for(lambda: route(operator, namespace).outcome is Outcome.ROUTED)
        wait_for(
            lambda: condition(objects.status("backends", "flaky"), "Healthy")["status"] == "True"
        )
        wait_for(lambda: "BackendRecovered" in _event_reasons(api, namespace))
