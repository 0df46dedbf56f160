"""Health probing: one asyncio task per Backend, feeding the runtime cells the pipeline reads.

Probes never block decisions: they run on their own tasks and only write to the backend's
runtime cell (state machine and latency EMA live in routing's BackendRuntime.record_probe), which
the engine reads at decision time. A task is restarted only when what it probes changes
(URL, path, interval, timeout, thresholds); spec changes elsewhere leave it running.

A Backend with credentialsSecretRef is probed with the header its Secret yields (looked up in
the registry's CredentialStore at each probe, so a rotated key is used at once); a 401/403 then
fails the probe with "credentials rejected (HTTP 401)". While its credential is unavailable (the
Backend is excluded for that anyway) the probe goes without one, and a 401/403 only proves the
endpoint is up: it counts as a success. Error texts print the URL without user-info.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    from nexus_operator.routing import BackendRuntime, Credential, Registry, RegistrySnapshot

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
    """Keeps exactly one probe task per probed Backend in the latest snapshot."""

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
        self._tasks: dict[BackendKey, tuple[ProbeTarget, asyncio.Task[None]]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=256, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(connector=connector)
        self._registry.add_listener(self.reconcile)
        self.reconcile(self._registry.snapshot)

    async def stop(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    def reconcile(self, snapshot: RegistrySnapshot) -> None:
        """Start, restart or stop tasks so they match the snapshot's Backends."""
        if self._session is None:
            return
        wanted: dict[BackendKey, api.Backend] = {
            (b.metadata.namespace, b.metadata.name): b for b in snapshot.backends.values()
        }
        for key in set(self._tasks) - set(wanted):
            self._tasks.pop(key)[1].cancel()
        for key, backend in wanted.items():
            self._ensure(key, ProbeTarget.of(backend))

    def _ensure(self, key: BackendKey, target: ProbeTarget | None) -> None:
        current = self._tasks.get(key)
        if current is not None and current[0] == target:
            return
        if current is not None:
            self._tasks.pop(key)[1].cancel()
        if target is None:
            self._registry.runtime.backend(*key).set_assumed_healthy()
            return
        task = asyncio.create_task(self._run(key, target), name=f"probe:{key[0]}/{key[1]}")
        task.add_done_callback(_log_death)
        self._tasks[key] = (target, task)

    async def _run(self, key: BackendKey, target: ProbeTarget) -> None:
        await asyncio.sleep(random.uniform(0, min(_FIRST_PROBE_JITTER_S, target.interval_s)))
        while True:
            await self.probe_once(key, target)
            await asyncio.sleep(target.interval_s)

    async def probe_once(self, key: BackendKey, target: ProbeTarget) -> bool:
        """Probe, record the result, and report a health transition; True when state changed."""
        result = await self._probe(target, self._registry.credentials.header(key))
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
    """A probe task ends only by cancellation; anything else would leave its Backend unprobed."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("Probe task %s died", task.get_name(), exc_info=task.exception())
