"""The serving plane's building blocks in one process: the registry change feed a worker
mirrors, in-flight counters shared by several engines, and metrics summed over workers."""

from __future__ import annotations

import subprocess
import sys

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from routing_factories import backend, policy, registry

from nexus_operator.pipeline import RequestRequirements
from nexus_operator.routing import Outcome, Registry, RegistryChange, RoutingEngine
from nexus_operator.serving import RoutingMetrics
from nexus_operator.serving.plane.counters import RowAllocator, SharedCounters, spawn_context
from nexus_operator.serving.plane.families import WorkerFamilies


def _mirror(source: Registry) -> Registry:
    mirror = Registry()
    source.add_change_listener(mirror.apply)
    return mirror


def test_a_registry_fed_the_change_feed_holds_what_the_source_holds() -> None:
    source = Registry()
    mirror = _mirror(source)
    source.upsert_backend(backend("a"))
    source.upsert_backend(backend("b"))
    source.upsert_policy(policy("p", ["llama3:*"]))
    source.delete_backend("default", "a")
    source.replace_all([backend("b", priority=5), backend("c")], [])
    assert mirror.snapshot.backends == source.snapshot.backends
    assert mirror.snapshot.policies == source.snapshot.policies == {}


def test_a_full_relist_sends_only_what_changed() -> None:
    source = registry([backend("a"), backend("b")])
    changes: list[RegistryChange] = []
    source.add_change_listener(changes.append)
    source.replace_all([backend("a"), backend("b", priority=9)], [])
    [change] = changes
    assert change.full
    assert [b.metadata.name for b in change.backends] == ["b"]
    assert change.deleted_backends == ()


def _bound_engine(counters: SharedCounters, rows: RowAllocator) -> RoutingEngine:
    engine = RoutingEngine(registry([backend("capped", maxConcurrency=3)]))
    key = ("default", "capped")
    engine.registry.runtime.backend(*key).bind_in_flight(counters, rows.row_of(key))
    return engine


def test_max_concurrency_holds_over_engines_sharing_counters() -> None:
    counters = SharedCounters(spawn_context(), rows=16)
    rows = RowAllocator(counters)
    first, second = _bound_engine(counters, rows), _bound_engine(counters, rows)
    request = RequestRequirements(model="llama3:8b", estimated_tokens=10)
    outcomes = [engine.route(request).outcome for engine in (first, second, first, second)]
    assert outcomes[:3] == [Outcome.ROUTED] * 3
    assert outcomes[3] is not Outcome.ROUTED
    assert first.registry.runtime.backend("default", "capped").in_flight == 3


def test_a_retired_row_is_reused_only_when_fresh_ones_run_out_and_it_is_free() -> None:
    counters = SharedCounters(spawn_context(), rows=2)
    rows = RowAllocator(counters)
    a = rows.row_of(("ns", "a"))
    assert counters.try_take(a, 1)
    rows.retire(("ns", "a"))
    b = rows.row_of(("ns", "a"))  # re-created: a fresh row, not the one its old slot holds
    assert b != a
    counters.release(a)
    assert rows.row_of(("ns", "c")) == a


def test_decision_counters_of_workers_add_up_on_the_control_scrape() -> None:
    control = RoutingMetrics(Registry())
    for worker in (0, 1):
        metrics = RoutingMetrics(Registry())
        metrics.observe_error("Route", "INVALID_ARGUMENT")
        control.absorb(worker, metrics.counts())
    families = WorkerFamilies()
    for worker in (0, 1):
        family = CounterMetricFamily("nexus_gateway_requests", "", labels=["outcome"])
        family.add_metric(["ROUTED"], 2)
        families.absorb(worker, [family])
    scrape = CollectorRegistry()
    scrape.register(control)
    scrape.register(families)
    text = generate_latest(scrape).decode()
    assert 'nexus_grpc_errors_total{code="INVALID_ARGUMENT",method="Route"} 2.0' in text
    assert 'nexus_gateway_requests_total{outcome="ROUTED"} 4.0' in text


def test_the_control_process_lowers_the_priority_of_all_its_threads() -> None:
    """Run in a child: the test process keeps its own priority."""
    script = (
        "import os, threading\n"
        "from nexus_operator.serving.plane.supervisor import lower_priority\n"
        "ready, stop = threading.Event(), threading.Event()\n"
        "def wait():\n"
        "    ready.set(); stop.wait()\n"
        "thread = threading.Thread(target=wait); thread.start(); ready.wait()\n"
        "before = os.getpriority(os.PRIO_PROCESS, 0)\n"
        "lower_priority(5)\n"
        "tids = [int(t) for t in os.listdir('/proc/self/task')]\n"
        "print(before, *sorted({os.getpriority(os.PRIO_PROCESS, t) for t in tids}))\n"
        "stop.set(); thread.join()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    before, *after = (int(value) for value in out)
    assert after == [min(19, before + 5)]
