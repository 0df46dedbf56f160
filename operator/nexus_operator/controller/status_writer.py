"""The coalescing status writer: wakes every flush interval and patches only what changed.

Per flush, at most one patch per object from the ledger (additive deltas, every replica) and one
from the leader (conditions, health, exclusions, counts). Desired status is diffed against the
last status the API server holds (observed from watch events and patch responses), so unchanged
status is never written and our own status events cause no further writes. Health latency and
probe time alone are refreshed at most every `refresh_interval`, so steady probing does not turn
into a patch per probe. A failed flush (API server gone) leaves everything pending for the next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pydantic

from nexus_operator import api

from . import events
from .budget_ledger import BudgetLedger, budget_state
from .diffing import merge_diff
from .kube import BACKENDS, POLICIES, Kind, KubeApi, KubeError, NotFoundError
from .leader import LeaderElector
from .observed import ObjectKey, ObservedStatuses
from .status_assembly import BackendFacts, PolicyFacts, backend_status, policy_status

if TYPE_CHECKING:
    from nexus_operator.routing import Registry, RoutingEngine

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]
Clock = Callable[[], datetime]
_VOLATILE_HEALTH = frozenset({"latencyMs", "lastProbeTime"})


@dataclass(frozen=True)
class WriterSettings:
    flush_interval_s: float = 2.0
    refresh_interval_s: float = 30.0


class StatusWriter:
    def __init__(
        self,
        kube: KubeApi,
        registry: Registry,
        engine: RoutingEngine,
        *,
        observed: ObservedStatuses,
        ledger: BudgetLedger,
        leader: LeaderElector | None,
        recorder: events.EventRecorder | None,
        clock: Clock,
        settings: WriterSettings = WriterSettings(),
    ) -> None:
        self._kube = kube
        self._registry = registry
        self._engine = engine
        self._observed = observed
        self._ledger = ledger
        self._leader = leader
        self._recorder = recorder
        self._clock = clock
        self._settings = settings
        self._written_at: dict[ObjectKey, float] = {}
        self._budget_states: dict[tuple[str, str], api.BudgetState] = {}
        self.patches = 0

    @property
    def leading(self) -> bool:
        return self._leader is not None and self._leader.is_leader

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._settings.flush_interval_s)
            await self.flush()

    async def flush(self) -> None:
        """One coalesced round: additive deltas always, non-additive status when leading."""
        await self._ledger.flush()
        if not self.leading:
            return
        snapshot = self._registry.snapshot
        now = self._clock()
        for backend in list(snapshot.backends.values()):
            await self._write_backend(backend, now)
        for policy in list(snapshot.policies.values()):
            await self._write_policy(policy, now)

    async def _write_backend(self, backend: api.Backend, now: datetime) -> None:
        namespace, name = backend.metadata.namespace, backend.metadata.name
        cell = self._registry.runtime.backend(namespace, name)
        facts = BackendFacts(
            health_state=cell.health_state,
            latency_ms=cell.latency_ms,
            last_probe_time=cell.last_probe_time,
            consecutive_failures=cell.consecutive_failures,
            last_error=cell.last_error,
            in_flight=cell.in_flight,
        )
        exclusions = [
            api.BackendExclusion(
                policy=x.policy,
                reconciler=x.reconciler,
                reason_code=x.reason_code,
                reason=x.reason,
                suggested_action=x.suggested_action,
            )
            for x in self._engine.backend_exclusions(namespace, name)
        ]
        key = (BACKENDS.plural, namespace, name)
        existing = self._existing_conditions(key)
        desired = backend_status(backend, facts, exclusions=exclusions, existing=existing, now=now)
        await self._write(BACKENDS, key, desired)

    async def _write_policy(self, policy: api.RoutingPolicy, now: datetime) -> None:
        namespace, name = policy.metadata.namespace, policy.metadata.name
        report = self._engine.policy_report(namespace, name)
        spent = self._registry.runtime.policy(namespace, name).spent_at(now)
        state = budget_state(spent, policy.spec.budget)
        facts = PolicyFacts(
            matched_backends=len(report.matched_backends),
            eligible_backends=report.eligible_backends,
            exclusions=[
                api.PolicyExclusion(
                    backend=x.backend,
                    reconciler=x.reconciler,
                    reason_code=x.reason_code,
                    reason=x.reason,
                    suggested_action=x.suggested_action,
                )
                for x in report.exclusions
            ],
            shadowed_by=report.shadowed_by,
            alias_error=report.alias_error,
            spent_usd=spent,
            budget_state=state,
        )
        key = (POLICIES.plural, namespace, name)
        existing = self._existing_conditions(key)
        desired = policy_status(policy, facts, existing=existing, now=now)
        if await self._write(POLICIES, key, desired):
            self._note_budget(policy, state, spent)

    def _existing_conditions(self, key: ObjectKey) -> list[api.Condition]:
        observed = self._observed.get(key)
        raw = observed.status.get("conditions") if observed else None
        try:
            return [api.Condition.model_validate(item) for item in raw or []]
        except pydantic.ValidationError:
            return []

    async def _write(self, kind: Kind, key: ObjectKey, desired: Mapping[str, Any]) -> bool:
        """Patch the difference (last writer wins: only the leader writes these fields)."""
        observed = self._observed.get(key)
        patch = merge_diff(observed.status if observed else {}, desired)
        if not patch or self._only_volatile(key, patch):
            return True
        path = kind.path(key[1], key[2]) + "/status"
        try:
            response = await self._kube.merge_patch(path, {"status": patch})
        except NotFoundError:
            return False
        except KubeError as exc:
            logger.warning("Status of %s %s/%s not written: %s", kind.plural, key[1], key[2], exc)
            return False
        self.patches += 1
        self._written_at[key] = time.monotonic()
        self._observed.record(kind.plural, response)
        return True

    def _only_volatile(self, key: ObjectKey, patch: Mapping[str, Any]) -> bool:
        """A patch touching nothing but health latency/probe time waits for the refresh interval."""
        if set(patch) != {"health"} or not set(patch["health"]) <= _VOLATILE_HEALTH:
            return False
        age = time.monotonic() - self._written_at.get(key, float("-inf"))
        return age < self._settings.refresh_interval_s

    def _note_budget(self, policy: api.RoutingPolicy, state: api.BudgetState, spent: float) -> None:
        """Post an Event when the budget state moves up (or back to Normal after a rollover)."""
        key = (policy.metadata.namespace, policy.metadata.name)
        previous = self._budget_states.get(key)
        self._budget_states[key] = state
        if previous is None or previous == state or self._recorder is None:
            return
        reason, type_ = {
            api.BudgetState.SOFT_LIMIT: (events.BUDGET_SOFT_LIMIT, events.WARNING),
            api.BudgetState.HARD_LIMIT: (events.BUDGET_HARD_LIMIT, events.WARNING),
            api.BudgetState.NORMAL: (events.BUDGET_RESET, events.NORMAL),
        }[state]
        ref = events.ObjectRef("RoutingPolicy", key[0], key[1], policy.metadata.uid)
        message = f"Budget is {state.value}: spent ${spent:.2f} this month."
        self._recorder.emit(ref, type_=type_, reason=reason, message=message)
