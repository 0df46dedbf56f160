"""Health probing: one scheduler over a timer heap, feeding the runtime cells the pipeline reads.

Probes never block decisions: they run on their own tasks and only write to the backend's
runtime cell (state machine and latency EMA live in routing's BackendRuntime.record_probe), which
the engine reads at decision time. The scheduler sleeps until the next probe is due, so idle
cost follows the probes actually due, not the number of Backends; at most MAX_IN_FLIGHT probes
run at once. A registry change touches only the Backends it names: a Backend's schedule is
reset only when what it probes changes (URL, path, interval, timeout, thresholds); spec changes
elsewhere leave it as it is.

A Backend with credentialsSecretRef is probed with the header its Secret yields (looked up in
the registry's CredentialStore at each probe, so a rotated key is used at once); a 401/403 then
fails the probe with "credentials rejected (HTTP 401)". While its credential is unavailable (the
Backend is excluded for that anyway) the probe goes without one, and a 401/403 only proves the
endpoint is up: it counts as a success. Error texts print the URL without user-info.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import aiohttp

from nexus_operator import api

from .bounds import clip

if TYPE_CHECKING:
    from nexus_operator.routing import (
        BackendRuntime,
        Credential,
        Registry,
        RegistryChange,
        RegistrySnapshot,
    )

logger = logging.getLogger(__name__)

BackendKey = tuple[str, str]
Clock = Callable[[], datetime]


class TransitionHook(Protocol):
    """Called when a backend's health state changes."""

    def __call__(
        self,
        key: BackendKey,
        previous: api.HealthState,
        *,
        state: api.HealthState,
        error: str | None,
    ) -> None: ...


_AUTH_REFUSALS = frozenset({401, 403})
# Headers a type's API wants on every request besides the credential: Anthropic's native
# endpoints (the probed /v1/models among them) refuse requests without a version.
_TYPE_HEADERS: dict[api.BackendType, tuple[tuple[str, str], ...]] = {
    api.BackendType.ANTHROPIC: (("anthropic-version", "2023-06-01"),),
}
# Cap on the random delay before a new task's first probe: enough to spread a thousand
# backends found at startup, small enough that a new Backend is probed within a second.
_FIRST_PROBE_JITTER_S = 1.0
# Probes running at once (the connection pool's size).
MAX_IN_FLIGHT = 256


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ProbeTarget:
    """Everything a probe task depends on; a change means restart the task."""

    url: str
    interval_s: float
    timeout_s: float
    failure_threshold: int
    recovery_threshold: int
    authenticated: bool  # the API expects a credential: cloud type or credentialsSecretRef set
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, backend: api.Backend) -> ProbeTarget | None:
        """None when probing is disabled: the backend is then assumed Healthy."""
        check = backend.spec.health_check
        if not check.enabled:
            return None
        return cls(
            url=backend.spec.url.rstrip("/") + "/" + backend.spec.health_path.lstrip("/"),
            interval_s=float(check.interval_seconds),
            timeout_s=float(check.timeout_seconds),
            failure_threshold=check.failure_threshold,
            recovery_threshold=check.recovery_threshold,
            authenticated=backend.spec.type.is_cloud
            or backend.spec.credentials_secret_ref is not None,
            headers=_TYPE_HEADERS.get(backend.spec.type, ()),
        )


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_ms: float | None
    error: str | None


class HealthProber:
    """Probes every probed Backend of the registry at its interval, from one timer heap."""

    def __init__(
        self,
        registry: Registry,
        *,
        clock: Clock = utcnow,
        on_transition: TransitionHook | None = None,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._on_transition = on_transition
        # Called after every recorded probe (the serving plane forwards health to its workers).
        self.on_probe: Callable[[BackendKey, BackendRuntime], None] | None = None
        # Each probed Backend's target and schedule generation; heap entries of an older
        # generation (the target changed, or the Backend went away) are dropped when popped.
        self._targets: dict[BackendKey, tuple[ProbeTarget, int]] = {}
        self._heap: list[tuple[float, int, BackendKey]] = []
        self._generations = itertools.count(1)
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.probes_started = 0
        self.wakeups = 0

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(connector=connector)
        self._registry.add_change_listener(self.on_change)
        self.reconcile(self._registry.snapshot)
        self._scheduler = asyncio.create_task(self._schedule(), name="probe-scheduler")
        self._scheduler.add_done_callback(_log_death)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self._registry.remove_change_listener(self.on_change)
        tasks = [*self._running, *([self._scheduler] if self._scheduler else [])]
        self._scheduler = None
        self._running.clear()
        self._targets.clear()
        self._heap.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def probed(self) -> int:
        """How many Backends are being probed."""
        return len(self._targets)

    def next_due_in(self) -> float | None:
        """Seconds until the earliest scheduled probe of a current target; None when none is."""
        dues = [due for due, gen, key in self._heap if self._targets.get(key, (None, 0))[1] == gen]
        return min(dues) - time.monotonic() if dues else None

    def reconcile(self, snapshot: RegistrySnapshot) -> None:
        """Match the schedule to every Backend of the snapshot (at start)."""
        for key in set(self._targets) - set(snapshot.backends):
            self._targets.pop(key, None)
        for key, backend in snapshot.backends.items():
            self._ensure(key, ProbeTarget.of(backend))

    def on_change(self, change: RegistryChange) -> None:
        """Registry change listener: only the Backends the change names are looked at."""
        for key in change.deleted_backends:
            self._targets.pop(key, None)
        for backend in change.backends:
            key = (backend.metadata.namespace, backend.metadata.name)
            current = self._registry.snapshot.backends.get(key)
            if current is not None:
                self._ensure(key, ProbeTarget.of(current))

    def _ensure(self, key: BackendKey, target: ProbeTarget | None) -> None:
        current = self._targets.get(key)
        if current is not None and current[0] == target:
            return
        if target is None:
            self._targets.pop(key, None)
            self._registry.runtime.backend(*key).set_assumed_healthy()
            return
        generation = next(self._generations)
        self._targets[key] = (target, generation)
        jitter = random.uniform(0, min(_FIRST_PROBE_JITTER_S, target.interval_s))
        self._push(time.monotonic() + jitter, generation, key=key)

    def _push(self, due: float, generation: int, *, key: BackendKey) -> None:
        heapq.heappush(self._heap, (due, generation, key))
        if self._heap[0][1] == generation:
            self._wake.set()

    async def _schedule(self) -> None:
        """Sleep until the earliest probe is due (or the heap gains an earlier one), start what
        is due, and reschedule each probe one interval after it started."""
        while True:
            self._wake.clear()
            delay = self._heap[0][0] - time.monotonic() if self._heap else None
            if delay is None or delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                continue
            self.wakeups += 1
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                if len(self._running) >= MAX_IN_FLIGHT:
                    await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
                    now = time.monotonic()
                due, generation, key = heapq.heappop(self._heap)
                current = self._targets.get(key)
                if current is None or current[1] != generation:
                    continue
                target = current[0]
                self._push(max(due + target.interval_s, now), generation, key=key)
                self._start_probe(key, target, generation=generation)

    def _start_probe(self, key: BackendKey, target: ProbeTarget, *, generation: int) -> None:
        self.probes_started += 1
        task = asyncio.create_task(self._probe_if_current(key, target, generation=generation))
        self._running.add(task)
        task.add_done_callback(self._probe_done)

    def _probe_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        _log_death(task)

    async def _probe_if_current(
        self, key: BackendKey, target: ProbeTarget, *, generation: int
    ) -> None:
        result = await self._probe(target, self._registry.credentials.header(key))
        current = self._targets.get(key)
        if current is not None and current[1] == generation:
            self._record(key, target, result=result)

    async def probe_once(self, key: BackendKey, target: ProbeTarget) -> bool:
        """Probe, record the result, and report a health transition; True when state changed."""
        result = await self._probe(target, self._registry.credentials.header(key))
        return self._record(key, target, result=result)

    def _record(self, key: BackendKey, target: ProbeTarget, *, result: ProbeResult) -> bool:
        cell = self._registry.runtime.backend(*key)
        previous = cell.health_state
        changed = cell.record_probe(
            result.ok,
            result.latency_ms,
            error=result.error,
            failure_threshold=target.failure_threshold,
            recovery_threshold=target.recovery_threshold,
            now=self._clock(),
        )
        if self.on_probe is not None:
            self.on_probe(key, cell)
        if changed and self._on_transition is not None:
            self._on_transition(key, previous, state=cell.health_state, error=result.error)
        return bool(changed)

    async def _probe(self, target: ProbeTarget, credential: Credential | None) -> ProbeResult:
        """Any exception is a failed probe: a URL aiohttp cannot even encode must not end the task."""
        assert self._session is not None
        headers = dict(target.headers)
        if credential is not None:
            headers[credential.header_name] = credential.header_value
        started = time.perf_counter()
        try:
            timeout = aiohttp.ClientTimeout(total=target.timeout_s)
            async with self._session.get(target.url, timeout=timeout, headers=headers) as response:
                await response.read()
                status = response.status
        except Exception as exc:
            return ProbeResult(ok=False, latency_ms=None, error=clip(_describe(exc, target)))
        latency_ms = (time.perf_counter() - started) * 1000.0
        if 200 <= status < 300:
            return ProbeResult(ok=True, latency_ms=latency_ms, error=None)
        if status in _AUTH_REFUSALS:
            if credential is not None:
                error = f"GET {api.redact_url(target.url)}: credentials rejected (HTTP {status})"
                return ProbeResult(ok=False, latency_ms=latency_ms, error=clip(error))
            if target.authenticated:
                return ProbeResult(ok=True, latency_ms=latency_ms, error=None)
        return ProbeResult(
            ok=False,
            latency_ms=latency_ms,
            error=clip(f"GET {api.redact_url(target.url)}: HTTP {status}"),
        )


def _describe(exc: Exception, target: ProbeTarget) -> str:
    url = api.redact_url(target.url)
    if isinstance(exc, TimeoutError):
        return f"GET {url}: no answer within {target.timeout_s:g}s"
    return f"GET {url}: {type(exc).__name__}: {str(exc).replace(target.url, url)}"


def _log_death(task: asyncio.Task[None]) -> None:
    """A probe or the scheduler failing is logged (probes turn every error into a result)."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("Probe task %s died", task.get_name(), exc_info=task.exception())
