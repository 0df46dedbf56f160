"""The status writer: a queue of objects with status to write, drained continuously within a
client-side rate limit, urgent changes first.

Per object, at most one patch per look: this replica's own absolute totals (its entry of spend,
decision and selection counters, and the sums over all entries; every replica) joined with, on
the leader only, the non-additive status (conditions, health, exclusions, counts), written under
one resourceVersion precondition by the ledger. An object whose spec the models reject gets from
the leader only Ready=False (InvalidSpec) instead, whether it still routes with its last valid
spec or never had one. Desired status is diffed against the last status the API server holds
(observed from watch events and patch responses), so unchanged status is never written and our
own status events cause no further writes.

Looking and writing are apart. Every flush interval a scan looks at every object (a Backend
whose inputs equal those of a look that found nothing to write costs a few comparisons), and
every tick the objects the registry reports changed are looked at at once; an object with
something to write is put in the queue (`WriteQueue`) in its class — URGENT (conditions,
health state, exclusions, observedGeneration, budget state), SPEND, COUNTERS, REFRESH (probe
latency and time alone) — or moved to a higher class if it is already queued. WRITERS tasks
take the oldest entry of the highest class whenever the token bucket (`status_qps` /
`status_burst`) has a token, so a condition that changes while 10,000 counter updates wait is
written next, not after them. An entry is assembled again when written only if its inputs
changed since it was queued.

Probe latency and probe time alone never keep the writer busy: a latency change is written
when it moved by LATENCY_SHARE (and LATENCY_MIN_MS) of what the status shows, at most every
`refresh_interval`; probe time and smaller drift ride along with any other write of the object,
or go out on their own at a heartbeat of HEARTBEAT_MIN_S, longer for fleets so large that
heartbeats would take more than HEARTBEAT_SHARE of the write budget — and last of all.

A policy near its soft or hard limit (or changing state) is written every `near_limit_interval`
instead, so other replicas see its spend sooner; so is one whose own unpersisted spend reaches a
tenth of the headroom left before that point. `staleness_s()` is the age of the oldest change
not yet written. The final flush on shutdown (`final_flush`) writes spend first, then
urgent changes, until its deadline; counters and probe refreshes only in the time left, for
`shutdown_optional_s` at most. A failed write (API server gone) leaves the object for the next scan.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
from .write_queue import WriteQueue

if TYPE_CHECKING:
    from nexus_operator.routing import Registry, RegistryChange, RoutingEngine, StaticExclusion

    from .condition_list import DesiredCondition
    from .secret_credentials import SecretCredentials

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]
Clock = Callable[[], datetime]
_VOLATILE_HEALTH = frozenset({"latencyMs", "lastProbeTime"})
# A Backend whose status inputs are unchanged since a look that found nothing to write is
# skipped for this long at most; then it is assembled and diffed again whatever happened.
QUIET_TTL_S = 300.0
# Status keys that are counters: written after everything else but probe refreshes.
_COUNTER_KEYS = frozenset({"replicas", "decisions", "retired", "retiredSelected", "routing"})
URGENT, SPEND, COUNTERS, REFRESH = 0, 1, 2, 3
ORDER = (URGENT, SPEND, COUNTERS, REFRESH)
# On shutdown, what must be written: spend first (what a restart could not rebuild from anything
# else), then urgent changes, until the deadline. What may be written: counters and probe
# refreshes, only in the time left and for at most `shutdown_optional_s` (the next leader or
# this replica's restart writes them anyway; a rollout should not wait for them).
FINAL_MUST = (SPEND, URGENT)
FINAL_MAY = (COUNTERS, REFRESH)
# Status writes in flight at once (never two for one object), so a slow round trip does not
# hold the rate below the configured one.
WRITERS = 2
# A scan lets the loop run every this many Backends (10,000 take some 40 ms in all).
SCAN_SLICE = 500
# A probe latency change alone is written when it moved by this share of the latency the
# status shows, and by at least LATENCY_MIN_MS (at most every refresh interval).
LATENCY_SHARE = 0.2
LATENCY_MIN_MS = 5.0
# Probe time (and smaller latency drift) alone: at most every HEARTBEAT_MIN_S per object, or
# less often when the fleet is so large that heartbeats would take more than HEARTBEAT_SHARE
# of the status write budget (10,000 Backends at 50 writes/s: every 2,000 s).
HEARTBEAT_MIN_S = 600.0
HEARTBEAT_SHARE = 0.1
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
    shutdown_optional_s: float = 2.0


def priority_of(patch: Mapping[str, Any]) -> int:
    """URGENT: conditions, health state, exclusions, observedGeneration or a budget-state change;
    SPEND; COUNTERS; REFRESH: nothing but probe latency and time."""
    keys = set(patch)
    health = patch.get("health")
    if isinstance(health, Mapping) and set(health) <= _VOLATILE_HEALTH:
        keys.discard("health")
        if not keys:
            return REFRESH
    budget = patch.get("budget")
    if keys - _COUNTER_KEYS - {"budget"}:
        return URGENT
    if budget is None and "budget" in patch:
        return URGENT
    if isinstance(budget, Mapping):
        return URGENT if "state" in budget or "limitUsd" in budget else SPEND
    return COUNTERS


def latency_moved(shown: Any, new: Any) -> bool:
    """A probe latency worth writing on its own: LATENCY_SHARE and LATENCY_MIN_MS away from the
    one the status shows (or one of them is missing)."""
    if not isinstance(shown, int | float) or not isinstance(new, int | float):
        return bool(shown != new)
    return abs(new - shown) >= max(LATENCY_MIN_MS, LATENCY_SHARE * abs(shown))


def heartbeat_s(backends: int, *, qps: float) -> float:
    """Per-object interval of probe-time refreshes: HEARTBEAT_MIN_S, or longer so that a fleet's
    heartbeats take at most HEARTBEAT_SHARE of the write budget."""
    return max(HEARTBEAT_MIN_S, backends / (HEARTBEAT_SHARE * qps))


def _age_s(stamp: Any, now: datetime) -> float:
    """Seconds since an RFC 3339 time (infinite when there is none or it does not parse)."""
    try:
        return (now - datetime.fromisoformat(str(stamp))).total_seconds() if stamp else math.inf
    except (ValueError, TypeError):
        return math.inf


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


@dataclass(frozen=True)
class Plan:
    """What one queued object would write: its class, the write, and (for a Backend) the status
    inputs it was assembled from — still equal when its turn comes, it is not assembled again."""

    priority: int
    write: Callable[[], Awaitable[bool]]
    inputs: tuple[object, ...] | None = None


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
        # Backends whose last look found nothing to write: (until, the inputs it had then).
        self._quiet: dict[ObjectKey, tuple[float, tuple[object, ...]]] = {}
        self.assembled = 0
        self._pending_since: dict[ObjectKey, float] = {}
        self.limiter = TokenBucket(settings.status_qps, settings.status_burst)
        self.queue: WriteQueue[ObjectKey, Plan] = WriteQueue(len(ORDER))
        self._in_flight: set[ObjectKey] = set()
        # Objects the registry reported changed since the last look at them.
        self._touched: set[ObjectKey] = set()
        self._work = asyncio.Event()
        self._heartbeat_s = HEARTBEAT_MIN_S
        self.rounds = 0
        self.leader_rounds = 0
        self.urgent_flushes = 0
        registry.add_change_listener(self._registry_changed)

    @property
    def leading(self) -> bool:
        return self._leader is not None and self._leader.is_leader

    async def run(self) -> None:
        """Write from the queue continuously (WRITERS at a time); every tick look at the objects
        the registry reported changed and at policies near a limit, every flush interval at
        everything. A step that fails is logged and the next one tries again."""
        settings = self._settings
        writers = [
            asyncio.create_task(self._write_queued(), name=f"status-write-{i}")
            for i in range(WRITERS)
        ]
        tick = min(settings.near_limit_interval_s, settings.flush_interval_s)
        next_full = time.monotonic() + settings.flush_interval_s
        try:
            while True:
                await asyncio.sleep(tick)
                try:
                    await self.look_at_touched()
                    if time.monotonic() >= next_full:
                        next_full = time.monotonic() + settings.flush_interval_s
                        await self.scan()
                    else:
                        await self.flush_near_limit()
                except Exception:
                    logger.exception("Status scan failed; retrying next round")
        finally:
            for task in writers:
                task.cancel()
            await asyncio.gather(*writers, return_exceptions=True)

    def staleness_s(self) -> float:
        """Age of the oldest status change found but not written yet (0 when all is written)."""
        if not self._pending_since:
            return 0.0
        return max(0.0, time.monotonic() - min(self._pending_since.values()))

    async def flush(self) -> None:
        """Look at everything, then write the whole queue, highest class first."""
        await self.scan()
        await self.drain(ORDER)

    async def final_flush(self, *, deadline: float) -> bool:
        """The flush on shutdown, over by `deadline` (monotonic) whatever the backlog: look at
        everything, write spend then urgent changes (FINAL_MUST) until the deadline, then
        counters and probe refreshes (FINAL_MAY) in the time left, for at most
        `shutdown_optional_s`. A write still waiting for its token or its answer at a deadline is
        abandoned: the patch is preconditioned on the resourceVersion and carries absolute totals,
        so one that landed anyway is harmless, and spend not written stays in the spool.
        Returns whether everything that must be written was."""
        optional_s = self._settings.shutdown_optional_s
        if not await _until(deadline, self._scan_and_drain(FINAL_MUST)):
            left = sum(self.queue.count(p) for p in FINAL_MUST)
            logger.warning(
                "Final status flush stopped at its deadline: %d spend or urgent writes not "
                "written (spend stays in the spool)",
                left,
            )
            return False
        if optional_s > 0 and any(self.queue.count(p) for p in FINAL_MAY):
            cut = min(deadline, time.monotonic() + optional_s)
            if not await _until(cut, self.drain(FINAL_MAY)):
                logger.info(
                    "Final status flush: %d counter or probe-time updates left to the next writer",
                    sum(self.queue.count(p) for p in FINAL_MAY),
                )
        return True

    async def _scan_and_drain(self, order: Sequence[int]) -> None:
        await self.scan()
        await self.drain(order)

    async def drain(self, order: Sequence[int]) -> None:
        """Write queued objects of the classes in `order`, one at a time, until none is left."""
        while self.queue:
            picked = self.queue.pop(order)
            if picked is None:
                return
            key, _, plan = picked
            await self._write_one(key, plan)

    async def scan(self) -> None:
        """Look at every object: queue (or re-class) each with something to write, drop from the
        queue each that no longer has any."""
        snapshot = self._registry.snapshot
        now = self._clock()
        self.rounds += 1
        self.leader_rounds += self.leading
        self._touched.clear()
        self._heartbeat_s = heartbeat_s(len(snapshot.backends), qps=self.limiter.qps)
        for policy in list(snapshot.policies.values()):
            self._look_at_policy(policy, now)
        for index, backend in enumerate(list(snapshot.backends.values()), start=1):
            self._look_at_backend(backend, now)
            if index % SCAN_SLICE == 0:
                self._wake()
                await asyncio.sleep(0)
        if len(self._quiet) > len(snapshot.backends):
            gone = [k for k in self._quiet if (k[1], k[2]) not in snapshot.backends]
            for key in gone:
                del self._quiet[key]
        self._wake()
        if self.leading:
            await self._flush_never_valid(now)

    async def look_at_touched(self) -> None:
        """Look at once at the objects reported changed (a spec edit or a health transition is
        queued within a tick, not at the next scan); one being written is looked at next tick."""
        if not self._touched:
            return
        snapshot = self._registry.snapshot
        now = self._clock()
        touched, self._touched = self._touched, set()
        for index, key in enumerate(touched, start=1):
            if index % SCAN_SLICE == 0:
                self._wake()
                await asyncio.sleep(0)
            plural, namespace, name = key
            if key in self._in_flight:
                self._touched.add(key)
            elif plural == BACKENDS.plural:
                backend = snapshot.backends.get((namespace, name))
                if backend is not None:
                    self._look_at_backend(backend, now)
            else:
                policy = snapshot.policies.get((namespace, name))
                if policy is not None:
                    self._look_at_policy(policy, now)
        self._wake()

    def touch(self, key: ObjectKey) -> None:
        """Look at this object at the next tick (its health or credentials just changed)."""
        self._touched.add(key)

    def _registry_changed(self, change: RegistryChange) -> None:
        if change.full:  # a rebuild from lists: the next scan looks at everything anyway
            return
        for backend in change.backends:
            meta = backend.metadata
            self._touched.add((BACKENDS.plural, meta.namespace, meta.name))
        for policy in change.policies:
            meta = policy.metadata
            self._touched.add((POLICIES.plural, meta.namespace, meta.name))

    def _wake(self) -> None:
        if self.queue:
            self._work.set()

    async def _write_queued(self) -> None:
        """One writer: whenever a token is free, the oldest entry of the highest class. After a
        failed write it pauses a flush interval (the API server may be gone)."""
        while True:
            await self._work.wait()
            wait = self.limiter.wait_s()
            if wait > 0:  # choose only once a token is free: what is most urgent by then
                await asyncio.sleep(wait)
                continue
            picked = self.queue.pop(ORDER)
            if picked is None:
                self._work.clear()
                continue
            key, _, plan = picked
            try:
                written = await self._write_one(key, plan)
            except Exception:
                logger.exception("Status write of %s/%s/%s failed", *key)
                written = False
            if not written:
                await asyncio.sleep(self._settings.flush_interval_s)

    async def _write_one(self, key: ObjectKey, plan: Plan) -> bool:
        """Write one dequeued object with what it has to write now; False: not written (it is
        looked at again at the next scan)."""
        self._in_flight.add(key)
        try:
            fresh = self._replan(key, plan)
            return True if fresh is None else await fresh.write()
        finally:
            self._in_flight.discard(key)

    def _replan(self, key: ObjectKey, plan: Plan) -> Plan | None:
        """The plan to write now: the queued one if the Backend's inputs are unchanged, else
        assembled again (always for a policy: its spend moves); None: nothing to write."""
        plural, namespace, name = key
        snapshot = self._registry.snapshot
        now = self._clock()
        if plural == POLICIES.plural:
            policy = snapshot.policies.get((namespace, name))
            if policy is None:
                self._pending_since.pop(key, None)
                return None
            return self._plan_policy(policy, now)
        backend = snapshot.backends.get((namespace, name))
        if backend is None:
            self._pending_since.pop(key, None)
            return None
        inputs = self._backend_inputs(backend)
        return (
            plan if plan.inputs == inputs else self._plan_backend(backend, inputs=inputs, now=now)
        )

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
            if key in self._in_flight:
                continue
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
            plan = self._plan_policy(policy, now)
            if plan is not None:
                self.urgent_flushes += 1
                self.queue.discard(key)
                await self._write_one(key, plan)

    def _look_at_policy(self, policy: api.RoutingPolicy, now: datetime) -> None:
        key = (POLICIES.plural, policy.metadata.namespace, policy.metadata.name)
        if key in self._in_flight:
            return
        plan = self._plan_policy(policy, now)
        if plan is None:
            self.queue.discard(key)
        else:
            self.queue.put(key, plan, priority=plan.priority)

    def _look_at_backend(self, backend: api.Backend, now: datetime) -> None:
        """Queue a Backend with something to write; a few comparisons when its inputs equal
        those of the last look (it had nothing to write, or it is queued with them)."""
        key = (BACKENDS.plural, backend.metadata.namespace, backend.metadata.name)
        if key in self._in_flight:
            return
        inputs = self._backend_inputs(backend)
        quiet = self._quiet.get(key)
        if quiet is not None and quiet[1] == inputs and time.monotonic() < quiet[0]:
            return
        queued = self.queue.get(key)
        if queued is not None and queued.inputs == inputs:
            return
        plan = self._plan_backend(backend, inputs=inputs, now=now)
        if plan is None:
            self.queue.discard(key)
        else:
            self.queue.put(key, plan, priority=plan.priority)

    def _pending(
        self, key: ObjectKey, build: Callable[[Mapping[str, Any]], JsonObject]
    ) -> tuple[int | None, float]:
        """(class of what `build` would write against the observed status, None: nothing now;
        until when a Backend with nothing to write may be skipped, monotonic)."""
        observed = self._ledger.observed(key)
        now = time.monotonic()
        if observed is None:
            self._pending_since.setdefault(key, now)
            return URGENT, now
        patch = merge_diff(observed, build(observed))
        held = self._held_until(key, patch, status=observed) if patch else None
        if not patch or held is not None:
            self._pending_since.pop(key, None)
            return None, min(now + QUIET_TTL_S, held if held is not None else math.inf)
        self._pending_since.setdefault(key, now)
        return priority_of(patch), now

    def _plan_policy(self, policy: api.RoutingPolicy, now: datetime) -> Plan | None:
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

        priority, _ = self._pending(key, desired)
        if priority is None:
            return None

        def written() -> None:
            if facts is not None:
                self._note_budget(policy, facts.budget_state, spent=facts.spent_usd)
                ref = events.ObjectRef("RoutingPolicy", namespace, name, policy.metadata.uid)
                condition_events.post(self._recorder, ref, found=noted)

        return Plan(priority, self._write_step(POLICIES, key, desired=desired, then=written))

    def _plan_backend(
        self, backend: api.Backend, *, inputs: tuple[object, ...], now: datetime
    ) -> Plan | None:
        namespace, name = backend.metadata.namespace, backend.metadata.name
        key = (BACKENDS.plural, namespace, name)
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

        priority, until = self._pending(key, desired)
        if priority is None:  # nothing to write: skip this Backend until an input changes
            self._quiet[key] = (until, inputs)
            return None
        self._quiet.pop(key, None)

        def written() -> None:
            ref = events.ObjectRef("Backend", namespace, name, backend.metadata.uid)
            condition_events.post(self._recorder, ref, found=noted)

        return Plan(
            priority, self._write_step(BACKENDS, key, desired=desired, then=written), inputs
        )

    def _write_step(
        self,
        kind: Kind,
        key: ObjectKey,
        *,
        desired: Callable[[Mapping[str, Any]], JsonObject],
        then: Callable[[], None],
    ) -> Callable[[], Awaitable[bool]]:
        """The write of one planned object: the ledger's preconditioned patch of what `desired`
        builds from the stored status (coalesced with what is already queued), then `then`
        (budget notes, condition Events) once it is written. False when it was not."""
        _, namespace, name = key

        async def write() -> bool:
            written = await self._ledger.write(
                kind,
                namespace,
                name=name,
                build=lambda status: self._coalesced(key, status=status, desired=desired(status)),
                limiter=self.limiter,
            )
            if written is None:
                return False
            self._pending_since.pop(key, None)
            then()
            return True

        return write

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
            return self._coalesced(key, status=status, desired=desired)

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

    def _backend_inputs(self, backend: api.Backend) -> tuple[object, ...]:
        """Everything a Backend's status is assembled from (compared by identity first, so an
        unchanged Backend costs a few comparisons): equal to the inputs of a look that found
        nothing to write means there is nothing to write now."""
        namespace, name = backend.metadata.namespace, backend.metadata.name
        key = (BACKENDS.plural, namespace, name)
        cell = self._registry.runtime.backend(namespace, name)
        leading = self.leading
        return (
            backend,
            self._ledger.observed(key),
            leading,
            cell.selected_total,
            cell.last_selected_time,
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

    def _coalesced(
        self, key: ObjectKey, *, status: Mapping[str, Any], desired: Mapping[str, Any]
    ) -> JsonObject:
        """The patch to send now, or {} when there is none or it only refreshes probe latency or
        time before that is due (_held_until)."""
        patch = merge_diff(status, desired)
        if not patch or self._held_until(key, patch, status=status) is not None:
            return {}
        self._written_at[key] = time.monotonic()
        return patch

    def _held_until(
        self, key: ObjectKey, patch: Mapping[str, Any], *, status: Mapping[str, Any]
    ) -> float | None:
        """Until when (monotonic) a patch of nothing but health latency/probe time waits; None:
        it does not. A latency that moved (latency_moved) waits for the refresh interval since
        the object's last write; probe time and smaller drift for the heartbeat, counted from
        the last write or, after a restart, from the probe time the status shows."""
        health = patch.get("health")
        if set(patch) != {"health"} or not isinstance(health, Mapping):
            return None
        if not set(health) <= _VOLATILE_HEALTH:
            return None
        now = time.monotonic()
        written = self._written_at.get(key)
        shown = status.get("health")
        shown = shown if isinstance(shown, Mapping) else {}
        if "latencyMs" in health and latency_moved(shown.get("latencyMs"), health["latencyMs"]):
            since = now - written if written is not None else math.inf
            interval = self._settings.refresh_interval_s
        else:
            age = _age_s(shown.get("lastProbeTime"), self._clock())
            since = now - written if written is not None else age
            interval = self._heartbeat_s
        due = now - since + interval
        return due if due > now else None

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


async def _until(deadline: float, work: Awaitable[None]) -> bool:
    """Run `work` until it is done (True) or the monotonic `deadline` passes (False: cancelled)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(loop.time() + (deadline - time.monotonic())):
            await work
    except TimeoutError:
        return False
    return True


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
