"""A saturated status writer keeps its configured rate and writes conditions before counters."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from operator_support import (
    Objects,
    backend_spec,
    condition,
    operator_config,
    running_operator,
    wait_for,
)

from nexus_operator.operator.observed import ObjectKey
from nexus_operator.operator.replica import Controller
from nexus_operator.operator.status_writer import COUNTERS, SPEND, URGENT, priority_of
from nexus_operator.routing import RequestRequirements
from nexus_testkit.localcluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]

BACKENDS = 12
QPS, BURST = 4.0, 2
RANK = {URGENT: 0, SPEND: 1, COUNTERS: 2}


class WriteLog:
    """Token grants and accepted writes (with their round) of one controller's status writer."""

    def __init__(self, controller: Controller) -> None:
        self.grants: list[float] = []
        self.writes: list[tuple[int, ObjectKey, int]] = []
        writer, limiter = controller.writer, controller.writer.limiter
        acquire = limiter.acquire

        async def counted() -> None:
            await acquire()
            self.grants.append(time.monotonic())

        def written(key: ObjectKey, patch: dict[str, Any]) -> None:
            self.writes.append((writer.rounds, key, priority_of(patch)))

        setattr(limiter, "acquire", counted)  # noqa: B010 (instrument this instance only)
        controller.ledger.on_write = written


def test_saturated_writer_keeps_its_rate_and_writes_conditions_before_counters(
    cluster: Cluster, namespace: str
) -> None:
    config = operator_config(
        cluster.kubeconfig, namespace, flush_interval_s=0.3, status_qps=QPS, status_burst=BURST
    )
    with cluster.api_client() as api, running_operator(config) as operator:
        objects = Objects(api, namespace)
        for i in range(BACKENDS):
            spec = backend_spec("http://127.0.0.1:9", healthCheck={"enabled": False})
            objects.create("backends", f"b{i:02d}", spec)
        objects.create(
            "routingpolicies",
            "all",
            {"modelPatterns": ["*"], "selection": {"strategy": "roundRobin"}},
        )
        req = RequestRequirements(model="llama3:8b", namespace=namespace, estimated_tokens=1)
        wait_for(lambda: operator.call(lambda c: len(c.registry.snapshot.backends)) == BACKENDS)
        log = operator.call(WriteLog)
        stop = threading.Event()

        def route_all_the_time() -> None:  # every backend's counters keep changing
            while not stop.is_set():
                operator.call(lambda c: [c.engine.route(req) for _ in range(BACKENDS)])
                stop.wait(0.05)

        router = threading.Thread(target=route_all_the_time, daemon=True)
        router.start()
        try:
            wait_for(lambda: len(log.writes) >= 2 * BACKENDS)
            objects.patch_spec("backends", "b07", {"draining": True})
            wait_for(
                lambda: (
                    condition(objects.status("backends", "b07"), "Ready").get("reason")
                    == "Draining"
                )
            )
        finally:
            stop.set()
            router.join(30)
    grants = log.grants
    for i, start in enumerate(grants):
        for j in range(i, len(grants)):
            assert j - i + 1 <= BURST + QPS * (grants[j] - start) + 1e-6
    rounds: dict[int, list[int]] = {}
    for round_, _, priority in log.writes:
        rounds.setdefault(round_, []).append(RANK[priority])
    assert all(ranks == sorted(ranks) for ranks in rounds.values())
    draining = [(r, p) for r, key, p in log.writes if key[2] == "b07" and p == URGENT]
    assert draining
