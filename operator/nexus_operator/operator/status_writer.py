"""The coalescing status writer: wakes every flush interval and patches only what changed.

Per flush, at most one patch per object: this replica's additive deltas (budget spend, decision and
selection counters; every replica) joined with, on the leader only, the non-additive status
(conditions, health, exclusions, counts), written under one resourceVersion precondition by the
ledger. An object whose spec the models reject gets from the leader only Ready=False
(InvalidSpec) instead, whether it still routes with its last valid spec or never had one.
Desired status is diffed against the last status the API server holds (observed from watch
events and patch responses), so unchanged status is never written and our own status events
cause no further writes. Health latency and probe time alone are refreshed at most every
`refresh_interval`, so steady probing does not turn into a patch per probe. A failed flush (API server gone) leaves everything pending for the next.
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

from . import condition_events, events
from .bounds import clip
from .budget_ledger import BudgetLedger, backend_desired, budget_state, policy_desired
from .diffing import merge_diff
from .invalid_specs import InvalidSpec, InvalidSpecs
from .kube import BACKENDS, POLICIES, Kind
from .leader import LeaderElector
from .observed import ObjectKey
from .status_assembly import (
    BackendFacts,
    PolicyFacts,
    backend_status,
    invalid_spec_status,
    policy_status,
)

if TYPE_CHECKING:
    from nexus_operator.routing import Registry, RoutingEngine, StaticExclusion

    from .condition_list import DesiredCondition
    from .secret_credentials import SecretCredentials

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]
Clock = Callable[[], datetime]
_VOLATILE_HEALTH = frozenset({"latencyMs", "lastProbeTime"})
# A Backend whose status inputs are unchanged since a round that found nothing to write is
# skipped for this long at most; then it is assembled and diffed again whatever happened.
QUIET_TTL_S = 300.0


@dataclass(frozen=True)
class WriterSettings:
    flush_interval_s: float = 2.0
    refresh_interval_s: float = 30.0


class StatusWriter:
    def __init__(
        self,
        registry: Registry,
        engine: RoutingEngine,
        *,
        ledger: BudgetLedger,
        invalid: InvalidSpecs,
        leader: LeaderElector | None,
        recorder: events.EventRecorder | None,
        clock: Clock,
        settings: WriterSettings = WriterSettings(),
        credentials: SecretCredentials | None = None,
    ) -> None:
        self._registry = registry
        self._credentials = credentials
        self._engine = engine
        self._ledger = ledger
        self._invalid = invalid
        self._leader = leader
        self._recorder = recorder
        self._clock = clock
        self._settings = settings
        self._written_at: dict[ObjectKey, float] = {}
        self._budget_states: dict[tuple[str, str], api.BudgetState] = {}
        # Backends whose last round found nothing to write: (until, the inputs it had then).
        self._quiet: dict[ObjectKey, tuple[float, tuple[object, ...]]] = {}
        self.assembled = 0
        self.rounds = 0
        self.leader_rounds = 0

    @property
    def leading(self) -> bool:
        return self._leader is not None and self._leader.is_leader

    async def run(self) -> None:
        """Flush every interval; a round that fails is logged and the next one tries again."""
        while True:
            await asyncio.sleep(self._settings.flush_interval_s)
            try:
                await self.flush()
            except Exception:
                logger.exception("Status flush round failed; retrying next round")

    async def flush(self) -> None:
        """One coalesced round: at most one patch per object, additive deltas and (if leading) the rest."""
        snapshot = self._registry.snapshot
        now = self._clock()
        self.rounds += 1
        self.leader_rounds += self.leading
        for policy in list(snapshot.policies.values()):
            await self._flush_policy(policy, now)
        for backend in list(snapshot.backends.values()):
            await self._flush_backend(backend, now)
        if len(self._quiet) > len(snapshot.backends):
            gone = [k for k in self._quiet if (k[1], k[2]) not in snapshot.backends]
            for key in gone:
                del self._quiet[key]
        if self.leading:
            await self._flush_never_valid(now)

    async def _flush_policy(self, policy: api.RoutingPolicy, now: datetime) -> None:
        namespace, name = policy.metadata.namespace, policy.metadata.name
        key = (POLICIES.plural, namespace, name)
        delta = self._ledger.take_policy(namespace, name)
        try:
            invalid = self._invalid_record(key)
            facts = self._policy_facts(policy, now) if self.leading else None
            noted: list[condition_events.ConditionEvent] = []

            def build(status: Mapping[str, Any]) -> JsonObject:
                desired = policy_desired(status, delta, budget=policy.spec.budget, now=now)
                if facts is not None:
                    existing = _conditions(status)
                    desired |= policy_status(policy, facts, existing=existing, now=now)
                    desired = _flag_invalid(desired, invalid, now=now)
                    noted[:] = _transitions("RoutingPolicy", stored=status, desired=desired)
                return self._coalesced(key, merge_diff(status, desired))

            written = await self._ledger.write(POLICIES, namespace, name=name, build=build)
        except Exception:
            self._ledger.give_back(namespace, name, delta=delta)
            raise
        if written is None:
            self._ledger.give_back(namespace, name, delta=delta)
            return
        self._ledger.settle_policy(namespace, name, status=written)
        if facts is not None:
            self._note_budget(policy, facts.budget_state, spent=facts.spent_usd)
            ref = events.ObjectRef("RoutingPolicy", namespace, name, policy.metadata.uid)
            condition_events.post(self._recorder, ref, found=noted)

    async def _flush_backend(self, backend: api.Backend, now: datetime) -> None:
        namespace, name = backend.metadata.namespace, backend.metadata.name
        key = (BACKENDS.plural, namespace, name)
        selected, last = self._ledger.take_selected((namespace, name))
        inputs = self._backend_inputs(backend, selected=selected, last=last)
        quiet = self._quiet.get(key)
        if quiet is not None and quiet[1] == inputs and time.monotonic() < quiet[0]:
            return
        self.assembled += 1
        invalid = self._invalid_record(key)
        leader_part = self._backend_leader_part(backend) if self.leading else None
        noted: list[condition_events.ConditionEvent] = []
        nothing = [False]

        def build(status: Mapping[str, Any]) -> JsonObject:
            desired = backend_desired(status, selected=selected, last=last)
            if leader_part is not None:
                facts, exclusions = leader_part
                mine = backend_status(
                    backend, facts, exclusions=exclusions, existing=_conditions(status), now=now
                )
                desired = _flag_invalid(_merge(desired, mine), invalid, now=now)
                noted[:] = _transitions("Backend", stored=status, desired=desired)
            patch = merge_diff(status, desired)
            nothing[0] = not patch
            return self._coalesced(key, patch)

        written = await self._ledger.write(BACKENDS, namespace, name=name, build=build)
        if written is not None and nothing[0]:
            self._quiet[key] = (time.monotonic() + QUIET_TTL_S, inputs)
        else:
            self._quiet.pop(key, None)
        if written is not None:
            ref = events.ObjectRef("Backend", namespace, name, backend.metadata.uid)
            condition_events.post(self._recorder, ref, found=noted)
        if written is not None and selected > 0:
            self._ledger.settle_selected((namespace, name), selected)

    async def _flush_never_valid(self, now: datetime) -> None:
        """Rejected objects the registry does not hold: nothing else ever writes their status."""
        snapshot = self._registry.snapshot
        for key, invalid in self._invalid.items():
            plural, namespace, name = key
            held = snapshot.backends if plural == BACKENDS.plural else snapshot.policies
            if (namespace, name) not in held:
                await self._write_invalid(key, invalid, now=now)

    async def _write_invalid(self, key: ObjectKey, invalid: InvalidSpec, *, now: datetime) -> None:
        noted: list[condition_events.ConditionEvent] = []

        def build(status: Mapping[str, Any]) -> JsonObject:
            desired = invalid_spec_status(invalid, existing=_conditions(status), now=now)
            noted[:] = _transitions(invalid.kind, stored=status, desired=desired)
            return self._coalesced(key, merge_diff(status, desired))

        plural, namespace, name = key
        if await self._ledger.write(Kind(plural), namespace, name=name, build=build) is not None:
            ref = events.ObjectRef(invalid.kind, namespace, name, invalid.uid)
            condition_events.post(self._recorder, ref, found=noted)

    def _invalid_record(self, key: ObjectKey) -> InvalidSpec | None:
        """The rejection the leader reports instead of normal status; followers write none."""
        return self._invalid.get(key) if self.leading else None

    def _backend_inputs(
        self, backend: api.Backend, *, selected: int, last: datetime | None
    ) -> tuple[object, ...]:
        """Everything a Backend's status is assembled from (compared by identity first, so an
        unchanged Backend costs a few comparisons): equal to the inputs of a round that found
        nothing to write means there is nothing to write now."""
        namespace, name = backend.metadata.namespace, backend.metadata.name
        key = (BACKENDS.plural, namespace, name)
        cell = self._registry.runtime.backend(namespace, name)
        leading = self.leading
        return (
            backend,
            self._ledger.observed(key),
            leading,
            selected,
            last,
            self._invalid_record(key),
            cell.health_state,
            cell.latency_ms,
            cell.last_probe_time,
            cell.consecutive_failures,
            cell.last_error,
            cell.in_flight,
            self._credentials_condition((namespace, name)) if leading else None,
            tuple(self._engine.backend_exclusions(namespace, name)) if leading else (),
        )

    def _backend_leader_part(
        self, backend: api.Backend
    ) -> tuple[BackendFacts, list[api.BackendExclusion]]:
        namespace, name = backend.metadata.namespace, backend.metadata.name
        cell = self._registry.runtime.backend(namespace, name)
        facts = BackendFacts(
            health_state=cell.health_state,
            latency_ms=cell.latency_ms,
            last_probe_time=cell.last_probe_time,
            consecutive_failures=cell.consecutive_failures,
            last_error=cell.last_error,
            in_flight=cell.in_flight,
            credentials=self._credentials_condition((namespace, name)),
        )
        exclusions = [
            api.BackendExclusion(policy=x.policy, **_reason_fields(x))
            for x in self._engine.backend_exclusions(namespace, name)
        ]
        return facts, exclusions

    def _credentials_condition(self, key: tuple[str, str]) -> DesiredCondition | None:
        return self._credentials.condition(key) if self._credentials is not None else None

    def _policy_facts(self, policy: api.RoutingPolicy, now: datetime) -> PolicyFacts:
        namespace, name = policy.metadata.namespace, policy.metadata.name
        report = self._engine.policy_report(namespace, name)
        spent = self._registry.runtime.policy(namespace, name).spent_at(now)
        return PolicyFacts(
            matched_backends=len(report.matched_backends),
            eligible_backends=report.eligible_backends,
            exclusions=[
                api.PolicyExclusion(backend=x.backend, **_reason_fields(x))
                for x in report.exclusions
            ],
            shadowed_by=report.shadowed_by,
            alias_error=report.alias_error,
            never_routes=report.never_routes,
            no_backends=report.no_backends,
            plugins=[ref.name for ref in policy.spec.reconcilers],
            plugin_problems=self._engine.plugin_problems(namespace, name),
            spent_usd=spent,
            budget_state=budget_state(spent, policy.spec.budget),
        )

    def _coalesced(self, key: ObjectKey, patch: JsonObject) -> JsonObject:
        """The patch to send now, or {} when it only refreshes probe latency/time too early."""
        if not patch or self._only_volatile(key, patch):
            return {}
        self._written_at[key] = time.monotonic()
        return patch

    def _only_volatile(self, key: ObjectKey, patch: Mapping[str, Any]) -> bool:
        """A patch touching nothing but health latency/probe time waits for the refresh interval."""
        if set(patch) != {"health"} or not set(patch["health"]) <= _VOLATILE_HEALTH:
            return False
        age = time.monotonic() - self._written_at.get(key, float("-inf"))
        return age < self._settings.refresh_interval_s

    def _note_budget(
        self, policy: api.RoutingPolicy, state: api.BudgetState, *, spent: float
    ) -> None:
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


def _reason_fields(exclusion: StaticExclusion) -> dict[str, str]:
    """The api.ExclusionReason part of a static exclusion, clipped to the schema's bounds."""
    return {
        "reconciler": exclusion.reconciler,
        "reason_code": exclusion.reason_code,
        "reason": clip(exclusion.reason),
        "suggested_action": clip(exclusion.suggested_action),
    }


def _flag_invalid(desired: JsonObject, invalid: InvalidSpec | None, *, now: datetime) -> JsonObject:
    """The status of the last valid spec (it still serves), with Ready=False naming the rejected
    field on top, so health, exclusions and counters stay current while the spec is fixed."""
    if invalid is None:
        return desired
    return desired | invalid_spec_status(invalid, existing=_conditions(desired), now=now)


def _transitions(
    kind: str, *, stored: Mapping[str, Any], desired: Mapping[str, Any]
) -> list[condition_events.ConditionEvent]:
    return condition_events.condition_events(
        kind, stored=stored.get("conditions") or [], desired=desired.get("conditions") or []
    )


def _conditions(status: Mapping[str, Any]) -> list[api.Condition]:
    try:
        return [api.Condition.model_validate(item) for item in status.get("conditions") or []]
    except pydantic.ValidationError:
        return []


def _merge(additive: JsonObject, leader: JsonObject) -> JsonObject:
    """Union of two desired statuses whose only shared key is the `routing` block."""
    merged = additive | leader
    if "routing" in additive and "routing" in leader:
        merged["routing"] = additive["routing"] | leader["routing"]
    return merged
