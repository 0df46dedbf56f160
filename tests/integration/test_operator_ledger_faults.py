"""Exactly-once budgets under network faults, between the operator and a real API server.

A fault-injecting TCP proxy (nexus_testkit.faultproxy) sits between the operator and the API
server: answers held back past the client timeout while the writes are applied, answers dropped,
requests torn mid-write, and a 409 storm from a concurrent writer. Whatever happens, the spend
and the decision counters persisted in status equal what the operator acknowledged.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from ledger_support import POLICY, create_budgeted, spent_usd
from operator_support import (
    Objects,
    OperatorThread,
    operator_config,
    running_operator,
    wait_for,
)

from nexus_operator.api import GROUP, VERSION
from nexus_operator.operator.replica import Controller
from nexus_operator.routing import Outcome, RequestRequirements, UsageReport
from nexus_testkit.faultproxy import FaultProxy
from nexus_testkit.localcluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]

COST = 0.125  # a binary fraction: sums are exact, so "to the cent" is checked as ==


def _usage(namespace: str) -> UsageReport:
    return UsageReport(
        backend="local",
        namespace=namespace,
        model="llama3:8b",
        policy=POLICY,
        input_tokens=1,
        output_tokens=1,
        cost_usd=COST,
        success=True,
        latency_ms=None,
        ttft_ms=None,
        request_id=None,
    )


class Tally:
    """What the operator acknowledged: reports (spend) and routed decisions."""

    def __init__(self) -> None:
        self.reports = 0
        self.routed = 0

    def drive(self, operator: OperatorThread, namespace: str, *, steps: int) -> None:
        usage = _usage(namespace)
        req = RequestRequirements(model="llama3:8b", namespace=namespace, estimated_tokens=1)

        def step(c: Controller) -> int:
            for _ in range(3):
                c.engine.report_usage(usage)
            return sum(c.engine.route(req).outcome is Outcome.ROUTED for _ in range(2))

        for _ in range(steps):
            self.routed += operator.call(step)
            self.reports += 3
            threading.Event().wait(0.02)  # spread over many flushes

    @property
    def usd(self) -> float:
        return self.reports * COST


def _persisted(objects: Objects) -> tuple[float, int]:
    decisions = objects.status("routingpolicies", POLICY).get("decisions") or {}
    return (spent_usd(objects), int(decisions.get("routed") or 0))


@contextlib.contextmanager
def _budgeted_operator(
    cluster: Cluster, proxy: FaultProxy, namespace: str, tmp_path: Path
) -> Iterator[tuple[client.ApiClient, Objects, OperatorThread]]:
    """An operator reaching the API server through `proxy` (0.5 s client timeout), with the
    budgeted policy created and in its registry."""
    kubeconfig = proxy.kubeconfig(cluster.kubeconfig, tmp_path / "via-proxy.kubeconfig")
    config = operator_config(kubeconfig, namespace, flush_interval_s=0.2, api_timeout_s=0.5)
    with cluster.api_client() as api, running_operator(config) as operator:
        objects = Objects(api, namespace)
        create_budgeted(objects, monthly_limit_usd=10000)
        wait_for(
            lambda: operator.call(lambda c: (namespace, POLICY) in c.registry.snapshot.policies)
        )
        yield api, objects, operator


def test_answers_delayed_past_the_client_timeout_are_counted_once(
    cluster: Cluster, proxy: FaultProxy, namespace: str, tmp_path: Path
) -> None:
    with _budgeted_operator(cluster, proxy, namespace, tmp_path) as (_, objects, operator):
        tally = Tally()
        proxy.set(delay_answers_s=1.0)  # twice the client timeout: writes land, answers do not
        tally.drive(operator, namespace, steps=60)
        wait_for(lambda: _persisted(objects)[0] > 0)  # applied while no answer got through
        assert operator.call(lambda c: c.kube.reachable) is False
        proxy.clear()
        wait_for(lambda: _persisted(objects) == (tally.usd, tally.routed), timeout=60)
        wait_for(lambda: operator.call(lambda c: c.writer.staleness_s()) == 0.0)
        assert _persisted(objects) == (tally.usd, tally.routed)


def test_dropped_answers_torn_writes_andConflictStorms_are_counted_once(
    cluster: Cluster, proxy: FaultProxy, namespace: str, tmp_path: Path
) -> None:
    with _budgeted_operator(cluster, proxy, namespace, tmp_path) as (api, objects, operator):
        tally = Tally()
        proxy.set(drop_answers=0.3)
        tally.drive(operator, namespace, steps=40)
        proxy.set(reset_requests=0.3)
        tally.drive(operator, namespace, steps=40)
        proxy.clear()
        with ConflictStorm(api, namespace):
            tally.drive(operator, namespace, steps=40)
        assert proxy.dropped > 0
        assert proxy.resets > 0
        wait_for(lambda: _persisted(objects) == (tally.usd, tally.routed), timeout=60)


class ConflictStorm:
    """Another writer bumps the policy's resourceVersion as fast as it can (409 for the ledger)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._objects = client.CustomObjectsApi(api)
        self._namespace = namespace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.bumps = 0

    def __enter__(self) -> ConflictStorm:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            body = {"metadata": {"annotations": {"storm": str(self.bumps)}}}
            self._objects.patch_namespaced_custom_object(
                GROUP, VERSION, self._namespace, "routingpolicies", POLICY, body
            )
            self.bumps += 1
