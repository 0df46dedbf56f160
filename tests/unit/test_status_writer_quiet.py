"""An idle status flush costs what changed: Backends whose inputs are unchanged since a round
that found nothing to write are not assembled again."""

from __future__ import annotations

from routing_factories import backend
from test_controller_loops import StubKube, _writer, writer_fleet

from nexus_operator.api import HealthState
from nexus_operator.operator.kube import BACKENDS
from nexus_operator.operator.status_writer import StatusWriter
from nexus_operator.routing import Registry

FLEET = 40


async def _settled() -> tuple[Registry, StubKube, StatusWriter]:
    """The fleet's writer after two rounds: every status written, nothing left to write."""
    registry, kube = writer_fleet(FLEET)
    writer = _writer(registry, kube)
    await writer.flush()
    await writer.flush()
    return registry, kube, writer


async def test_an_idle_round_assembles_no_backend_and_writes_nothing() -> None:
    _, kube, writer = await _settled()
    assembled, patches = writer.assembled, len(kube.patches)
    await writer.flush()
    assert writer.assembled == assembled
    assert len(kube.patches) == patches


async def test_a_health_change_assembles_and_writes_only_that_backend() -> None:
    registry, kube, writer = await _settled()
    assembled, patches = writer.assembled, len(kube.patches)
    cell = registry.runtime.backend("default", "b07")
    cell.health_state = HealthState.UNHEALTHY
    await writer.flush()
    assert writer.assembled == assembled + 1
    written = [path for path, _ in kube.patches[patches:] if "/backends/" in path]
    assert written == [f"{BACKENDS.path('default')}/b07/status"]
    status = kube.objects[f"{BACKENDS.path('default')}/b07"]["status"]
    assert status["health"]["state"] == "Unhealthy"


async def test_a_spec_change_of_one_backend_assembles_only_that_backend() -> None:
    registry, kube, writer = await _settled()
    assembled = writer.assembled
    registry.upsert_backend(backend("b03", draining=True))
    await writer.flush()
    assert writer.assembled == assembled + 1
    ready = kube.objects[f"{BACKENDS.path('default')}/b03"]["status"]["conditions"][0]
    assert ready["reason"] == "Draining"
