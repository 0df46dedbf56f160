"""Kubernetes Events for state changes people debug with `kubectl describe`.

Events are posted only for transitions (a backend became unhealthy, a budget crossed its soft or
hard limit), never per request, so their rate is bounded by real changes. Posting is best
effort: a lost Event never stops routing.

They are `events.k8s.io/v1` Events (the core/v1 Event API is the legacy one): `regarding` the
object, with `reportingController`/`reportingInstance`, an `action` per reason and a `note`.
`kubectl get events` and `kubectl describe` show them as before. kopf's own event posting is
off (handlers.configure), so the operator needs `create` on events.k8s.io events only.
"""

from __future__ import annotations

import asyncio
import logging
import time
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

# What the operator was doing when it noticed (events.k8s.io/v1 requires an action).
ACTIONS = {
    BACKEND_UNHEALTHY: "ProbeHealth",
    BACKEND_RECOVERED: "ProbeHealth",
    BUDGET_SOFT_LIMIT: "AccountSpend",
    BUDGET_HARD_LIMIT: "AccountSpend",
    BUDGET_RESET: "AccountSpend",
    CREDENTIALS_UNAVAILABLE: "ReadCredentials",
    CREDENTIALS_AVAILABLE: "ReadCredentials",
}
DEFAULT_ACTION = "Reconcile"
EVENTS_API_VERSION = "events.k8s.io/v1"

_MESSAGE_MAX = 1024
_INSTANCE_MAX = 128
_NAME_MAX = 253


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    namespace: str
    name: str
    uid: str | None = None


class EventRecorder:
    """Posts events.k8s.io/v1 Events about our objects under one reporting controller."""

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
        path = f"/apis/{EVENTS_API_VERSION}/namespaces/{ref.namespace}/events"
        try:
            await self._api.request("POST", path, body=body)
        except KubeError as exc:
            logger.warning(
                "Event %s for %s/%s not posted: %s", reason, ref.namespace, ref.name, exc
            )

    def event_body(
        self, ref: ObjectRef, *, type_: str, reason: str, message: str, now: str
    ) -> dict[str, Any]:
        regarding: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
        }
        if ref.uid:
            regarding["uid"] = ref.uid
        return {
            "apiVersion": EVENTS_API_VERSION,
            "kind": "Event",
            "metadata": {"name": _event_name(ref.name), "namespace": ref.namespace},
            "eventTime": now,
            "regarding": regarding,
            "type": type_,
            "reason": reason,
            "action": ACTIONS.get(reason, DEFAULT_ACTION),
            "note": message[:_MESSAGE_MAX],
            "reportingController": self._component,
            "reportingInstance": self._instance[:_INSTANCE_MAX],
        }


def _event_name(name: str) -> str:
    """`<object>.<nanoseconds in hex>`, as client-go names Events (events.k8s.io refuses a
    generateName ending in '.')."""
    suffix = f".{time.time_ns():x}"
    return name[: _NAME_MAX - len(suffix)] + suffix


def _now() -> str:
    """MicroTime, as eventTime requires."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
