"""A saturated status writer keeps its configured rate, always writes the most urgent change
waiting first, writes a condition change before a backlog of counter updates drains, and on
shutdown writes the urgent changes without waiting for the counter backlog."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
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
from nexus_operator.operator.rate_limit import TokenBucket
from nexus_operator.operator.replica import Controller
from nexus_operator.operator.status_writer import COUNTERS, ORDER, URGENT, Plan, priority_of
from nexus_operator.routing import RequestRequirements
from nexus_testkit.localcluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]

BACKENDS = 12
QPS, BURST = 4.0, 2
BACKLOG = 120


class WriteLog:
    """Token grants, accepted writes (with the number of counter updates still queued then) and
    queue picks (the class taken, the highest class still waiting) of one status writer."""

    def __init__(self, controller: Controller) -> None:
        self.grants: list[float] = []
        self.writes: list[tuple[ObjectKey, int, int]] = []
        self.picks: list[tuple[int, int | None]] = []
        writer, limiter, queue = (
            controller.writer,
            controller.writer.limiter,
            controller.writer.queue,
        )
        acquire, pop = limiter.acquire, queue.pop

        async def counted() -> None:
            await acquire()
            self.grants.append(time.monotonic())

        def written(key: ObjectKey, patch: dict[str, Any]) -> None:
            self.writes.append((key, priority_of(patch), writer.queue.count(COUNTERS)))

        def picked(order: Sequence[int]) -> tuple[ObjectKey, int, Plan] | None:
            item = pop(order)
            if item is not None and tuple(order) == ORDER:  # not the final flush: spend first
                self.picks.append(
                    (item[1], min((p for p in ORDER if queue.count(p)), default=None))
                )
            return item

        setattr(limiter, "acquire", counted)  # noqa: B010 (instrument this instance only)
        setattr(queue, "pop", picked)  # noqa: B010
        controller.ledger.on_write = written

    def assert_within_rate(self, qps: float, burst: int) -> None:
        grants = list(self.grants)
        for i, start in enumerate(grants):
            for j in range(i, len(grants)):
                assert j - i + 1 <= burst + qps * (grants[j] - start) + 1e-6


def test_saturated_writer_keeps_its_rate_and_always_takes_the_most_urgent_change_waiting(
    cluster: Cluster, namespace: str
) -> None:
    config = operator_config(
        cluster.kubeconfig, namespace, flush_interval_s=0.3, status_qps=QPS, status_burst=BURST
    )
    with cluster.api_client() as api, running_operator(config) as operator:
        objects = Objects(api, namespace)
        _unprobed_backends_and_a_round_robin_policy(
            objects, names=[f"b{i:02d}" for i in range(BACKENDS)]
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
    log.assert_within_rate(QPS, BURST)
    assert log.picks
    assert all(waiting is None or taken <= waiting for taken, waiting in log.picks)
    assert [key for key, priority, _ in log.writes if key[2] == "b07" and priority == URGENT]


def _unprobed_backends_and_a_round_robin_policy(objects: Objects, *, names: list[str]) -> None:
    """Backends `names` (health checks off) and one roundRobin policy over every model."""
    for name in names:
        objects.create(
            "backends", name, backend_spec("http://127.0.0.1:9", healthCheck={"enabled": False})
        )
    objects.create(
        "routingpolicies", "all", {"modelPatterns": ["*"], "selection": {"strategy": "roundRobin"}}
    )


def _all_have_conditions(objects: Objects, count: int = BACKLOG) -> bool:
    listed = objects.list("backends")
    return len(listed) == count and all(
        (item.get("status") or {}).get("conditions") for item in listed
    )


def test_an_urgent_change_is_written_before_a_backlog_of_counter_updates_drains(
    cluster: Cluster, namespace: str
) -> None:
    qps, burst = 15.0, 5
    config = operator_config(
        cluster.kubeconfig, namespace, flush_interval_s=0.3, status_qps=qps, status_burst=burst
    )
    with cluster.api_client() as api, running_operator(config) as operator:
        objects = Objects(api, namespace)
        _unprobed_backends_and_a_round_robin_policy(
            objects, names=[f"b{i:03d}" for i in range(BACKLOG)]
        )
        wait_for(lambda: _all_have_conditions(objects), timeout=90)
        wait_for(
            lambda: operator.call(lambda c: c.writer.staleness_s() == 0 and not c.writer.queue)
        )
        log = operator.call(WriteLog)
        req = RequestRequirements(model="llama3:8b", namespace=namespace, estimated_tokens=1)
        operator.call(lambda c: [c.engine.route(req) for _ in range(BACKLOG)])  # one each
        wait_for(lambda: any(priority == COUNTERS for _, priority, _ in log.writes))
        last = f"b{BACKLOG - 1:03d}"  # queued last: a round planned at its start writes it last
        objects.patch_spec("backends", last, {"draining": True})
        wait_for(
            lambda: condition(objects.status("backends", last), "Ready").get("reason") == "Draining"
        )
        backlog = {f"b{i:03d}" for i in range(BACKLOG - 1)}
        # An empty queue is not enough: a write taken from it may still be in flight.
        wait_for(lambda: backlog <= {key[2] for key, _, _ in log.writes}, timeout=60)
        writes = list(log.writes)
    log.assert_within_rate(qps, burst)
    urgent = next(
        i for i, (key, priority, _) in enumerate(writes) if key[2] == last and priority == URGENT
    )
    counters_before = [key[2] for key, p, _ in writes[:urgent] if p == COUNTERS]
    counters_after = [key[2] for key, p, _ in writes[urgent + 1 :] if p == COUNTERS]
    assert last not in counters_before
    assert writes[urgent][2] >= BACKLOG // 2  # counter updates still queued when it was written
    assert len(counters_after) >= BACKLOG // 2
    assert backlog <= {key[2] for key, _, _ in writes if key[0] == "backends"}


def test_a_saturated_writer_writes_urgent_changes_at_shutdown_and_leaves_the_counters(
    cluster: Cluster, namespace: str
) -> None:
    names = [f"b{i:02d}" for i in range(30)]
    drained = ("b03", "b17")
    config = operator_config(
        cluster.kubeconfig,
        namespace,
        flush_interval_s=0.3,
        shutdown_flush_s=30.0,
        shutdown_optional_s=0.0,  # no time for counters at all: none is written on shutdown
    )
    req = RequestRequirements(model="llama3:8b", namespace=namespace, estimated_tokens=1)

    def draining_seen(c: Controller) -> bool:
        backends = c.registry.snapshot.backends
        return all(backends[(namespace, name)].spec.draining for name in drained)

    with cluster.api_client() as api:
        objects = Objects(api, namespace)
        with running_operator(config) as operator:
            _unprobed_backends_and_a_round_robin_policy(objects, names=names)
            wait_for(lambda: _all_have_conditions(objects, len(names)), timeout=90)
            wait_for(
                lambda: operator.call(lambda c: c.writer.staleness_s() == 0 and not c.writer.queue)
            )
            # Saturated from now on: one write a second, a counter update queued per Backend.
            operator.call(lambda c: setattr(c.writer, "limiter", TokenBucket(1.0, 1)))
            log = operator.call(WriteLog)
            operator.call(lambda c: [c.engine.route(req) for _ in names])
            wait_for(lambda: operator.call(lambda c: c.writer.queue.count(COUNTERS)) >= 20)
            for name in drained:
                objects.patch_spec("backends", name, {"draining": True})
            wait_for(lambda: operator.call(draining_seen))
        # stopped: the final flush has run
        writes = list(log.writes)
        for name in drained:
            assert condition(objects.status("backends", name), "Ready")["reason"] == "Draining"
    assert {key[2] for key, priority, _ in writes if priority == URGENT} >= set(drained)
    counters = [key[2] for key, priority, _ in writes if priority == COUNTERS]
    assert len(counters) < 20  # the backlog stayed queued: shutdown did not wait for it
