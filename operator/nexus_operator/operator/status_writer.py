"""The coalescing status writer: wakes every flush interval and patches only what changed.

Per flush, at most one patch per object: this replica's own absolute totals (its entry of spend,
decision and selection counters, and the sums over all entries; every replica) joined with, on
the leader only, the non-additive status
(conditions, health, exclusions, counts), written under one resourceVersion precondition by the
ledger. An object whose spec the models reject gets from the leader only Ready=False
(InvalidSpec) instead, whether it still routes with its last valid spec or never had one.
Desired status is diffed against the last status the API server holds (observed from watch
events and patch responses), so unchanged status is never written and our own status events
cause no further writes. Health latency and probe time alone are refreshed at most every
`refresh_interval`, so steady probing does not turn into a patch per probe. A failed flush (API server gone) leaves everything pending for the next.

Writes go through a client-side token bucket (`status_qps`/`status_burst`), highest priority
first within a round: conditions, health, exclusions and budget-state changes; then spend; then
counters. A policy near its soft or hard limit (or changing state) is flushed every
`near_limit_interval` instead of every flush interval, so other replicas see its spend sooner;
so is one whose own unpersisted spend reaches a tenth of the headroom left before that point.
`staleness_s()` is the age of the oldest change not yet written. The final flush on shutdown
writes spend first, then conditions, then counters, and stops at its deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
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
from .rate_limit import TokenBucket
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
# Status keys that are counters: written after everything else when the writer is saturated.
_COUNTER_KEYS = frozenset({"replicas", "decisions", "retired", "retiredSelected", "routing"})
URGENT, SPEND, COUNTERS = 0, 1, 2
# A policy counts as near its limits from this share of its soft-limit threshold on.
NEAR_LIMIT_FRACTION = 0.9


@dataclass(frozen=True)
class WriterSettings:
    flush_interval_s: float = 2.0
    refresh_interval_s: float = 30.0
    near_limit_interval_s: float = 0.2
    status_qps: float = 50.0
    status_burst: int = 100
    shutdown_flush_s: float = 15.0


def priority_of(patch: Mapping[str, Any]) -> int:
    """URGENT: conditions, health, exclusions or a budget-state change; SPEND; else COUNTERS."""
    budget = patch.get("budget")
    if set(patch) - _COUNTER_KEYS - {"budget"}:
        return URGENT
    if budget is None and "budget" in patch:
        return URGENT
    if isinstance(budget, Mapping):
        return URGENT if "state" in budget or "limitUsd" in budget else SPEND
    return COUNTERS


# Own spend not persisted yet is written at the next near-limit tick once it reaches this share
# of what is left before the near-limit threshold (see closing_in).
HEADROOM_SHARE = 0.1


def near_limit(spent_usd: float, budget: api.Budget | None) -> bool:
    return budget is not None and budget.nearing(spent_usd, fraction=NEAR_LIMIT_FRACTION)


def closing_in(spent_usd: float, *, unpersisted_usd: float, budget: api.Budget | None) -> bool:
    """This replica's spend not persisted yet has reached HEADROOM_SHARE of the headroom left
    before the near-limit threshold (as this replica sees the policy's spend).

    Without it, replicas far from the threshold each see only their own spend plus the others'
    last full flush, so together they could pass the threshold — and the hard limit — unseen
    for up to one flush interval. With it, no replica holds back more than that share of the
    headroom (plus one near-limit tick's spend), so the fleet's views reach the near-limit
    regime before the policy's spend reaches its limits. Far from the threshold the headroom
    is large and this rarely fires; close to it the policy is soon near the limit anyway.
    """
    headroom = budget.headroom(spent_usd, fraction=NEAR_LIMIT_FRACTION) if budget else None
    return (
        headroom is not None
        and unpersisted_usd > 0
        and unpersisted_usd >= (HEADROOM_SHARE * headroom)
    )


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
        self._pending_since: dict[ObjectKey, float] = {}
        self.limiter = TokenBucket(settings.status_qps, settings.status_burst)
        self.rounds = 0
        self.leader_rounds = 0
        self.urgent_flushes = 0

    @property
    def leading(self) -> bool:
        return self._leader is not None and self._leader.is_leader

    async def run(self) -> None:
        """Flush every interval, and policies near a limit every near-limit interval; a round
        that fails is logged and the next one tries again."""
        settings = self._settings
        tick = min(settings.near_limit_interval_s, settings.flush_interval_s)
        next_full = time.monotonic() + settings.flush_interval_s
        while True:
            await asyncio.sleep(tick)
            try:
                if time.monotonic() >= next_full:
                    next_full = time.monotonic() + settings.flush_interval_s
                    await self.flush()
                else:
                    await self.flush_near_limit()
            except Exception:
                logger.exception("Status flush round failed; retrying next round")

    def staleness_s(self) -> float:
        """Age of the oldest status change found but not written yet (0 when all is written)."""
        if not self._pending_since:
            return 0.0
        return max(0.0, time.monotonic() - min(self._pending_since.values()))

    async def flush(self, *, final: bool = False, deadline: float | None = None) -> None:
        """One coalesced round: at most one patch per object, highest priority first.

        `final` (shutdown) puts spend before conditions; past `deadline` (monotonic) the round
        stops, leaving the rest pending (spend stays in the spool).
        """
        snapshot = self._registry.snapshot
        now = self._clock()
        self.rounds += 1
        self.leader_rounds += self.leading
        jobs: list[tuple[int, int, Callable[[], Awaitable[None]]]] = []
        for policy in list(snapshot.policies.values()):
            job = self._policy_job(policy, now)
            if job is not None:
                jobs.append((job[0], len(jobs), job[1]))
        for backend in list(snapshot.backends.values()):
            job = self._backend_job(backend, now)
            if job is not None:
                jobs.append((job[0], len(jobs), job[1]))
        order = (SPEND, URGENT, COUNTERS) if final else (URGENT, SPEND, COUNTERS)
        jobs.sort(key=lambda j: (order.index(j[0]), j[1]))
        if len(self._quiet) > len(snapshot.backends):
            gone = [k for k in self._quiet if (k[1], k[2]) not in snapshot.backends]
            for key in gone:
                del self._quiet[key]
        for _, _, write in jobs:
            if deadline is not None and time.monotonic() >= deadline:
                logger.warning("Status flush stopped at its deadline; the rest stays pending")
                return
            await write()
        if self.leading:
            await self._flush_never_valid(now)

    async def flush_near_limit(self) -> None:
        """Write at once the policies whose own spend is not persisted yet and that are near a
        limit, or closing in on it (closing_in)."""
        now = self._clock()
        for policy in list(self._registry.snapshot.policies.values()):
            budget = policy.spec.budget
            if budget is None or budget.monthly_limit_usd is None:
                continue
            namespace, name = policy.metadata.namespace, policy.metadata.name
            key = (POLICIES.plural, namespace, name)
            persisted = self._ledger.persisted_entry(key) or {}
            mine = self._ledger.policy_entry(namespace, name, now=now) or {}
            own = float(mine.get("spentUsd", 0.0))
            if own == persisted.get("spentUsd", 0.0):
                continue
            same_period = persisted.get("period") == mine.get("period")
            unpersisted = own - float(persisted.get("spentUsd", 0.0)) if same_period else own
            spent = self._registry.runtime.policy(namespace, name).spent_at(now)
            if not (
                near_limit(spent, budget)
                or closing_in(spent, unpersisted_usd=unpersisted, budget=budget)
            ):
                continue
            job = self._policy_job(policy, now)
            if job is not None:
                self.urgent_flushes += 1
                await job[1]()

    def _pending(
        self, key: ObjectKey, build: Callable[[Mapping[str, Any]], JsonObject]
    ) -> int | None:
        """Priority of what `build` would write against the observed status; None: nothing."""
        observed = self._ledger.observed(key)
        if observed is None:
            self._pending_since.setdefault(key, time.monotonic())
            return URGENT
        patch = merge_diff(observed, build(observed))
        if not patch or self._only_volatile(key, patch):
            self._pending_since.pop(key, None)
            return None
        self._pending_since.setdefault(key, time.monotonic())
        return priority_of(patch)

    def _policy_job(
        self, policy: api.RoutingPolicy, now: datetime
    ) -> tuple[int, Callable[[], Awaitable[None]]] | None:
        namespace, name = policy.metadata.namespace, policy.metadata.name
        key = (POLICIES.plural, namespace, name)
        cell = self._registry.runtime.policy(namespace, name)
        mine = self._ledger.policy_entry(namespace, name, now=now)
        records = (cell.last_routed, cell.last_rejected)
        invalid = self._invalid_record(key)
        facts = self._policy_facts(policy, now) if self.leading else None
        noted: list[condition_events.ConditionEvent] = []

        def desired(status: Mapping[str, Any]) -> JsonObject:
            want = policy_desired(
                status,
                mine,
                replica=self._ledger.replica,
                records=records,
                budget=policy.spec.budget,
                now=now,
            )
            if facts is not None:
                existing = _conditions(status)
                want |= policy_status(policy, facts, existing=existing, now=now)
                want = _flag_invalid(want, invalid, now=now)
                noted[:] = _transitions("RoutingPolicy", stored=status, desired=want)
            return want

        priority = self._pending(key, desired)
        if priority is None:
            return None

        async def write() -> None:
            written = await self._ledger.write(
                POLICIES,
                namespace,
                name=name,
                build=lambda status: self._coalesced(key, merge_diff(status, desired(status))),
                limiter=self.limiter,
            )
            if written is None:
                return
            self._pending_since.pop(key, None)
            if facts is not None:
                self._note_budget(policy, facts.budget_state, spent=facts.spent_usd)
                ref = events.ObjectRef("RoutingPolicy", namespace, name, policy.metadata.uid)
                condition_events.post(self._recorder, ref, found=noted)

        return priority, write

    def _backend_job(
        self, backend: api.Backend, now: datetime
    ) -> tuple[int, Callable[[], Awaitable[None]]] | None:
        namespace, name = backend.metadata.namespace, backend.metadata.name
        key = (BACKENDS.plural, namespace, name)
        cell = self._registry.runtime.backend(namespace, name)
        inputs = self._backend_inputs(
            backend, selected=cell.selected_total, last=cell.last_selected_time
        )
        quiet = self._quiet.get(key)
        if quiet is not None and quiet[1] == inputs and time.monotonic() < quiet[0]:
            return None
        self.assembled += 1
        mine = self._ledger.backend_entry(namespace, name)
        invalid = self._invalid_record(key)
        leader_part = self._backend_leader_part(backend) if self.leading else None
        noted: list[condition_events.ConditionEvent] = []

        def desired(status: Mapping[str, Any]) -> JsonObject:
            want = backend_desired(status, mine, replica=self._ledger.replica, now=now)
            if leader_part is not None:
                facts, exclusions = leader_part
                leader = backend_status(
                    backend, facts, exclusions=exclusions, existing=_conditions(status), now=now
                )
                want = _flag_invalid(_merge(want, leader), invalid, now=now)
                noted[:] = _transitions("Backend", stored=status, desired=want)
            return want

        priority = self._pending(key, desired)
        if priority is None:  # nothing to write: skip this Backend until an input changes
            self._quiet[key] = (self._quiet_until(key), inputs)
            return None
        self._quiet.pop(key, None)

        async def write() -> None:
            written = await self._ledger.write(
                BACKENDS,
                namespace,
                name=name,
                build=lambda status: self._coalesced(key, merge_diff(status, desired(status))),
                limiter=self.limiter,
            )
            if written is not None:
                self._pending_since.pop(key, None)
                ref = events.ObjectRef("Backend", namespace, name, backend.metadata.uid)
                condition_events.post(self._recorder, ref, found=noted)

        return priority, write

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
        written = await self._ledger.write(
            Kind(plural), namespace, name=name, build=build, limiter=self.limiter
        )
        if written is not None:
            ref = events.ObjectRef(invalid.kind, namespace, name, invalid.uid)
            condition_events.post(self._recorder, ref, found=noted)

    def _invalid_record(self, key: ObjectKey) -> InvalidSpec | None:
        """The rejection the leader reports instead of normal status; followers write none."""
        return self._invalid.get(key) if self.leading else None

    def _quiet_until(self, key: ObjectKey) -> float:
        """Until when a Backend with nothing to write may be skipped: QUIET_TTL_S, but no later
        than its health refresh falls due when its last write is recent (a latency-only patch
        held back by the refresh interval must still go out when that interval ends)."""
        now = time.monotonic()
        until = now + QUIET_TTL_S
        written = self._written_at.get(key)
        if written is not None and written + self._settings.refresh_interval_s > now:
            until = min(until, written + self._settings.refresh_interval_s)
        return until

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
