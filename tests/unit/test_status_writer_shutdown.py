"""The status writer's flush on shutdown: spend and urgent changes are what must be written,
until the deadline; counters and probe refreshes only in the time left, for a bounded time; a
write still hanging at the deadline is abandoned, so shutdown ends when it says it does."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import pytest
from routing_factories import backend
from test_controller_loops import StubKube, _writer, writer_fleet

from nexus_operator.operator.kube import BACKENDS
from nexus_operator.operator.status_writer import COUNTERS, URGENT, StatusWriter
from nexus_operator.routing import Registry

FLEET = 40
URGENT_NAMES = ("b05", "b39")
# A guard against a flush that never returns (the test fails instead of hanging); never reached
# when the deadline holds.
HANG_GUARD_S = 30.0


def _with_optional_s(writer: StatusWriter, optional_s: float) -> StatusWriter:
    """The writer, allowed `optional_s` on shutdown for counters and probe refreshes."""
    writer._settings = replace(writer._settings, shutdown_optional_s=optional_s)
    return writer


async def _saturated(*, optional_s: float) -> tuple[Registry, StubKube, StatusWriter]:
    """The fleet written once, then a routed decision counted on every Backend (a counter update
    each) and two Backends drained (an urgent change each): every object has something queued."""
    registry, kube = writer_fleet(FLEET)
    writer = _writer(registry, kube)
    await writer.flush()
    for i in range(FLEET):
        registry.runtime.backend("default", f"b{i:02d}").selected_total = 1
    for name in URGENT_NAMES:
        registry.upsert_backend(backend(name, draining=True))
    return registry, kube, _with_optional_s(writer, optional_s)


def _written_backends(kube: StubKube, since: int) -> list[str]:
    return [path.split("/")[-2] for path, _ in kube.patches[since:] if "/backends/" in path]


def _ready_reason(kube: StubKube, name: str) -> str:
    conditions = kube.objects[BACKENDS.path("default", name)]["status"]["conditions"]
    return str(next(c for c in conditions if c["type"] == "Ready")["reason"])


async def test_shutdown_writes_urgent_changes_and_leaves_counters_without_time_for_them() -> None:
    _registry, kube, writer = await _saturated(optional_s=0.0)
    before = len(kube.patches)
    complete = await writer.final_flush(deadline=time.monotonic() + HANG_GUARD_S)
    written = _written_backends(kube, before)
    assert complete
    assert sorted(written) == sorted(URGENT_NAMES)
    assert all(_ready_reason(kube, name) == "Draining" for name in URGENT_NAMES)
    assert writer.queue.count(URGENT) == 0
    assert writer.queue.count(COUNTERS) == FLEET - len(URGENT_NAMES)


async def test_shutdown_writes_counters_after_urgent_changes_when_time_remains() -> None:
    _registry, kube, writer = await _saturated(optional_s=HANG_GUARD_S)
    before = len(kube.patches)
    assert await writer.final_flush(deadline=time.monotonic() + HANG_GUARD_S)
    written = _written_backends(kube, before)
    assert sorted(written[: len(URGENT_NAMES)]) == sorted(URGENT_NAMES)
    assert sorted(written) == [f"b{i:02d}" for i in range(FLEET)]
    assert not writer.queue


class HangingKube(StubKube):
    """An API server that takes status patches and never answers them."""

    def __init__(self, base: StubKube) -> None:
        super().__init__()
        self.objects, self.patches = base.objects, base.patches
        self.hanging = 0

    async def merge_patch(self, path: str, body: dict[str, object]) -> dict[str, object]:
        self.hanging += 1
        await asyncio.Event().wait()
        raise AssertionError("never answered")


async def test_a_saturated_writer_stops_at_its_deadline_even_with_a_write_hanging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, kube = writer_fleet(FLEET)
    writer = _writer(registry, kube)
    await writer.flush()
    hanging = HangingKube(kube)
    writer._ledger._api = hanging  # type: ignore[assignment]  # the same objects, no answers
    for name in URGENT_NAMES:
        registry.upsert_backend(backend(name, draining=True))
    _with_optional_s(writer, HANG_GUARD_S)
    flush = writer.final_flush(deadline=time.monotonic() + 0.2)
    complete = await asyncio.wait_for(flush, HANG_GUARD_S)
    assert not complete
    assert hanging.hanging == 1  # the first urgent write was sent, then abandoned
    assert writer.staleness_s() > 0  # what was not written stays pending
    assert any("stopped at its deadline" in r.getMessage() for r in caplog.records)
    assert all(r.levelno < logging.ERROR for r in caplog.records)
