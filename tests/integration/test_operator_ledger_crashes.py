"""Exactly-once budgets across crashes: real `run` processes, SIGKILL, restarts, API outages.

Each replica has a fixed --replica-id and its own --spool-dir (as the chart gives each pod an
emptyDir); usage goes over real gRPC and only acknowledged reports are tallied. The operator
reaches the API server through a fault-injecting proxy that can cut it off (an outage) while
the test itself keeps a direct connection to read status.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ledger_support import POLICY, create_budgeted, spent_usd
from operator_support import Objects, wait_for

from nexus_testkit.faultproxy import FaultProxy
from nexus_testkit.localcluster import Cluster
from nexus_testkit.operator_process import OperatorProcess, UsageDriver

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]

COST = 0.125
FLAGS = ("--flush-interval", "0.5")
# The documented bound is one spool interval (0.1 s) plus one fsync; the window counted as at
# risk is wider so a loaded CI machine cannot make the check flaky.
AT_RISK_WINDOW_S = 0.5


def _replica(kubeconfig: Path, namespace: str, tmp_path: Path, index: int) -> OperatorProcess:
    return OperatorProcess(
        kubeconfig,
        namespace,
        replica_id=f"replica-{index}",
        spool_dir=tmp_path / f"spool-{index}",
        extra=FLAGS,
    )


def test_sigkill_during_an_api_outage_loses_at_most_the_last_spool_interval(
    cluster: Cluster, proxy: FaultProxy, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = proxy.kubeconfig(cluster.kubeconfig, tmp_path / "via-proxy.kubeconfig")
    with cluster.api_client() as api:
        objects = Objects(api, namespace)
        create_budgeted(objects, monthly_limit_usd=1e6)
        replica = _replica(kubeconfig, namespace, tmp_path, 0).start()
        driver = UsageDriver(replica, policy=POLICY, cost=COST, rate=50)
        try:
            driver.start()
            wait_for(lambda: spent_usd(objects) > 0)
            proxy.set(outage=True)
            time.sleep(3.0)  # usage keeps flowing and being acknowledged during the outage
            killed_at = time.monotonic()
            replica.kill()
            driver.stop()
            at_risk = COST * sum(t > killed_at - AT_RISK_WINDOW_S for t in driver.ack_times)
            acknowledged = driver.acknowledged_usd
            assert acknowledged - spent_usd(objects) > at_risk  # the outage held spend back
            replica.start(wait=False)  # restarts while the API server is still unreachable
            proxy.clear()
            replica.wait_serving()
            wait_for(lambda: acknowledged - spent_usd(objects) <= at_risk, timeout=60)
            assert spent_usd(objects) <= acknowledged + COST  # one report may be applied unacked
        finally:
            driver.stop()
            replica.terminate()


@pytest.mark.parametrize("replicas", [2, 3])
def test_replicas_with_one_killed_and_restarted_persist_exactly_what_they_acknowledged(
    cluster: Cluster, proxy: FaultProxy, namespace: str, tmp_path: Path, replicas: int
) -> None:
    kubeconfig = proxy.kubeconfig(cluster.kubeconfig, tmp_path / "via-proxy.kubeconfig")
    with cluster.api_client() as api:
        objects = Objects(api, namespace)
        create_budgeted(objects, monthly_limit_usd=1e6)
        fleet = [_replica(kubeconfig, namespace, tmp_path, i) for i in range(replicas)]
        drivers: list[UsageDriver] = []
        try:
            for replica in fleet:
                replica.start()
            drivers += [UsageDriver(r, policy=POLICY, cost=COST, rate=30).start() for r in fleet]
            wait_for(lambda: spent_usd(objects) > 0)
            victim, victim_driver = fleet[0], drivers[0]
            victim_driver.stop()  # between two of its reports: past the spool interval
            time.sleep(0.3)
            victim.kill()
            victim.start()
            drivers.append(UsageDriver(victim, policy=POLICY, cost=COST, rate=30).start())
            time.sleep(1.0)
            for driver in drivers:
                driver.stop()
            acknowledged = sum(d.acknowledged_usd for d in drivers)
            wait_for(lambda: spent_usd(objects) == acknowledged, timeout=60)
            status = objects.status("routingpolicies", POLICY)
            assert sorted(e["replica"] for e in status["replicas"]) == [
                f"replica-{i}" for i in range(replicas)
            ]
        finally:
            for driver in drivers:
                driver.stop()
            for replica in fleet:
                replica.terminate()
