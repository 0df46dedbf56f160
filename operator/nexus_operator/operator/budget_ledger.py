"""The budget ledger: additive status (spend, decision and selection counters) with optimistic locking.

Every replica keeps its own unflushed deltas in runtime cells and adds them to what the API
server holds with a merge patch carrying `metadata.resourceVersion` as a precondition. A 409 means
another replica (or the leader's writer) got there first: re-read, re-add, retry. Deltas are taken
out of the cells before the write and given back if it fails, so concurrent replicas never lose or
double-count spend, and a crash loses at most one flush interval.

Month rollover is in UTC: the first write of a new period moves the persisted total into
`previousPeriod`/`previousSpentUsd` and starts the new period from this replica's delta.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nexus_operator import api
from nexus_operator.api import BudgetState
from nexus_operator.pipeline.runtime import (
    BackendRuntime,
    RejectedRecord,
    RoutedRecord,
    period_of,
)

from .bounds import clip
from .kube import ConflictError, Kind, KubeApi, KubeError, NotFoundError
from .observed import ObjectKey, ObservedStatuses
from .status_assembly import rfc3339

if TYPE_CHECKING:
    from nexus_operator.routing import Registry

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]
Build = Callable[[Mapping[str, Any]], JsonObject]


def next_reset(now: datetime) -> datetime:
    """The first instant of the next UTC month."""
    now = now.astimezone(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def budget_state(spent_usd: float, budget: api.Budget | None) -> BudgetState:
    """Normal without a limit; otherwise the very rule decisions use, so status conditions and
    routing never disagree at a threshold."""
    state = budget.state(spent_usd) if budget is not None else None
    return state or BudgetState.NORMAL


@dataclass(frozen=True)
class PolicyDelta:
    usd: float
    routed: int
    rejected: int
    queued: int
    last_routed: RoutedRecord | None
    last_rejected: RejectedRecord | None


def budget_block(
    *, spent_usd: float, budget: api.Budget | None, persisted: Mapping[str, Any], now: datetime
) -> JsonObject:
    """The whole budget block for `spent_usd` in the current period, carrying the previous one."""
    period = period_of(now)
    limit = budget.monthly_limit_usd if budget is not None else None
    rolled = bool(persisted.get("period")) and persisted.get("period") != period
    return {
        "period": period,
        "spentUsd": spent_usd,
        "limitUsd": limit,
        "utilizationPercent": round(spent_usd * 100 / limit, 2) if limit else 0.0,
        "state": budget_state(spent_usd, budget).value,
        "resetsAt": rfc3339(next_reset(now)),
        "previousPeriod": persisted.get("period") if rolled else persisted.get("previousPeriod"),
        "previousSpentUsd": (
            persisted.get("spentUsd") if rolled else persisted.get("previousSpentUsd")
        ),
    }


def policy_desired(
    status: Mapping[str, Any], delta: PolicyDelta, *, budget: api.Budget | None, now: datetime
) -> JsonObject:
    """Budget block and decision counters after adding `delta` to what `status` holds."""
    persisted = status.get("budget") or {}
    same_period = persisted.get("period") == period_of(now)
    base_spent = float(persisted.get("spentUsd") or 0.0) if same_period else 0.0
    limited = budget is not None and budget.monthly_limit_usd is not None
    block = budget_block(
        spent_usd=base_spent + delta.usd, budget=budget, persisted=persisted, now=now
    )
    return {
        "budget": block if limited else None,
        "decisions": _decisions(status.get("decisions") or {}, delta),
    }


def _decisions(current: Mapping[str, Any], delta: PolicyDelta) -> JsonObject:
    return {
        "routed": int(current.get("routed") or 0) + delta.routed,
        "rejected": int(current.get("rejected") or 0) + delta.rejected,
        "queued": int(current.get("queued") or 0) + delta.queued,
        "lastRouted": _newer(current.get("lastRouted"), _routed(delta.last_routed)),
        "lastRejected": _newer(current.get("lastRejected"), _rejected(delta.last_rejected)),
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
    status: Mapping[str, Any], *, selected: int, last: datetime | None
) -> JsonObject:
    """Selection counters after adding this replica's `selected` delta; {} when there is none."""
    if selected <= 0:
        return {}
    routing = status.get("routing") or {}
    mine = rfc3339(last)
    theirs = routing.get("lastSelectedTime")
    return {
        "routing": {
            "selectedTotal": int(routing.get("selectedTotal") or 0) + selected,
            "lastSelectedTime": max(filter(None, (theirs, mine)), default=None),
        }
    }


class BudgetLedger:
    """This replica's unflushed deltas, and the resourceVersion-precondition write that adds them."""

    def __init__(
        self,
        api_: KubeApi,
        registry: Registry,
        observed: ObservedStatuses,
        *,
        max_attempts: int = 8,
    ) -> None:
        self._api = api_
        self._registry = registry
        self._observed = observed
        self._max_attempts = max_attempts
        self._flushed_selected: dict[tuple[str, str], tuple[BackendRuntime, int]] = {}
        self.patches = 0

    def take_policy(self, namespace: str, name: str) -> PolicyDelta:
        cell = self._registry.runtime.policy(namespace, name)
        usd, routed, rejected, queued = cell.take_unflushed()
        return PolicyDelta(usd, routed, rejected, queued, cell.last_routed, cell.last_rejected)

    def give_back(self, namespace: str, name: str, *, delta: PolicyDelta) -> None:
        cell = self._registry.runtime.policy(namespace, name)
        cell.give_back(delta.usd, delta.routed, rejected=delta.rejected, queued=delta.queued)

    def settle_policy(self, namespace: str, name: str, *, status: Mapping[str, Any]) -> None:
        """Adopt the total now persisted (all replicas' spend) for the next decisions."""
        block = status.get("budget") or {}
        if block.get("period"):
            cell = self._registry.runtime.policy(namespace, name)
            cell.load_persisted(str(block["period"]), float(block.get("spentUsd") or 0.0))

    def observed(self, key: ObjectKey) -> JsonObject | None:
        held = self._observed.get(key)
        return held.status if held is not None else None

    def take_selected(self, key: tuple[str, str]) -> tuple[int, datetime | None]:
        cell = self._registry.runtime.backend(*key)
        return cell.selected_total - self._flushed(key, cell), cell.last_selected_time

    def settle_selected(self, key: tuple[str, str], selected: int) -> None:
        cell = self._registry.runtime.backend(*key)
        self._flushed_selected[key] = (cell, self._flushed(key, cell) + selected)

    def _flushed(self, key: tuple[str, str], cell: BackendRuntime) -> int:
        """Selections of `cell` already written; a re-created Backend's fresh cell has none."""
        flushed_cell, count = self._flushed_selected.get(key, (None, 0))
        return count if flushed_cell is cell else 0

    async def write(
        self, kind: Kind, namespace: str, *, name: str, build: Build
    ) -> JsonObject | None:
        """Apply the patch build(current status) returns, under a resourceVersion precondition.

        Returns the status now on the server, or None when the write did not happen (API server
        unreachable or too much contention) so the caller keeps its delta for the next flush.
        A deleted object counts as written: its deltas have nowhere to go.
        """
        key = (kind.plural, namespace, name)
        base = self._observed.get(key)
        for _ in range(self._max_attempts):
            try:
                if base is None:
                    self._observed.record(
                        kind.plural, await self._api.get(kind.path(namespace, name))
                    )
                    base = self._observed.get(key)
                    assert base is not None
                patch = build(base.status)
                if not patch:
                    return base.status
                body = {"metadata": {"resourceVersion": base.resource_version}, "status": patch}
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
            self._observed.record(kind.plural, response)
            return dict(response.get("status") or {})
        logger.warning(
            "Status of %s %s/%s not written: still conflicting", kind.plural, namespace, name
        )
        return None
