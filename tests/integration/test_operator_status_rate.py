"""A burst of 10,000 decisions stays within the coalescing bound of status writes."""

from __future__ import annotations

import pytest
from operator_support import Objects, backend_spec, operator_config, running_operator, wait_for

from nexus_operator.operator.replica import Controller
from nexus_operator.routing import Outcome, RequestRequirements
from nexus_testkit.localcluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]

BACKENDS = 5
DECISIONS = 10_000
CHUNK = 500


def _writes(controller: Controller) -> tuple[int, int]:
    return controller.ledger.patches, controller.writer.rounds


def test_burst_of_decisions_writes_at_most_one_patch_per_object_per_flush(
    cluster: Cluster, namespace: str
) -> None:
    config = operator_config(cluster.kubeconfig, namespace, flush_interval_s=0.5)
    with cluster.api_client() as api, running_operator(config) as operator:
        objects = Objects(api, namespace)
        for i in range(BACKENDS):
            spec = backend_spec("http://127.0.0.1:9", healthCheck={"enabled": False})
            objects.create("backends", f"b{i}", spec)
        objects.create("routingpolicies", "all", {"modelPatterns": ["*"]})
        req = RequestRequirements(model="llama3:8b", namespace=namespace, estimated_tokens=10)
        wait_for(lambda: operator.call(lambda c: c.engine.route(req)).outcome is Outcome.ROUTED)
        wait_for(lambda: objects.status("routingpolicies", "all").get("conditions"))
        objects_written = BACKENDS + 1

        patches_before, rounds_before = operator.call(_writes)
        for _ in range(DECISIONS // CHUNK):
            outcomes = operator.call(lambda c: [c.engine.route(req).outcome for _ in range(CHUNK)])
            assert set(outcomes) == {Outcome.ROUTED}
        wait_for(
            lambda: (
                (objects.status("routingpolicies", "all").get("decisions") or {}).get("routed", 0)
                >= DECISIONS
                and True
            )
        )
        patches_after, rounds_after = operator.call(_writes)
        rounds = rounds_after - rounds_before + 1  # a round may straddle the first reading
        assert patches_after - patches_before <= rounds * objects_written
