"""The status writer's queue: urgent changes overtake a backlog of counter updates, classes are
written in order and oldest first within a class; probe latency and time alone are written
only when they moved meaningfully or at the heartbeat."""

from __future__ import annotations

from datetime import timedelta

from routing_factories import NOW, backend
from test_controller_loops import StubKube, _writer, writer_fleet

from nexus_operator.api import HealthState
from nexus_operator.operator.kube import BACKENDS
from nexus_operator.operator.metrics import StatusWriterCollector
from nexus_operator.operator.status_writer import (
    COUNTERS,
    HEARTBEAT_MIN_S,
    ORDER,
    REFRESH,
    URGENT,
    StatusWriter,
    heartbeat_s,
    latency_moved,
    priority_of,
)
from nexus_operator.operator.write_queue import WriteQueue
from nexus_operator.routing import Registry

FLEET = 40


async def _flushed_fleet_with_counters_to_write() -> tuple[Registry, StubKube, StatusWriter]:
    """The fleet with its statuses written, then one routed decision counted on every Backend."""
    registry, kube = writer_fleet(FLEET)
    writer = _writer(registry, kube)
    await writer.flush()
    for i in range(FLEET):
        registry.runtime.backend("default", f"b{i:02d}").selected_total = 1
    return registry, kube, writer


def _written_backends(kube: StubKube, since: int) -> list[str]:
    return [path.split("/")[-2] for path, _ in kube.patches[since:] if "/backends/" in path]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_queue_age_of_a_class_is_how_long_its_oldest_entry_has_waited_in_it() -> None:
    clock = Clock()
    queue: WriteQueue[str, int] = WriteQueue(4, clock=clock)
    assert queue.oldest_age_s(URGENT) == 0.0
    queue.put("a", 0, priority=COUNTERS)
    clock.now += 5
    queue.put("b", 0, priority=COUNTERS)
    queue.put("a", 1, priority=COUNTERS)  # still waiting since it was first queued
    clock.now += 1
    assert queue.oldest_age_s(COUNTERS) == 6.0
    queue.put("b", 0, priority=URGENT)  # urgent from now on
    clock.now += 2
    assert queue.oldest_age_s(URGENT) == 2.0
    queue.pop(ORDER)
    assert queue.oldest_age_s(URGENT) == 0.0


def test_queue_writes_classes_in_order_and_oldest_first_within_a_class() -> None:
    queue: WriteQueue[str, int] = WriteQueue(4)
    for key in ("c1", "c2", "c3"):
        queue.put(key, 0, priority=COUNTERS)
    queue.put("r1", 0, priority=REFRESH)
    queue.put("c1", 1, priority=COUNTERS)  # a newer plan in the same class keeps its place
    queue.put("c3", 0, priority=URGENT)  # promoted: ahead of every counter update
    queue.put("u2", 0, priority=URGENT)
    popped = []
    while (item := queue.pop(ORDER)) is not None:
        popped.append(item[:2])
    assert popped == [
        ("c3", URGENT),
        ("u2", URGENT),
        ("c1", COUNTERS),
        ("c2", COUNTERS),
        ("r1", REFRESH),
    ]
    assert len(queue) == 0


async def test_a_condition_change_overtakes_a_queued_backlog_of_counter_updates() -> None:
    registry, kube, writer = await _flushed_fleet_with_counters_to_write()
    await writer.scan()
    assert writer.queue.count(COUNTERS) >= FLEET
    before = len(kube.patches)
    registry.upsert_backend(backend("b39", draining=True))  # last in the backlog's order
    await writer.look_at_touched()
    assert writer.queue.keys(URGENT)[0] == (BACKENDS.plural, "default", "b39")
    await writer.drain(ORDER)
    written = _written_backends(kube, before)
    assert written[0] == "b39"
    assert sorted(written) == [f"b{i:02d}" for i in range(FLEET)]
    ready = kube.objects[BACKENDS.path("default", "b39")]["status"]["conditions"][0]
    assert ready["reason"] == "Draining"


async def test_a_touched_health_transition_is_queued_without_waiting_for_a_scan() -> None:
    registry, kube = writer_fleet(FLEET)
    writer = _writer(registry, kube)
    await writer.flush()
    registry.runtime.backend("default", "b07").health_state = HealthState.UNHEALTHY
    writer.touch((BACKENDS.plural, "default", "b07"))
    await writer.look_at_touched()
    assert writer.queue.keys(URGENT) == [(BACKENDS.plural, "default", "b07")]
    assert writer.queue.count(COUNTERS) == 0


async def test_probe_latency_drift_is_not_written_but_a_meaningful_move_is() -> None:
    registry, kube = writer_fleet(FLEET)
    writer = _writer(registry, kube, refresh_interval_s=0.0)
    cell = registry.runtime.backend("default", "b05")
    cell.latency_ms, cell.last_probe_time = 100.0, NOW
    await writer.flush()
    await writer.flush()
    before = len(kube.patches)
    cell.latency_ms, cell.last_probe_time = 110.0, NOW + timedelta(seconds=30)
    await writer.flush()
    assert _written_backends(kube, before) == []
    cell.latency_ms = 150.0
    await writer.flush()
    assert _written_backends(kube, before) == ["b05"]
    health = kube.objects[BACKENDS.path("default", "b05")]["status"]["health"]
    assert health["latencyMs"] == 150.0


async def test_after_a_restart_probe_time_alone_is_written_only_once_the_heartbeat_is_due() -> None:
    registry, kube = writer_fleet(FLEET)
    first = _writer(registry, kube)
    for name, probed in (("b01", NOW - timedelta(seconds=60)), ("b02", NOW - timedelta(hours=1))):
        registry.runtime.backend("default", name).last_probe_time = probed
    await first.flush()
    restarted = _writer(registry, kube)  # no memory of its writes: the status's probe time counts
    await restarted.flush()
    before = len(kube.patches)
    for name in ("b01", "b02"):
        registry.runtime.backend("default", name).last_probe_time = NOW
    await restarted.scan()
    assert restarted.queue.keys(REFRESH) == [(BACKENDS.plural, "default", "b02")]
    await restarted.drain(ORDER)
    assert _written_backends(kube, before) == ["b02"]


def test_probe_refresh_classes_and_thresholds() -> None:
    assert priority_of({"health": {"lastProbeTime": "t", "latencyMs": 3.0}}) == REFRESH
    assert priority_of({"health": {"lastProbeTime": "t"}, "routing": {"inFlight": 1}}) == COUNTERS
    assert priority_of({"health": {"state": "Unhealthy", "lastProbeTime": "t"}}) == URGENT
    assert not latency_moved(2.0, 6.0)  # under LATENCY_MIN_MS
    assert not latency_moved(200.0, 230.0)  # under LATENCY_SHARE
    assert latency_moved(200.0, 250.0)
    assert latency_moved(None, 3.0)
    assert heartbeat_s(1_000, qps=50) == HEARTBEAT_MIN_S
    assert heartbeat_s(10_000, qps=50) == 2_000


async def test_metrics_show_the_backlog_by_class() -> None:
    registry, _kube, writer = await _flushed_fleet_with_counters_to_write()
    registry.upsert_backend(backend("b03", draining=True))
    await writer.scan()
    collector = StatusWriterCollector(writer, writer._ledger)
    queued = {
        sample.labels["class"]: sample.value
        for family in collector.collect()
        if family.name == "nexus_status_queued"
        for sample in family.samples
    }
    # urgent: b03 and the policy that now excludes it; counters: every other Backend
    assert queued == {"urgent": 2, "spend": 0, "counters": FLEET - 1, "refresh": 0}
