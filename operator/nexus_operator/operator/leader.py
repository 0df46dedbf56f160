"""Leader election with a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it.

Only the leader writes non-additive status (conditions, health, exclusions); every replica serves
decisions and adds its own budget and counter deltas regardless. Expiry is judged on the local
monotonic clock from the moment this replica last saw the Lease record change, never by
comparing another host's renewTime with ours, so clock skew between replicas cannot make two
leaders. A leader counts its lease from the moment it sent the renewal (not when the answer came)
and steps down once it has not renewed within the renew deadline, which is shorter than the lease
duration (client-go: 10 s of 15 s), so it stops writing before anyone else may take over.
Release is conditional on the Lease being the version this replica wrote last, so a slow shutdown
cannot clear a lease a new holder has since taken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .kube import ConflictError, KubeApi, KubeError, NotFoundError

logger = logging.getLogger(__name__)

Monotonic = Callable[[], float]


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str
    identity: str
    duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    renew_interval_s: float = 2.0


def _microtime(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Tries to hold the Lease every renew interval; `is_leader` is read by the status writer."""

    def __init__(
        self,
        api: KubeApi,
        settings: LeaseSettings,
        *,
        monotonic: Monotonic = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._api = api
        self._settings = settings
        self._monotonic = monotonic
        self._on_change = on_change
        self._leader = False
        self._renewed_at = float("-inf")
        self._written_version: str | None = None
        self._seen_version: str | None = None
        self._seen_at = 0.0

    @property
    def is_leader(self) -> bool:
        if self._leader and self._monotonic() - self._renewed_at > self._settings.renew_deadline_s:
            self._set_leader(False)
        return self._leader

    @property
    def _path(self) -> str:
        s = self._settings
        return f"/apis/coordination.k8s.io/v1/namespaces/{s.namespace}/leases/{s.name}"

    async def run(self) -> None:
        while True:
            await self.try_acquire_or_renew()
            await asyncio.sleep(self._settings.renew_interval_s)

    async def try_acquire_or_renew(self) -> bool:
        """One election round; errors only cost this round (the deadline above handles loss)."""
        try:
            lease = await self._api.get(self._path)
        except NotFoundError:
            return await self._create()
        except KubeError as exc:
            logger.warning("Lease %s unreadable: %s", self._settings.name, exc)
            return self.is_leader
        return await self._contend(lease)

    async def release(self) -> None:
        """Hand over at once on graceful shutdown instead of making the others wait out the lease."""
        if not self.is_leader:
            return
        body = {
            "metadata": {"resourceVersion": self._written_version},
            "spec": {"holderIdentity": None, "leaseDurationSeconds": 1},
        }
        try:
            await self._api.merge_patch(self._path, body)
        except ConflictError:
            logger.info(
                "Lease %s changed since our last renewal; not released", self._settings.name
            )
        except KubeError as exc:
            logger.warning("Lease %s not released: %s", self._settings.name, exc)
        self._set_leader(False)

    async def _create(self) -> bool:
        now = datetime.now(UTC)
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self._settings.name, "namespace": self._settings.namespace},
            "spec": self._holder_spec(now, transitions=0),
        }
        path = self._path.rsplit("/", 1)[0]
        sent_at = self._monotonic()
        try:
            created = await self._api.request("POST", path, body=body)
        except KubeError as exc:
            logger.info("Lease %s not created (%s); retrying next round", self._settings.name, exc)
            return self.is_leader
        return self._won(sent_at, created)

    async def _contend(self, lease: dict[str, Any]) -> bool:
        spec = lease.get("spec") or {}
        version = str(lease["metadata"]["resourceVersion"])
        if version != self._seen_version:
            self._seen_version, self._seen_at = version, self._monotonic()
        holder = spec.get("holderIdentity")
        if holder == self._settings.identity:
            return await self._write(version, {"renewTime": _microtime(datetime.now(UTC))})
        if holder and not self._expired(spec):
            self._set_leader(False)
            return False
        now = datetime.now(UTC)
        transitions = int(spec.get("leaseTransitions") or 0) + 1
        return await self._write(version, self._holder_spec(now, transitions=transitions))

    def _expired(self, spec: dict[str, Any]) -> bool:
        duration = float(spec.get("leaseDurationSeconds") or self._settings.duration_s)
        return self._monotonic() - self._seen_at > duration

    async def _write(self, version: str, spec: dict[str, Any]) -> bool:
        body = {"metadata": {"resourceVersion": version}, "spec": spec}
        sent_at = self._monotonic()
        try:
            written = await self._api.merge_patch(self._path, body)
        except ConflictError:
            return self.is_leader
        except KubeError as exc:
            logger.warning("Lease %s not written: %s", self._settings.name, exc)
            return self.is_leader
        return self._won(sent_at, written)

    def _holder_spec(self, now: datetime, *, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self._settings.identity,
            "leaseDurationSeconds": int(self._settings.duration_s),
            "acquireTime": _microtime(now),
            "renewTime": _microtime(now),
            "leaseTransitions": transitions,
        }

    def _won(self, sent_at: float, lease: dict[str, Any]) -> bool:
        self._renewed_at = sent_at
        self._written_version = str((lease.get("metadata") or {}).get("resourceVersion") or "")
        self._set_leader(True)
        return True

    def _set_leader(self, leader: bool) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        logger.info("Lease %s: %s", self._settings.name, "acquired" if leader else "lost")
        if self._on_change is not None:
            self._on_change(leader)
