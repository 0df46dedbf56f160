"""Kubernetes Events for state changes people debug with `kubectl describe`.

Events are posted only for transitions (a backend became unhealthy, a budget crossed its soft or
hard limit), never per request, so their rate is bounded by real changes. Posting is best
effort: a lost Event never stops routing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nexus_operator.api import API_VERSION

from .kube import KubeApi, KubeError

logger = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"

# Reasons (CamelCase, past tense or adjectives).
BACKEND_UNHEALTHY = "BackendUnhealthy"
BACKEND_RECOVERED = "BackendRecovered"
BUDGET_SOFT_LIMIT = "BudgetSoftLimitReached"
BUDGET_HARD_LIMIT = "BudgetHardLimitReached"
BUDGET_RESET = "BudgetWithinLimit"
CREDENTIALS_UNAVAILABLE = "CredentialsUnavailable"
CREDENTIALS_AVAILABLE = "CredentialsAvailable"

_MESSAGE_MAX = 1024


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    namespace: str
    name: str
    uid: str | None = None


class EventRecorder:
    """Posts core/v1 Events about our objects under one reporting component."""

    def __init__(self, api: KubeApi, *, component: str, instance: str) -> None:
        self._api = api
        self._component = component
        self._instance = instance
        self._pending: set[asyncio.Task[None]] = set()

    def emit(self, ref: ObjectRef, *, type_: str, reason: str, message: str) -> None:
        """Post in the background; callers are synchronous hooks on the event loop."""
        task = asyncio.get_running_loop().create_task(
            self.post(ref, type_=type_, reason=reason, message=message)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def post(self, ref: ObjectRef, *, type_: str, reason: str, message: str) -> None:
        body = self.event_body(ref, type_=type_, reason=reason, message=message, now=_now())
        path = f"/api/v1/namespaces/{ref.namespace}/events"
        try:
            await self._api.request("POST", path, body=body)
        except KubeError as exc:
            logger.warning(
                "Event %s for %s/%s not posted: %s", reason, ref.namespace, ref.name, exc
            )

    def event_body(
        self, ref: ObjectRef, *, type_: str, reason: str, message: str, now: str
    ) -> dict[str, Any]:
        involved: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
        }
        if ref.uid:
            involved["uid"] = ref.uid
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
            "involvedObject": involved,
            "type": type_,
            "reason": reason,
            "message": message[:_MESSAGE_MAX],
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
