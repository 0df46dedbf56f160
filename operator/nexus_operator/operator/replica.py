"""One replica's controller: the parts that run beside kopf's watches, started and stopped together.

Built in kopf's on.startup (so every asyncio object lives on the operator loop) and stopped in
on.cleanup: stop probing and the loops, flush pending status once more, then release the Lease so
another replica takes over at once. Role `router` (a read-only sidecar) never contends for the
Lease and posts no Events: it only adds its own usage deltas.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nexus_operator import api
from nexus_operator.routing import Credential, CredentialProblem, Registry, RoutingEngine

from . import events
from .budget_ledger import BudgetLedger
from .kube import BACKENDS, KubeApi, KubeError
from .leader import LeaderElector, LeaseSettings
from .observed import ObservedStatuses
from .probing import BackendKey, HealthProber
from .registry_sync import RegistrySync, Scope, resync
from .secret_credentials import SecretCredentials
from .spool import Spool, store_identity, stored_identity
from .status_writer import StatusWriter, WriterSettings

logger = logging.getLogger(__name__)

ROLE_OPERATOR = "operator"
ROLE_ROUTER = "router"
# How often in-flight slots whose usage report never arrived are released.
SLOT_EXPIRY_PERIOD_S = 10.0


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ControllerConfig:
    namespaces: tuple[str, ...] = ()
    kubeconfig: str | None = None
    role: str = ROLE_OPERATOR
    flush_interval_s: float = 2.0
    refresh_interval_s: float = 30.0
    resync_interval_s: float = 300.0
    credentials_refresh_s: float = 30.0
    lease_namespace: str = "default"
    lease_name: str = "nexus-operator"
    lease_duration_s: float = 15.0
    identity: str = field(default_factory=default_identity)
    component: str = "nexus-operator"
    # Stable identity of this replica's own status entries (pod name); default: the one pinned in
    # the spool directory, else `identity`.
    replica_id: str | None = None
    spool_dir: str | None = None
    spool_interval_s: float = 0.1
    near_limit_interval_s: float = 0.2
    status_qps: float = 50.0
    status_burst: int = 100
    shutdown_flush_s: float = 15.0
    shutdown_optional_s: float = 2.0
    api_timeout_s: float = 10.0


def replica_identity(config: ControllerConfig) -> str:
    """--replica-id, else the identity pinned in the spool directory, else the process identity;
    pinned there so a restarted container replays its spool into its own entries."""
    spool = Path(config.spool_dir) if config.spool_dir else None
    replica = config.replica_id or (stored_identity(spool) if spool else None) or config.identity
    if spool is not None and stored_identity(spool) != replica:
        store_identity(spool, replica)
    return replica


class Controller:
    """Registry, engine, probes, ledger, leader election and status writer of one replica."""

    def __init__(self, config: ControllerConfig, kube: KubeApi) -> None:
        self.config = config
        self.kube = kube
        kube.timeout = config.api_timeout_s
        self.registry = Registry()
        self.engine = RoutingEngine(self.registry)
        self.observed = ObservedStatuses()
        self.sync = RegistrySync(self.registry, self.observed)
        self.scope = Scope(config.namespaces)
        routing = config.role != ROLE_ROUTER
        self.leader = LeaderElector(kube, self._lease_settings()) if routing else None
        self.recorder = (
            events.EventRecorder(kube, component=config.component, instance=config.identity)
            if routing
            else None
        )
        self.replica_id = replica_identity(config)
        self.ledger = BudgetLedger(kube, self.registry, self.observed, replica=self.replica_id)
        self.sync.on_status = self.ledger.adopt
        self.spool = (
            Spool(
                Path(config.spool_dir),
                replica=self.replica_id,
                snapshot=self.ledger.spool_records,
                interval_s=config.spool_interval_s,
            )
            if config.spool_dir
            else None
        )
        self.credentials = SecretCredentials(
            kube,
            self.registry,
            refresh_interval_s=config.credentials_refresh_s,
            on_change=self._credentials_changed,
        )
        self.writer = StatusWriter(
            self.registry,
            self.engine,
            ledger=self.ledger,
            invalid=self.sync.invalid,
            leader=self.leader,
            recorder=self.recorder,
            clock=utcnow,
            settings=WriterSettings(
                flush_interval_s=config.flush_interval_s,
                refresh_interval_s=config.refresh_interval_s,
                near_limit_interval_s=config.near_limit_interval_s,
                status_qps=config.status_qps,
                status_burst=config.status_burst,
                shutdown_flush_s=config.shutdown_flush_s,
                shutdown_optional_s=config.shutdown_optional_s,
            ),
            credentials=self.credentials,
        )
        self.prober = HealthProber(self.registry, on_transition=self._health_changed)
        self._tasks: list[asyncio.Task[None]] = []

    def _lease_settings(self) -> LeaseSettings:
        c = self.config
        return LeaseSettings(
            namespace=c.lease_namespace,
            name=c.lease_name,
            identity=c.identity,
            duration_s=c.lease_duration_s,
            renew_deadline_s=c.lease_duration_s * 2 / 3,
            renew_interval_s=max(c.lease_duration_s / 7.5, 0.2),
        )

    async def start(self) -> None:
        """Replay the spool, rebuild the registry from a full list, read the named Secrets, then
        start probing and the background loops."""
        if self.spool is not None:
            recovered = self.spool.load()
            if recovered:
                logger.info("Replaying %d spooled usage totals", len(recovered))
            self.ledger.recover(recovered)
            self._spawn(self.spool.run(), "spool")
        await self._initial_sync()
        # The registry just built lives as long as the process: out of the collector's reach,
        # full collections no longer walk every Backend's objects (long pauses at 10,000).
        gc.collect()
        gc.freeze()
        if self.leader is not None:
            await self.leader.try_acquire_or_renew()
            self._spawn(self.leader.run(), "leader")
        await self.credentials.start()
        await self.prober.start()
        self._spawn(self.writer.run(), "status-writer")
        self._spawn(self._resync_loop(), "resync")
        self._spawn(self._expiry_loop(), "slot-expiry")
        self._spawn(self.credentials.run(), "credentials")

    async def stop(self) -> None:
        """Every step runs even if one fails: the final flush and the Lease release matter most."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await _reap(task)
        self._tasks.clear()
        await self.prober.stop()
        await self._sync_spool()
        deadline = time.monotonic() + self.config.shutdown_flush_s
        try:
            await self.writer.final_flush(deadline=deadline)
        except Exception:
            logger.exception("Final status flush failed")
        await self._sync_spool()
        if self.recorder is not None:
            await self.recorder.drain()
        if self.leader is not None:
            await self.leader.release()
        self.kube.close()

    async def _sync_spool(self) -> None:
        if self.spool is None:
            return
        try:
            await self.spool.sync()
        except OSError:
            logger.exception("Final spool write failed")

    def health(self) -> dict[str, Any]:
        """Liveness details; `apiServer: unreachable` is the degraded state routing survives."""
        return {
            "registrySynced": self.registry.synced,
            "leader": self.writer.leading,
            "apiServer": "reachable" if self.kube.reachable else "unreachable",
        }

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coroutine, name=name))

    async def _initial_sync(self) -> None:
        """Retry the first list: gRPC stays NOT_SERVING (registry unsynced) until it succeeds."""
        delay = 0.2
        while True:
            try:
                await resync(self.kube, self.scope, sync=self.sync)
                return
            except KubeError as exc:
                logger.warning("Initial list failed, retrying in %.1fs: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.resync_interval_s)
            try:
                await resync(self.kube, self.scope, sync=self.sync)
            except KubeError as exc:
                logger.warning("Resync skipped: %s", exc)

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(SLOT_EXPIRY_PERIOD_S)
            released = self.engine.expire_slots(utcnow())
            if released:
                logger.info("Released %d in-flight slots without a usage report", released)

    def _credentials_changed(
        self, key: BackendKey, outcome: Credential | CredentialProblem
    ) -> None:
        """One Event per change of a Backend's credential: unavailable (naming Secret and key,
        never a value), or available again; its status is looked at within a tick."""
        self.writer.touch((BACKENDS.plural, *key))
        if self.recorder is None or not self.writer.leading:
            return
        backend = self.registry.snapshot.backends.get(key)
        uid = backend.metadata.uid if backend is not None else None
        ref = events.ObjectRef("Backend", key[0], key[1], uid)
        if isinstance(outcome, CredentialProblem):
            self.recorder.emit(
                ref,
                type_=events.WARNING,
                reason=events.CREDENTIALS_UNAVAILABLE,
                message=f"Credentials unavailable: {outcome.message}",
            )
        else:
            self.recorder.emit(
                ref,
                type_=events.NORMAL,
                reason=events.CREDENTIALS_AVAILABLE,
                message=f"Credential read from Secret key {outcome.source}.",
            )

    def _health_changed(
        self,
        key: BackendKey,
        previous: api.HealthState,
        *,
        state: api.HealthState,
        error: str | None,
    ) -> None:
        self.writer.touch((BACKENDS.plural, *key))  # written within a tick, not a scan
        if self.recorder is None or not self.writer.leading:
            return
        backend = self.registry.snapshot.backends.get(key)
        uid = backend.metadata.uid if backend is not None else None
        ref = events.ObjectRef("Backend", key[0], key[1], uid)
        if state == api.HealthState.UNHEALTHY:
            message = f"Backend became Unhealthy: {error or 'health probe failed'}"
            self.recorder.emit(
                ref, type_=events.WARNING, reason=events.BACKEND_UNHEALTHY, message=message
            )
        elif previous == api.HealthState.UNHEALTHY:
            self.recorder.emit(
                ref,
                type_=events.NORMAL,
                reason=events.BACKEND_RECOVERED,
                message="Backend is Healthy.",
            )


async def _reap(task: asyncio.Task[None]) -> None:
    """Await a cancelled loop; one that had died is logged, not re-raised into shutdown."""
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        logger.error("Task %s had failed", task.get_name(), exc_info=task.exception())
