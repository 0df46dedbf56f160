"""The budget ledger: exactly-once spend and counters, whatever the network does.

Every replica owns one entry, keyed by its stable replica identity, in the object's status
(`status.replicas[]` of a RoutingPolicy: spend per period and decision counters; of a Backend:
selections). It writes its *absolute* running totals there, never a delta, so a write that was
applied but whose answer was lost, a retry after a timeout or a 409, and a restart that replays
its spool all set the same numbers again: nothing is ever counted twice. The aggregate fields
users read (`budget.spentUsd`, `decisions`, `routing.selectedTotal`) are the sums over the
entries, recomputed in the same patch from the same base; the patch carries the base's
`metadata.resourceVersion` as a precondition, so entries and sums never disagree and no other
replica's entry is overwritten with a stale copy (409: re-read, recompute, retry).

Month rollover is in UTC: an entry carries its `period` and the replica's spend in the one before
(`previousPeriod`/`previousSpentUsd`), so the policy's current and previous totals are exact sums
whatever order the replicas roll over in. A re-created object (new uid) has a fresh runtime cell
and an empty status: it starts from zero. Entries no replica has written for over a month are
folded into `retired` counters in one preconditioned write (exactly once as well), which bounds
the list. A status written before entries existed is taken over as one `legacy` entry.

Input API (stable, whichever process feeds it): the runtime cells' `add_spend`, `count_*` and
`BackendRuntime.selected_total` — see pipeline.runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from nexus_operator import api
from nexus_operator.api import BudgetState
from nexus_operator.pipeline.runtime import PolicyRuntime, RejectedRecord, RoutedRecord, period_of

from .bounds import clip
from .kube import BACKENDS, POLICIES, ConflictError, Kind, KubeApi, KubeError, NotFoundError
from .observed import ObjectKey, ObservedStatuses
from .rate_limit import TokenBucket
from .status_assembly import rfc3339

if TYPE_CHECKING:
    from nexus_operator.routing import Registry

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]
Build = Callable[[Mapping[str, Any]], JsonObject]
LEGACY_REPLICA = "legacy"
# A Backend entry not selected for this long is folded into retiredSelected.
BACKEND_ENTRY_RETENTION = timedelta(days=35)
_COUNTERS = ("routed", "rejected", "queued")


def next_reset(now: datetime) -> datetime:
    """The first instant of the next UTC month."""
    now = now.astimezone(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def previous_period(period: str) -> str:
    year, month = int(period[:4]), int(period[5:7])
    year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return f"{year:04d}-{month:02d}"


def budget_state(spent_usd: float, budget: api.Budget | None) -> BudgetState:
    """Normal without a limit; otherwise the very rule decisions use, so status conditions and
    routing never disagree at a threshold."""
    state = budget.state(spent_usd) if budget is not None else None
    return state or BudgetState.NORMAL


def policy_entry(replica: str, cell: PolicyRuntime) -> JsonObject | None:
    """This replica's entry for a policy (absolute totals), or None while it has nothing."""
    if not (cell.own_usd or cell.routed or cell.rejected or cell.queued or cell.previous_own_usd):
        return None
    entry: JsonObject = {
        "replica": replica,
        "period": cell.period,
        "spentUsd": cell.own_usd,
        "routed": cell.routed,
        "rejected": cell.rejected,
        "queued": cell.queued,
    }
    if cell.previous_period is not None and cell.previous_own_usd is not None:
        entry["previousPeriod"] = cell.previous_period
        entry["previousSpentUsd"] = cell.previous_own_usd
    return entry


def backend_entry(replica: str, selected: int, *, last: datetime | None) -> JsonObject | None:
    if selected <= 0:
        return None
    entry: JsonObject = {"replica": replica, "selected": selected}
    if last is not None:
        entry["lastSelectedTime"] = rfc3339(last)
    return entry


def _entries(
    status: Mapping[str, Any], replica: str, *, mine: JsonObject | None
) -> list[JsonObject]:
    """The status's entries with this replica's own replaced by `mine` (sorted by replica)."""
    by_id = {str(e.get("replica")): dict(e) for e in status.get("replicas") or []}
    if mine is not None:
        by_id[replica] = mine
    return [by_id[k] for k in sorted(by_id)]


def _legacy_policy_entry(status: Mapping[str, Any]) -> JsonObject | None:
    """A status written before per-replica entries: its sums become one `legacy` entry."""
    if "replicas" in status:
        return None
    budget = status.get("budget") or {}
    decisions = status.get("decisions") or {}
    counted = float(budget.get("spentUsd") or 0.0) or any(decisions.get(k) for k in _COUNTERS)
    if not counted:
        return None
    entry: JsonObject = {
        "replica": LEGACY_REPLICA,
        "period": str(budget.get("period") or "1970-01"),
        "spentUsd": float(budget.get("spentUsd") or 0.0),
    }
    entry |= {k: int(decisions.get(k) or 0) for k in _COUNTERS}
    if budget.get("previousPeriod") and budget.get("previousSpentUsd") is not None:
        entry["previousPeriod"] = budget["previousPeriod"]
        entry["previousSpentUsd"] = float(budget["previousSpentUsd"])
    return entry


def spend_sums(entries: Sequence[Mapping[str, Any]], period: str) -> tuple[float, float | None]:
    """Spend of `period` and of the one before, summed over the entries (None: no record)."""
    before = previous_period(period)
    current = 0.0
    previous: float | None = None
    for entry in entries:
        if entry.get("period") == period:
            current += float(entry.get("spentUsd") or 0.0)
            if entry.get("previousPeriod") == before:
                previous = (previous or 0.0) + float(entry.get("previousSpentUsd") or 0.0)
        elif entry.get("period") == before:
            previous = (previous or 0.0) + float(entry.get("spentUsd") or 0.0)
    return current, previous


def policy_desired(
    status: Mapping[str, Any],
    mine: JsonObject | None,
    *,
    replica: str,
    records: tuple[RoutedRecord | None, RejectedRecord | None],
    budget: api.Budget | None,
    now: datetime,
) -> JsonObject:
    """Entries (this replica's set absolutely), their sums and the budget block, from `status`."""
    legacy = _legacy_policy_entry(status)
    base = dict(status) | ({"replicas": [legacy]} if legacy is not None else {})
    entries = _entries(base, replica, mine=mine)
    period = period_of(now)
    oldest_kept = previous_period(period)
    retired = dict(status.get("retired") or {})
    kept: list[JsonObject] = []
    for entry in entries:
        if entry.get("replica") != replica and str(entry.get("period") or "") < oldest_kept:
            for k in _COUNTERS:  # folded away in this very (preconditioned) write: exactly once
                retired[k] = int(retired.get(k) or 0) + int(entry.get(k) or 0)
        else:
            kept.append(entry)
    spent, previous = spend_sums(kept, period)
    limited = budget is not None and budget.monthly_limit_usd is not None
    desired: JsonObject = {
        "budget": budget_block(spent_usd=spent, previous=previous, budget=budget, now=now)
        if limited
        else None
    }
    if not kept and "replicas" not in base:
        return desired  # nothing counted yet: no entries, no counters
    current = status.get("decisions") or {}
    routed, rejected = records
    decisions: JsonObject = {
        k: int(retired.get(k) or 0) + sum(int(e.get(k) or 0) for e in kept) for k in _COUNTERS
    }
    decisions["lastRouted"] = _newer(current.get("lastRouted"), _routed(routed))
    decisions["lastRejected"] = _newer(current.get("lastRejected"), _rejected(rejected))
    desired |= {"replicas": kept, "decisions": decisions}
    if retired:
        desired["retired"] = {k: int(retired.get(k) or 0) for k in _COUNTERS}
    return desired


def budget_block(
    *, spent_usd: float, previous: float | None, budget: api.Budget | None, now: datetime
) -> JsonObject:
    """The budget block users read: the period's spend summed over all replicas' entries."""
    period = period_of(now)
    limit = budget.monthly_limit_usd if budget is not None else None
    return {
        "period": period,
        "spentUsd": spent_usd,
        "limitUsd": limit,
        "utilizationPercent": round(spent_usd * 100 / limit, 2) if limit else 0.0,
        "state": budget_state(spent_usd, budget).value,
        "resetsAt": rfc3339(next_reset(now)),
        "previousPeriod": previous_period(period) if previous is not None else None,
        "previousSpentUsd": previous,
    }


def _routed(record: RoutedRecord | None) -> JsonObject | None:
    if record is None:
        return None
    return {
        "time": rfc3339(record.time),
        "model": record.model,
        "backend": record.backend,
        "reason": clip(record.reason),
    }


def _rejected(record: RejectedRecord | None) -> JsonObject | None:
    if record is None:
        return None
    reasons = [clip(r) for r in record.reasons[:16]]
    return {"time": rfc3339(record.time), "model": record.model, "reasons": reasons}


def _newer(current: Any, mine: JsonObject | None) -> Any:
    """The later of two records by RFC 3339 time (same format, so strings order as times)."""
    if mine is None:
        return current
    if isinstance(current, Mapping) and str(current.get("time", "")) > str(mine["time"]):
        return current
    return mine


def backend_desired(
    status: Mapping[str, Any], mine: JsonObject | None, *, replica: str, now: datetime
) -> JsonObject:
    """Selection entries (this replica's set absolutely) and their sum; {} while there are none."""
    routing = status.get("routing") or {}
    base = dict(status)
    if "replicas" not in status and int(routing.get("selectedTotal") or 0) > 0:
        legacy = {"replica": LEGACY_REPLICA, "selected": int(routing["selectedTotal"])}
        if routing.get("lastSelectedTime"):
            legacy["lastSelectedTime"] = routing["lastSelectedTime"]
        base["replicas"] = [legacy]
    entries = _entries(base, replica, mine=mine)
    if not entries:
        return {}
    retired = int(status.get("retiredSelected") or 0)
    horizon = rfc3339(now - BACKEND_ENTRY_RETENTION) or ""
    kept: list[JsonObject] = []
    for entry in entries:
        stale = str(entry.get("lastSelectedTime") or "") < horizon
        if entry.get("replica") != replica and stale:
            retired += int(entry.get("selected") or 0)
        else:
            kept.append(entry)
    times = [str(e["lastSelectedTime"]) for e in kept if e.get("lastSelectedTime")]
    desired: JsonObject = {
        "replicas": kept,
        "routing": {
            "selectedTotal": retired + sum(int(e.get("selected") or 0) for e in kept),
            "lastSelectedTime": max([*times, str(routing.get("lastSelectedTime") or "")]) or None,
        },
    }
    if retired:
        desired["retiredSelected"] = retired
    return desired


class BudgetLedger:
    """This replica's identity, the adoption of persisted totals, and the preconditioned write."""

    def __init__(
        self,
        api_: KubeApi,
        registry: Registry,
        observed: ObservedStatuses,
        *,
        replica: str,
        max_attempts: int = 8,
    ) -> None:
        self._api = api_
        self._registry = registry
        self._observed = observed
        self.replica = replica
        self._max_attempts = max_attempts
        # Own totals recovered from the spool, by object key: (uid, entry); taken on adoption.
        self._recovered: dict[ObjectKey, tuple[str, JsonObject]] = {}
        self.patches = 0
        self.on_write: Callable[[ObjectKey, JsonObject], None] | None = None
        # Told when a policy's spend changed by another replica's entry (serving workers).
        self.on_spend: Callable[[tuple[str, str]], None] | None = None

    def recover(self, entries: Mapping[ObjectKey, tuple[str, JsonObject]]) -> None:
        """Own totals from the spool, applied when each object (same uid) is next observed."""
        self._recovered.update(entries)

    def adopt(self, key: ObjectKey) -> None:
        """Take in what the API server holds for `key`: the other replicas' spend for the next
        decisions, and (after a restart) this replica's own totals, never lowering them."""
        observed = self._observed.get(key)
        if observed is None:
            return
        plural, namespace, name = key
        status = observed.status
        entries = [e for e in status.get("replicas") or [] if isinstance(e, Mapping)]
        mine = [e for e in entries if e.get("replica") == self.replica]
        recovered = self._recovered.get(key)
        if recovered is not None and recovered[0] == observed.uid:
            mine.append(recovered[1])
            del self._recovered[key]
        if plural == BACKENDS.plural:
            cell = self._registry.runtime.backend(namespace, name)
            for entry in mine:
                cell.selected_total = max(cell.selected_total, int(entry.get("selected") or 0))
            return
        policy = self._registry.runtime.policy(namespace, name)
        for entry in mine:
            previous = None
            if entry.get("previousPeriod") and entry.get("previousSpentUsd") is not None:
                previous = (str(entry["previousPeriod"]), float(entry["previousSpentUsd"]))
            policy.restore_own(
                period=str(entry.get("period") or policy.period),
                spent_usd=float(entry.get("spentUsd") or 0.0),
                previous=previous,
                counters=(
                    int(entry.get("routed") or 0),
                    int(entry.get("rejected") or 0),
                    int(entry.get("queued") or 0),
                ),
            )
        legacy = _legacy_policy_entry(status)
        others = [e for e in entries if e.get("replica") != self.replica]
        others += [legacy] if legacy is not None else []
        periods = [str(e.get("period") or "") for e in others] + [policy.period]
        period = max(periods)
        before = policy.spent_usd
        policy.load_others(period, spend_sums(others, period)[0])
        if self.on_spend is not None and policy.spent_usd != before:
            self.on_spend((namespace, name))

    def policy_entry(self, namespace: str, name: str, *, now: datetime) -> JsonObject | None:
        cell = self._registry.runtime.policy(namespace, name)
        cell.roll(now)
        return policy_entry(self.replica, cell)

    def backend_entry(self, namespace: str, name: str) -> JsonObject | None:
        cell = self._registry.runtime.backend(namespace, name)
        return backend_entry(self.replica, cell.selected_total, last=cell.last_selected_time)

    def persisted_entry(self, key: ObjectKey) -> JsonObject | None:
        """This replica's entry as the API server last showed it."""
        observed = self._observed.get(key)
        for entry in (observed.status if observed else {}).get("replicas") or []:
            if isinstance(entry, Mapping) and entry.get("replica") == self.replica:
                return dict(entry)
        return None

    def observed(self, key: ObjectKey) -> JsonObject | None:
        held = self._observed.get(key)
        return held.status if held is not None else None

    def spool_records(self) -> list[tuple[ObjectKey, tuple[str, JsonObject]]]:
        """This replica's own policy entries with their objects' uids, for the spool."""
        records: list[tuple[ObjectKey, tuple[str, JsonObject]]] = []
        for namespace, name in list(self._registry.snapshot.policies):
            key = (POLICIES.plural, namespace, name)
            uid = self.uid(key)
            entry = policy_entry(self.replica, self._registry.runtime.policy(namespace, name))
            if uid is not None and entry is not None:
                records.append((key, (uid, entry)))
        return records

    def uid(self, key: ObjectKey) -> str | None:
        observed = self._observed.get(key)
        return observed.uid if observed is not None else None

    async def write(
        self,
        kind: Kind,
        namespace: str,
        *,
        name: str,
        build: Build,
        limiter: TokenBucket | None = None,
    ) -> JsonObject | None:
        """Apply the patch build(current status) returns, under a resourceVersion precondition.

        Returns the status now on the server, or None when the write did not happen (API server
        unreachable or too much contention); the totals stay in the cells for the next flush, and
        writing them again cannot add twice. A deleted object counts as written.
        """
        key = (kind.plural, namespace, name)
        base = self._observed.get(key)
        for _ in range(self._max_attempts):
            try:
                if base is None:
                    if limiter is not None:
                        await limiter.acquire()
                    self._observed.record(
                        kind.plural, await self._api.get(kind.path(namespace, name))
                    )
                    self.adopt(key)
                    base = self._observed.get(key)
                    assert base is not None
                patch = build(base.status)
                if not patch:
                    return base.status
                body = {"metadata": {"resourceVersion": base.resource_version}, "status": patch}
                if limiter is not None:
                    await limiter.acquire()
                response = await self._api.merge_patch(kind.path(namespace, name) + "/status", body)
            except ConflictError:
                base = None
                continue
            except NotFoundError:
                return {}
            except KubeError as exc:
                logger.warning(
                    "Status of %s %s/%s not written: %s", kind.plural, namespace, name, exc
                )
                return None
            self.patches += 1
            if self.on_write is not None:
                self.on_write(key, patch)
            self._observed.record(kind.plural, response)
            self.adopt(key)
            return dict(response.get("status") or {})
        logger.warning(
            "Status of %s %s/%s not written: still conflicting", kind.plural, namespace, name
        )
        return None
