"""A serving worker applies what the control process sends in bounded steps: a large change
across several loop turns with decisions answered between them (each from a snapshot the
change's slices published, in order), messages behind a change only after all of it, and
changes to distinct objects folded into one registry write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from routing_factories import backend

from nexus_operator.api import Backend, HealthState
from nexus_operator.pipeline import RequestRequirements
from nexus_operator.routing import Outcome, RegistryChange, RoutingEngine
from nexus_operator.serving import RoutingMetrics
from nexus_operator.serving.plane import wire
from nexus_operator.serving.plane.counters import SharedCounters, spawn_context
from nexus_operator.serving.plane.inbox import Inbox, split
from nexus_operator.serving.plane.link import Link
from nexus_operator.serving.plane.worker import APPLY_SLICE_OBJECTS, PlaneServer, WorkerHost

REQUEST = RequestRequirements(model="llama3:8b", estimated_tokens=10)
NO_CHECKS: dict[str, Any] = {"healthCheck": {"enabled": False}}


def _no_servers(
    engine: RoutingEngine, metrics: RoutingMetrics, *, ports: Sequence[int] | None
) -> Sequence[PlaneServer]:
    return ()


@pytest.fixture
async def host() -> AsyncIterator[WorkerHost]:
    """A worker's host on this loop, its link over real pipes (nothing at the other end)."""
    context = spawn_context()
    receive, _to_worker = context.Pipe(duplex=False)
    _from_worker, send = context.Pipe(duplex=False)
    link = Link(send=send, receive=receive, name="test-worker")
    worker = WorkerHost(0, link, counters=SharedCounters(context, rows=4096), factory=_no_servers)
    link.start(asyncio.get_running_loop(), on_batch=worker._on_batch, on_closed=lambda: None)
    yield worker
    link.close()


def _change(
    backends: Sequence[Backend] = (), *, deleted: Sequence[str] = (), first_row: int = 0
) -> wire.Change:
    keys = [(b.metadata.namespace, b.metadata.name) for b in backends]
    change = RegistryChange(
        backends=tuple(backends), deleted_backends=tuple(("default", n) for n in deleted)
    )
    return wire.Change(change, {key: first_row + i for i, key in enumerate(keys)})


def _names(worker: WorkerHost) -> list[str]:
    return [name for _, name in worker.registry.snapshot.backends]


async def test_a_large_change_is_applied_across_turns_and_routes_meanwhile_see_whole_slices(
    host: WorkerHost,
) -> None:
    fleet = [backend(f"b-{i:04d}", **NO_CHECKS) for i in range(APPLY_SLICE_OBJECTS * 5 + 7)]
    order = [b.metadata.name for b in fleet]
    host._on_batch([_change(fleet), wire.Serving(True)])

    turns = 0
    while not host.registry.synced:
        held = _names(host)
        # What a decision sees now is the change applied up to a slice boundary, in order.
        assert held == order[: len(held)]
        assert len(held) % APPLY_SLICE_OBJECTS == 0
        assert 0 < len(held) < len(fleet)
        decision = await host.engine.route_async(REQUEST)
        assert decision.outcome is Outcome.ROUTED
        assert decision.backend is not None
        assert decision.backend.name in held
        turns += 1
        await asyncio.sleep(0)

    assert turns == 5  # one slice per turn; `Serving` waited for the last one
    assert _names(host) == order


async def test_changes_to_distinct_backends_arriving_together_make_one_snapshot(
    host: WorkerHost,
) -> None:
    before = host.registry.publishes
    host._on_batch([_change([backend(f"b-{i}")], first_row=i) for i in range(20)])
    assert host.registry.publishes == before + 1
    assert sorted(_names(host)) == sorted(f"b-{i}" for i in range(20))
    assert host.registry.runtime.backend("default", "b-7").in_flight == 0


async def test_a_backend_deleted_and_recreated_in_one_batch_starts_afresh_as_one_by_one(
    host: WorkerHost,
) -> None:
    """The fold stops at a change that touches a backend already in it: the delete's runtime
    reset happens between the two writes, as applied one at a time, so the new incarnation
    keeps what its own write set (its concurrency cap) and starts with unknown health."""
    key = ("default", "a")
    host._on_batch(
        [
            _change([backend("a"), backend("b")]),
            wire.Health(key, HealthState.HEALTHY, 5.0, None, None),
            _change(deleted=["a"]),
            _change([backend("a", priority=3, maxConcurrency=2)], first_row=7),
        ]
    )
    await asyncio.sleep(0)
    assert sorted(_names(host)) == ["a", "b"]
    assert host.registry.snapshot.backends[key].spec.priority == 3
    cell = host.registry.runtime.backend(*key)
    assert cell.health_state is HealthState.UNKNOWN
    assert cell.max_concurrency == 2


def test_a_split_change_keeps_apply_order_and_each_part_its_rows() -> None:
    deleted = ["gone-0", "gone-1"]
    written = [backend(f"w-{i}") for i in range(4)]
    message = _change(written, deleted=deleted)
    first, rest = split(message, 3)
    assert first.change.deleted_backends == (("default", "gone-0"), ("default", "gone-1"))
    assert [b.metadata.name for b in first.change.backends] == ["w-0"]
    assert first.rows == {("default", "w-0"): 0}
    assert [b.metadata.name for b in rest.change.backends] == ["w-1", "w-2", "w-3"]
    assert rest.rows == {("default", f"w-{i}"): i for i in (1, 2, 3)}


def test_the_inbox_hands_out_other_messages_in_order_between_changes() -> None:
    inbox = Inbox()
    serving = wire.Serving(True)
    inbox.extend([_change([backend("a")]), serving, _change([backend("b")])])
    taken = [inbox.take(APPLY_SLICE_OBJECTS) for _ in range(3)]
    assert taken[1] is serving
    assert len(inbox) == 0
