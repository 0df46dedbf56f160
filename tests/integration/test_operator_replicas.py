"""Several replicas against one API server: additive spend, one leader, restarts keep state."""

from __future__ import annotations

import functools
import threading
import time

import pytest
from operator_support import (
    Objects,
    OperatorThread,
    backend_spec,
    condition,
    operator_config,
    running_operator,
    wait_for,
)

from nexus_operator.operator.replica import ControllerConfig
from nexus_operator.routing import UsageReport
from nexus_testkit.localcluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]

POLICY = {"modelPatterns": ["*"], "budget": {"monthlyLimitUsd": 1000}}
# Binary fractions: the exact sum is representable, so "adds up exactly" means ==.
COSTS = {"a": 0.125, "b": 0.25}
REPORTS_PER_REPLICA = 40


def _report(operator: OperatorThread, namespace: str, cost: float) -> None:
    usage = UsageReport(
        backend="local",
        namespace=namespace,
        model="llama3:8b",
        policy="budgeted",
        input_tokens=10,
        output_tokens=10,
        cost_usd=cost,
        success=True,
        latency_ms=None,
        ttft_ms=None,
        request_id=None,
    )
    operator.call(lambda c: c.engine.report_usage(usage))


def _spent(objects: Objects) -> float:
    return float(
        (objects.status("routingpolicies", "budgeted").get("budget") or {}).get("spentUsd", 0)
    )


def _create_objects(objects: Objects) -> None:
    spec = backend_spec("http://127.0.0.1:9", healthCheck={"enabled": False})
    objects.create("backends", "local", spec)
    objects.create("routingpolicies", "budgeted", POLICY)


def _has_policy(operator: OperatorThread, namespace: str) -> bool:
    return operator.call(lambda c: (namespace, "budgeted") in c.registry.snapshot.policies)


def test_spend_reported_to_two_replicas_adds_up_exactly(cluster: Cluster, namespace: str) -> None:
    with cluster.api_client() as api:
        objects = Objects(api, namespace)
        _create_objects(objects)

        def config() -> ControllerConfig:  # one identity per replica
            return operator_config(cluster.kubeconfig, namespace, flush_interval_s=0.2)

        with running_operator(config()) as a, running_operator(config()) as b:
            replicas = {"a": a, "b": b}
            for operator in replicas.values():
                wait_for(functools.partial(_has_policy, operator, namespace))

            def drive(name: str) -> None:
                for _ in range(REPORTS_PER_REPLICA):
                    _report(replicas[name], namespace, COSTS[name])
                    time.sleep(0.01)  # spread reports over many flushes of both replicas

            threads = [threading.Thread(target=drive, args=(name,)) for name in replicas]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            expected = REPORTS_PER_REPLICA * sum(COSTS.values())
            wait_for(lambda: _spent(objects) == expected)
            assert _spent(objects) == expected


def test_only_the_leader_writes_conditions_and_a_follower_takes_over(
    cluster: Cluster, namespace: str
) -> None:
    with cluster.api_client() as api:
        objects = Objects(api, namespace)
        _create_objects(objects)
        first = OperatorThread(operator_config(cluster.kubeconfig, namespace)).start()
        second = OperatorThread(operator_config(cluster.kubeconfig, namespace)).start()
        try:
            wait_for(lambda: condition(objects.status("routingpolicies", "budgeted"), "Ready"))
            leading = {op: op.call(lambda c: c.writer.leading) for op in (first, second)}
            assert sorted(leading.values()) == [False, True]
            leader = next(op for op, is_leader in leading.items() if is_leader)
            follower = next(op for op in (first, second) if op is not leader)
            assert follower.call(lambda c: c.writer.leader_rounds) == 0
            assert leader.call(lambda c: c.writer.leader_rounds) > 0

            leader.stop()
            wait_for(lambda: follower.call(lambda c: c.writer.leading))
            objects.patch_spec("backends", "local", {"draining": True})
            wait_for(
                lambda: (
                    condition(objects.status("backends", "local"), "Ready")["reason"] == "Draining"
                )
            )
        finally:
            first.stop()
            second.stop()


def test_restart_rebuilds_the_same_registry_and_keeps_spend(
    cluster: Cluster, namespace: str
) -> None:
    with cluster.api_client() as api:
        objects = Objects(api, namespace)
        _create_objects(objects)
        config = operator_config(cluster.kubeconfig, namespace)
        with running_operator(config) as before:
            wait_for(lambda: _has_policy(before, namespace))
            for _ in range(3):
                _report(before, namespace, 0.5)
            wait_for(lambda: _spent(objects) == 1.5)
            registry_before = before.call(
                lambda c: (dict(c.registry.snapshot.backends), dict(c.registry.snapshot.policies))
            )
        with running_operator(config) as after:
            registry_after = after.call(
                lambda c: (dict(c.registry.snapshot.backends), dict(c.registry.snapshot.policies))
            )
            spent = after.call(lambda c: c.registry.runtime.policy(namespace, "budgeted").spent_usd)
        assert {k: v.spec for k, v in registry_after[0].items()} == {
            k: v.spec for k, v in registry_before[0].items()
        }
        assert {k: v.spec for k, v in registry_after[1].items()} == {
            k: v.spec for k, v in registry_before[1].items()
        }
        assert spent == 1.5
