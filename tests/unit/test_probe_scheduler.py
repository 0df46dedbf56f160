"""The prober's timer heap: idle cost follows the probes due, and a registry change reschedules
only the Backends whose probe target it changes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from routing_factories import backend

from nexus_operator.api import Backend
from nexus_operator.operator.probing import HealthProber
from nexus_operator.routing import Registry

UNREACHABLE = "http://127.0.0.1:9"
FLEET = 200


def _backend(name: str, *, url: str = UNREACHABLE, **spec: Any) -> Backend:
    check = {"intervalSeconds": 3600, "timeoutSeconds": 1}
    return backend(name, url=url, healthCheck=check, **spec)


class _Probed(list[tuple[str, str]]):
    """The keys probed, in order; `until` waits for a condition on them."""

    def __init__(self) -> None:
        super().__init__()
        self.event = asyncio.Event()

    def __call__(self, key: tuple[str, str], cell: object) -> None:
        self.append(key)
        self.event.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        async def wait() -> None:
            while not condition():
                self.event.clear()
                await self.event.wait()

        await asyncio.wait_for(wait(), timeout=30)


async def _started_fleet() -> tuple[Registry, HealthProber, _Probed]:
    registry = Registry()
    registry.replace_all([_backend(f"b{i:03d}") for i in range(FLEET)], [])
    prober = HealthProber(registry)
    probed = _Probed()
    prober.on_probe = probed
    await prober.start()
    await probed.until(lambda: len(probed) == FLEET)
    return registry, prober, probed


def _next_due_in(prober: HealthProber) -> float:
    due = prober.next_due_in()
    assert due is not None
    return due


async def test_after_a_round_nothing_is_due_until_the_next_interval() -> None:
    _, prober, probed = await _started_fleet()
    try:
        assert prober.probed == FLEET
        assert sorted(set(probed)) == sorted(probed)
        assert _next_due_in(prober) > 3000
    finally:
        await prober.stop()


async def test_a_change_reschedules_only_the_backend_whose_probe_target_changed() -> None:
    registry, prober, probed = await _started_fleet()
    try:
        started = prober.probes_started
        probed.clear()
        registry.upsert_backend(_backend("b001", url="http://127.0.0.1:10"))
        registry.upsert_backend(_backend("b002", labels={"team": "a"}, priority=3))
        await probed.until(lambda: probed == [("default", "b001")])
        assert prober.probes_started == started + 1
        assert _next_due_in(prober) > 3000
    finally:
        await prober.stop()


async def test_deleted_and_unprobed_backends_leave_the_schedule() -> None:
    registry, prober, _ = await _started_fleet()
    try:
        registry.delete_backend("default", "b003")
        registry.upsert_backend(backend("b004", url=UNREACHABLE, healthCheck={"enabled": False}))
        assert prober.probed == FLEET - 2
        assert registry.runtime.backend("default", "b004").health_state.value == "Healthy"
    finally:
        await prober.stop()
