"""The controller's loops (status writer, prober, leader election, start and stop) against a stub.

The stub stands in for the thin JSON client (controller.kube.KubeApi), not for an API server:
it stores objects by path, applies status merge patches and can be told to fail.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, cast

import kopf
import pytest
from aiohttp import web
from kubernetes.client import Configuration
from loopback_http import serve_get
from routing_factories import NOW, backend, policy

from nexus_operator import api
from nexus_operator.api.base import MESSAGE_MAX
from nexus_operator.operator import handlers
from nexus_operator.operator.budget_ledger import BudgetLedger
from nexus_operator.operator.invalid_specs import InvalidSpec, InvalidSpecs
from nexus_operator.operator.kube import (
    BACKENDS,
    POLICIES,
    ConflictError,
    KubeApi,
    NotFoundError,
    UnavailableError,
)
from nexus_operator.operator.leader import LeaderElector, LeaseSettings
from nexus_operator.operator.observed import ObservedStatuses
from nexus_operator.operator.probing import HealthProber, ProbeTarget
from nexus_operator.operator.replica import Controller, ControllerConfig
from nexus_operator.operator.status_writer import StatusWriter, WriterSettings
from nexus_operator.routing import Registry, RoutingEngine

JsonObject = dict[str, Any]


class StubKube:
    """Objects by path; status patches merge into them; `failure` makes every patch raise."""

    def __init__(self) -> None:
        self.objects: dict[str, JsonObject] = {}
        self.patches: list[tuple[str, JsonObject]] = []
        self.failure: Exception | None = None
        self.reachable = True
        self._version = 1

    def add(self, path: str, obj: api.Backend | api.RoutingPolicy) -> None:
        body = {"metadata": obj.metadata.model_dump(mode="json", exclude_none=True), "status": {}}
        body["metadata"]["resourceVersion"] = str(self._next_version())
        self.objects[path] = body

    async def get(self, path: str) -> JsonObject:
        if path not in self.objects:
            raise NotFoundError(404, f"{path} not found")
        return copy.deepcopy(self.objects[path])

    async def request(self, method: str, path: str, *, body: JsonObject, **_: Any) -> JsonObject:
        assert method == "POST"
        created = copy.deepcopy(body)
        created["metadata"]["resourceVersion"] = str(self._next_version())
        self.objects[f"{path}/{body['metadata']['name']}"] = created
        return copy.deepcopy(created)

    async def merge_patch(self, path: str, body: JsonObject) -> JsonObject:
        if self.failure is not None:
            raise self.failure
        self.patches.append((path, body))
        target = self.objects[path.removesuffix("/status")]
        precondition = (body.get("metadata") or {}).get("resourceVersion")
        if precondition and precondition != target["metadata"]["resourceVersion"]:
            raise ConflictError(409, "the object has been modified")
        target.setdefault("status", {}).update(body.get("status") or {})
        target.setdefault("spec", {}).update(body.get("spec") or {})
        target["metadata"]["resourceVersion"] = str(self._next_version())
        return copy.deepcopy(target)

    def close(self) -> None:
        """Nothing to release."""

    def _next_version(self) -> int:
        self._version += 1
        return self._version


class Leading:
    is_leader = True


def _writer(
    registry: Registry,
    kube: StubKube,
    *,
    leading: bool = True,
    interval: float = 2.0,
    refresh_interval_s: float = 30.0,
    invalid: InvalidSpecs | None = None,
) -> StatusWriter:
    ledger = BudgetLedger(cast(KubeApi, kube), registry, ObservedStatuses(), replica="me")
    return StatusWriter(
        registry,
        RoutingEngine(registry),
        ledger=ledger,
        invalid=invalid or InvalidSpecs(),
        leader=cast(LeaderElector, Leading()) if leading else None,
        recorder=None,
        clock=lambda: NOW,
        settings=WriterSettings(flush_interval_s=interval, refresh_interval_s=refresh_interval_s),
    )


def writer_fleet(count: int) -> tuple[Registry, StubKube]:
    """`count` healthy Backends b00, b01, … and one policy "all", in a registry and a stub kube."""
    registry = Registry()
    backends = [backend(f"b{i:02d}") for i in range(count)]
    registry.replace_all(backends, [policy("all")])
    registry.mark_unprobed_healthy()
    kube = StubKube()
    for b in backends:
        kube.add(BACKENDS.path("default", b.metadata.name), b)
    kube.add(POLICIES.path("default", "all"), policy("all"))
    return registry, kube


def _cluster(*, unhealthy_error: str | None = None) -> tuple[Registry, StubKube]:
    registry = Registry()
    local, rp = backend("local"), policy("rp")
    registry.replace_all([local], [rp])
    cell = registry.runtime.backend("default", "local")
    if unhealthy_error is None:
        cell.set_assumed_healthy()
    else:
        cell.record_probe(
            False, None, error=unhealthy_error, failure_threshold=1, recovery_threshold=1, now=NOW
        )
    kube = StubKube()
    kube.add(BACKENDS.path("default", "local"), local)
    kube.add(POLICIES.path("default", "rp"), rp)
    return registry, kube


async def _wait_for(predicate: Callable[[], bool]) -> None:
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


async def test_unhealthy_backend_with_a_probe_error_at_the_bound_still_gets_policy_status() -> None:
    registry, kube = _cluster(unhealthy_error="x" * MESSAGE_MAX)
    await _writer(registry, kube).flush()
    policy_status = kube.objects[POLICIES.path("default", "rp")]["status"]
    [exclusion] = policy_status["exclusions"]
    assert exclusion["reasonCode"] == "unhealthy"
    assert len(exclusion["reason"]) == MESSAGE_MAX


async def test_failed_flush_leaves_the_spend_for_a_later_round_that_writes_it_once() -> None:
    registry, kube = _cluster()
    registry.runtime.policy("default", "rp").add_spend(0.75, NOW)
    writer = _writer(registry, kube)
    kube.failure = RuntimeError("connection pool is closed")
    with pytest.raises(RuntimeError):
        await writer.flush()
    kube.failure = None
    await writer.flush()
    await writer.flush()
    [entry] = kube.objects[POLICIES.path("default", "rp")]["status"]["replicas"]
    assert (entry["replica"], entry["spentUsd"]) == ("me", 0.75)


def _rejected(kind: str, name: str, *, generation: int = 2) -> InvalidSpec:
    return InvalidSpec(kind, "default", name, generation, f"uid-{name}", "spec.x: rejected")


def _ready(status: JsonObject) -> JsonObject:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


async def test_never_valid_policy_gets_ready_false_invalid_spec_once() -> None:
    registry, kube = _cluster()
    path = POLICIES.path("default", "new")
    kube.objects[path] = {"metadata": {"name": "new", "resourceVersion": "1"}, "status": {}}
    invalid = InvalidSpecs()
    invalid.note((POLICIES.plural, "default", "new"), _rejected("RoutingPolicy", "new"))
    writer = _writer(registry, kube, invalid=invalid)
    await writer.flush()
    await writer.flush()
    status = kube.objects[path]["status"]
    assert (_ready(status)["reason"], _ready(status)["message"]) == (
        "InvalidSpec",
        "spec.x: rejected",
    )
    assert status["observedGeneration"] == 2
    assert [p for p, _ in kube.patches].count(path + "/status") == 1


async def test_follower_writes_no_invalid_spec_status() -> None:
    registry, kube = _cluster()
    invalid = InvalidSpecs()
    invalid.note((BACKENDS.plural, "default", "local"), _rejected("Backend", "local"))
    await _writer(registry, kube, leading=False, invalid=invalid).flush()
    assert "conditions" not in kube.objects[BACKENDS.path("default", "local")]["status"]


async def test_rejected_policy_edit_reports_invalid_spec_and_keeps_the_rest_current() -> None:
    """The last valid spec still serves, so its status (spend, counts, other conditions) stays
    current; only Ready says the latest edit was rejected."""
    registry = Registry()
    rp = policy("rp", budget={"monthlyLimitUsd": 10})
    registry.replace_all([], [rp])
    registry.runtime.policy("default", "rp").add_spend(0.5, NOW)
    kube = StubKube()
    kube.add(POLICIES.path("default", "rp"), rp)
    invalid = InvalidSpecs()
    invalid.note((POLICIES.plural, "default", "rp"), _rejected("RoutingPolicy", "rp"))
    await _writer(registry, kube, invalid=invalid).flush()
    status = kube.objects[POLICIES.path("default", "rp")]["status"]
    assert _ready(status)["reason"] == "InvalidSpec"
    assert status["budget"]["spentUsd"] == 0.5
    assert status["eligibleCount"] == 0
    types = {c["type"]: c["reason"] for c in status["conditions"]}
    assert types["NoEligibleBackends"] == "NoBackendOffersModels"


async def test_normal_status_resumes_once_the_record_is_cleared() -> None:
    registry, kube = _cluster()
    key = (BACKENDS.plural, "default", "local")
    invalid = InvalidSpecs()
    invalid.note(key, _rejected("Backend", "local"))
    writer = _writer(registry, kube, invalid=invalid)
    await writer.flush()
    invalid.clear(key)
    await writer.flush()
    status = kube.objects[BACKENDS.path("default", "local")]["status"]
    assert (_ready(status)["status"], _ready(status)["reason"]) == ("True", "Accepted")
    assert status["health"]["state"] == "Healthy"


async def test_writer_keeps_running_after_a_round_that_raises() -> None:
    registry, kube = _cluster()
    kube.failure = RuntimeError("boom")
    writer = _writer(registry, kube, interval=0.001)
    task = asyncio.create_task(writer.run())
    await _wait_for(lambda: writer.rounds >= 3 or task.done())
    kube.failure = None
    await _wait_for(lambda: bool(kube.patches) or task.done())
    assert not task.done()
    task.cancel()
    await asyncio.wait([task])


async def test_stop_flushes_and_releases_the_lease_even_when_a_loop_had_died() -> None:
    kube = StubKube()
    controller = Controller(ControllerConfig(identity="me"), cast(KubeApi, kube))
    assert controller.leader is not None
    assert await controller.leader.try_acquire_or_renew()

    async def dies() -> None:
        raise RuntimeError("loop bug")

    controller._spawn(dies(), "doomed")
    await asyncio.sleep(0)
    await controller.stop()
    lease = kube.objects[controller.leader._path]
    assert lease["spec"]["holderIdentity"] is None


@pytest.fixture
async def failing_server() -> AsyncIterator[str]:
    async def unavailable(_: web.Request) -> web.Response:
        return web.Response(status=503)

    async with serve_get(unavailable) as url:
        yield url


def _target(url: str) -> ProbeTarget:
    return ProbeTarget(
        url=url,
        interval_s=10.0,
        timeout_s=2.0,
        failure_threshold=1,
        recovery_threshold=1,
        authenticated=False,
    )


async def _probe(url: str) -> tuple[bool, str | None]:
    registry = Registry()
    prober = HealthProber(registry, clock=lambda: NOW)
    await prober.start()
    try:
        await prober.probe_once(("default", "b"), _target(url))
    finally:
        await prober.stop()
    cell = registry.runtime.backend("default", "b")
    return cell.health_state is api.HealthState.UNHEALTHY, cell.last_error


async def test_http_error_of_a_long_url_is_cut_to_the_status_bound(failing_server: str) -> None:
    unhealthy, error = await _probe(failing_server + "/" + "p" * 1900)
    assert unhealthy
    assert error is not None
    assert len(error) == MESSAGE_MAX


async def test_url_aiohttp_cannot_encode_is_a_failed_probe_with_its_error() -> None:
    unhealthy, error = await _probe(f"http://{'a' * 64}.com/api/tags")
    assert unhealthy
    assert error is not None
    assert "label" in error


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _elector(kube: StubKube, clock: Clock, identity: str = "me") -> LeaderElector:
    settings = LeaseSettings(
        namespace="default", name="lease", identity=identity, duration_s=15.0, renew_deadline_s=10.0
    )
    return LeaderElector(cast(KubeApi, kube), settings, monotonic=clock)


class SlowKube(StubKube):
    """Every write takes `delay` seconds of the fake clock to be answered."""

    def __init__(self, clock: Clock, delay: float) -> None:
        super().__init__()
        self._clock, self._delay = clock, delay

    async def merge_patch(self, path: str, body: JsonObject) -> JsonObject:
        self._clock.now += self._delay
        return await super().merge_patch(path, body)


async def test_leader_counts_its_lease_from_when_it_sent_the_renewal() -> None:
    clock = Clock()
    kube = SlowKube(clock, delay=9.0)
    elector = _elector(kube, clock)
    assert await elector.try_acquire_or_renew()
    sent_at = clock.now
    assert await elector.try_acquire_or_renew()
    clock.now = sent_at + 10.5
    assert not elector.is_leader


async def test_leader_that_cannot_renew_steps_down_at_the_deadline_before_the_lease_expires() -> (
    None
):
    clock = Clock()
    kube = StubKube()
    elector = _elector(kube, clock)
    assert await elector.try_acquire_or_renew()
    kube.failure = UnavailableError(0, "connection refused")
    clock.now = 11.0
    assert not await elector.try_acquire_or_renew()


async def test_release_never_clears_a_lease_another_replica_has_taken() -> None:
    clock = Clock()
    kube = StubKube()
    elector = _elector(kube, clock)
    assert await elector.try_acquire_or_renew()
    path = elector._path
    await kube.merge_patch(path, {"spec": {"holderIdentity": "other"}})
    await elector.release()
    assert kube.objects[path]["spec"]["holderIdentity"] == "other"


class RecordingController:
    """Stands in for the Controller to see what a failed startup leaves running."""

    instances: ClassVar[list[RecordingController]] = []

    def __init__(self, *_: Any) -> None:
        self.running = False
        RecordingController.instances.append(self)

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False


async def test_failed_startup_hook_leaves_no_controller_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "Controller", RecordingController)
    monkeypatch.setattr(handlers, "KubeApi", lambda _: None)
    monkeypatch.setattr(handlers, "load_configuration", lambda _: None)

    async def port_in_use(*_: Any) -> None:
        raise OSError(98, "Address already in use")

    registry = handlers.build_registry(ControllerConfig(), handlers.Hooks(started=port_in_use))
    [startup] = [h for h in registry._activities.get_all_handlers() if h.activity == "startup"]
    for _ in range(2):
        with pytest.raises(OSError, match="in use"):
            await startup.fn(settings=kopf.OperatorSettings(), memo=kopf.Memo())
    assert [c.running for c in RecordingController.instances] == [False, False]


@pytest.fixture
async def initializing_api() -> AsyncIterator[str]:
    """Answers the first two lists like a just-started API server: 429 with a plain-text body."""
    calls = {"n": 0}

    async def answer(_: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] <= 2:
            return web.Response(status=429, text="storage is (re)initializing")
        return web.json_response({"items": []})

    async with serve_get(answer) as url:
        yield url


async def test_initial_list_retries_while_the_api_server_is_initializing(
    initializing_api: str,
) -> None:
    configuration = Configuration()
    configuration.host = initializing_api
    controller = Controller(ControllerConfig(), KubeApi(configuration))
    try:
        await controller._initial_sync()
    finally:
        controller.kube.close()
    assert controller.registry.synced
