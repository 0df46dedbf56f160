"""API server outage: decisions keep flowing from the last snapshot; status catches up after."""

from __future__ import annotations

import pytest
from operator_support import (
    Objects,
    backend_spec,
    operator_config,
    route,
    routed_name,
    running_operator,
    wait_for,
)

from nexus_operator.routing import Outcome, UsageReport
from nexus_testkit.localcluster import Cluster, LocalControlPlane

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]


def test_decisions_survive_an_api_outage_and_pending_status_is_written_after(
    cluster: Cluster, local_control_plane: LocalControlPlane, namespace: str
) -> None:
    usage = UsageReport(
        backend="local",
        namespace=namespace,
        model="llama3:8b",
        policy="budgeted",
        input_tokens=1,
        output_tokens=1,
        cost_usd=0.75,
        success=True,
        latency_ms=None,
        ttft_ms=None,
        request_id=None,
    )
    config = operator_config(cluster.kubeconfig, namespace, flush_interval_s=0.3)
    plane = local_control_plane
    with cluster.api_client() as api, running_operator(config) as operator:
        objects = Objects(api, namespace)
        objects.create(
            "backends", "local", backend_spec("http://127.0.0.1:9", healthCheck={"enabled": False})
        )
        objects.create(
            "routingpolicies",
            "budgeted",
            {"modelPatterns": ["*"], "budget": {"monthlyLimitUsd": 10}},
        )
        wait_for(lambda: route(operator, namespace).outcome is Outcome.ROUTED)
        plane.stop_apiserver()
        try:
            assert routed_name(operator, namespace) == "local"
            operator.call(lambda c: c.engine.report_usage(usage))
            wait_for(lambda: operator.call(lambda c: c.health()["apiServer"]) == "unreachable")
            gone_at = operator.call(lambda c: c.writer.rounds)
            wait_for(lambda: operator.call(lambda c: c.writer.rounds) >= gone_at + 3)
            assert route(operator, namespace).outcome is Outcome.ROUTED
            assert (
                operator.call(lambda c: c.registry.runtime.policy(namespace, "budgeted").own_usd)
                == 0.75
            )
        finally:
            plane.start_apiserver()
        wait_for(
            lambda: (
                (objects.status("routingpolicies", "budgeted").get("budget") or {}).get("spentUsd")
                == 0.75
            ),
            timeout=60,
        )
        objects.create(
            "backends",
            "later",
            backend_spec("http://127.0.0.1:9", "mistral:7b", healthCheck={"enabled": False}),
        )
        wait_for(
            lambda: route(operator, namespace, "mistral:7b").outcome is Outcome.ROUTED and True,
            timeout=60,
        )
