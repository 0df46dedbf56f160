"""Runtime facts: small mutable cells beside the immutable snapshot.

Spec comes from the API server, runtime facts from probes and usage reports; a decision joins
them. RuntimeState also keeps the sets of backends that are not Healthy or have recent failures,
so the Health and Quality stages touch only those instead of every candidate, and the backends
whose credential (credentialsSecretRef) is unusable, with why — set by whoever reads Secrets
(the operator, `serve --from-dir`) through routing's CredentialStore, never a value.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from nexus_operator.api import HealthState

ERROR_WINDOW = timedelta(hours=1)
SATURATED_LOAD = 100
"""In-flight count from which the smart score's load part is 0 (pLoad = 100 − min(n, 100))."""
BackendKey = tuple[str, str]


def ema(old: float | None, sample: float) -> float:
    """new = (sample + 4·old)/5, the first sample taken as is."""
    return sample if old is None else (sample + 4 * old) / 5


def period_of(now: datetime) -> str:
    """Budget period of a moment: its UTC month (formatted once per month, not per decision)."""
    if now.tzinfo is not UTC:
        now = now.astimezone(UTC)
    key = now.year * 100 + now.month
    period = _PERIODS.get(key)
    if period is None:
        period = _PERIODS[key] = f"{now.year:04d}-{now.month:02d}"
    return period


_PERIODS: dict[int, str] = {}


class ScoreLog:
    """Numbered record of the cells whose smart score may have risen: in-flight set or released
    below SATURATED_LOAD, latency lowered or forgotten, in-flight bound to shared counters.

    Nothing else raises a score: taking a slot or a higher latency only lowers it, so upper
    bounds of scores (`plan.ScoreBounds`) stay bounds until a cell is recorded here, and a
    reader asks what was recorded since it last looked. Bounded: a reader too far behind
    starts over. One log per RuntimeState; a cell made on its own gets its own.
    """

    __slots__ = ("_entries", "serial")

    def __init__(self, size: int = 4096) -> None:
        self._entries: deque[BackendRuntime] = deque(maxlen=size)
        self.serial = 0

    def note(self, cell: BackendRuntime) -> None:
        self.serial += 1
        self._entries.append(cell)

    def since(self, serial: int) -> list[BackendRuntime] | None:
        """Cells recorded after `serial`; None when the log no longer reaches back that far."""
        count = self.serial - serial
        entries = self._entries
        if count < 0 or count > len(entries):
            return None
        return [entries[-i] for i in range(1, count + 1)]


class InFlightCounters(Protocol):
    """In-flight counts shared by the serving processes of one replica, one row per backend."""

    @property
    def values(self) -> Sequence[int]:
        """The rows, read without the lock (the capacity check and scores read them)."""
        ...

    def try_take(self, row: int, cap: int | None) -> bool:
        """Add one unless the row is already at `cap`; atomic across processes."""
        ...

    def release(self, row: int) -> None:
        """Remove one (never below zero)."""
        ...


class BackendRuntime:
    """Health, latency, load and outcome history of one backend in this replica.

    In-flight is a plain int in one process; bound to a row of shared counters, it is the
    total over every serving process of the replica, and taking a slot is atomic across them.
    """

    __slots__ = (
        "_counters",
        "_credential_problems",
        "_facts",
        "_failing",
        "_failures",
        "_health_state",
        "_in_flight",
        "_key",
        "_latency_ms",
        "_max_concurrency",
        "_not_healthy",
        "_outcomes",
        "_row",
        "_saturated",
        "_values",
        "consecutive_failures",
        "consecutive_successes",
        "last_error",
        "last_probe_time",
        "last_selected_time",
        "score_log",
        "selected_total",
        "ttft_ms",
    )

    def __init__(
        self,
        key: BackendKey = ("", ""),
        *,
        not_healthy: set[BackendKey] | None = None,
        failing: set[BackendKey] | None = None,
        saturated: set[BackendKey] | None = None,
        credential_problems: dict[BackendKey, str] | None = None,
        facts: FactLog | None = None,
        score_log: ScoreLog | None = None,
    ) -> None:
        self._key = key
        self.score_log = score_log if score_log is not None else ScoreLog()
        self._facts = facts
        self._credential_problems = credential_problems if credential_problems is not None else {}
        self._not_healthy = not_healthy if not_healthy is not None else set()
        self._failing = failing if failing is not None else set()
        self._saturated = saturated if saturated is not None else set()
        self._max_concurrency: int | None = None
        self._in_flight = 0
        self._counters: InFlightCounters | None = None
        self._values: Sequence[int] | None = None
        self._row = -1
        self._outcomes: deque[tuple[datetime, bool]] = deque()
        self._failures = 0
        self._health_state = HealthState.HEALTHY
        self.health_state = HealthState.UNKNOWN
        self._latency_ms: float | None = None
        self.ttft_ms: float | None = None
        self.selected_total = 0
        self.last_selected_time: datetime | None = None
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.last_error: str | None = None
        self.last_probe_time: datetime | None = None

    @property
    def health_state(self) -> HealthState:
        return self._health_state

    @health_state.setter
    def health_state(self, state: HealthState) -> None:
        previous, self._health_state = self._health_state, state
        if state is HealthState.HEALTHY:
            self._not_healthy.discard(self._key)
        else:
            self._not_healthy.add(self._key)
        if state is not previous and self._facts is not None:
            self._facts.note(self._key)

    @property
    def credentials_problem(self) -> str | None:
        """Why the backend's credential cannot be used (names Secret and key only), else None."""
        return self._credential_problems.get(self._key)

    @credentials_problem.setter
    def credentials_problem(self, problem: str | None) -> None:
        if problem is None:
            self._credential_problems.pop(self._key, None)
        else:
            self._credential_problems[self._key] = problem
        if self._facts is not None:
            self._facts.note(self._key)

    @property
    def in_flight(self) -> int:
        values = self._values
        return self._in_flight if values is None else values[self._row]

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        if value < self._in_flight and value < SATURATED_LOAD:
            self.score_log.note(self)
        self._in_flight = value
        self._track_saturation()

    @property
    def shares_in_flight(self) -> bool:
        """In-flight lives in shared counters: other processes change it, unrecorded here."""
        return self._counters is not None

    def bind_in_flight(self, counters: InFlightCounters, row: int) -> None:
        """Count in-flight in `row` of counters shared with the other serving processes."""
        self._counters = counters
        self._values = counters.values
        self._row = row
        self.score_log.note(self)
        self._track_saturation()

    @property
    def latency_ms(self) -> float | None:
        """Latency EMA in ms; None until measured."""
        return self._latency_ms

    @latency_ms.setter
    def latency_ms(self, value: float | None) -> None:
        old = self._latency_ms
        if old is not None and (value is None or not value >= old):  # NaN-safe: a NaN old counts
            self.score_log.note(self)
        self._latency_ms = value

    def try_take(self) -> bool:
        """Take one in-flight slot unless the backend is at maxConcurrency."""
        counters = self._counters
        cap = self._max_concurrency
        if counters is not None:
            return counters.try_take(self._row, cap)
        count = self._in_flight + 1
        if cap is not None:
            if count > cap:
                return False
            if count == cap:  # below the cap it was not in `saturated` (_track_saturation)
                self._saturated.add(self._key)
        self._in_flight = count  # a rise: the score log records only falls
        return True

    def release_slot(self) -> None:
        counters = self._counters
        if counters is not None:
            counters.release(self._row)
        else:
            self.in_flight = max(0, self._in_flight - 1)

    @property
    def max_concurrency(self) -> int | None:
        """The spec's cap, mirrored here by the registry so saturation is tracked as load moves."""
        return self._max_concurrency

    @max_concurrency.setter
    def max_concurrency(self, cap: int | None) -> None:
        self._max_concurrency = cap
        self._track_saturation()

    def _track_saturation(self) -> None:
        """Keep the runtime's `saturated` set: the backends the capacity check must look at.
        With shared counters another process may fill the backend at any time, so every
        backend with a cap stays a suspect and the check reads the live count."""
        cap = self._max_concurrency
        if cap is not None and (self._counters is not None or self._in_flight >= cap):
            self._saturated.add(self._key)
        else:
            self._saturated.discard(self._key)

    def record_probe(
        self,
        ok: bool,
        latency_ms: float | None,
        *,
        error: str | None,
        failure_threshold: int,
        recovery_threshold: int,
        now: datetime,
    ) -> bool:
        """Apply one probe result to the health state machine; True when the state changed."""
        self.last_probe_time = now
        if ok:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            if latency_ms is not None:
                self.latency_ms = ema(self.latency_ms, latency_ms)
        else:
            self.consecutive_failures += 1
            self.consecutive_successes = 0
            self.last_error = error
        new_state = self._next_state(
            ok, failure_threshold=failure_threshold, recovery_threshold=recovery_threshold
        )
        changed = new_state is not self._health_state
        self.health_state = new_state
        return changed

    def _next_state(
        self, ok: bool, *, failure_threshold: int, recovery_threshold: int
    ) -> HealthState:
        state = self._health_state
        if state is HealthState.UNKNOWN:
            return HealthState.HEALTHY if ok else HealthState.UNHEALTHY
        if state is HealthState.HEALTHY and self.consecutive_failures >= failure_threshold:
            return HealthState.UNHEALTHY
        if state is HealthState.UNHEALTHY and self.consecutive_successes >= recovery_threshold:
            return HealthState.HEALTHY
        return state

    def set_assumed_healthy(self) -> None:
        """Health checks disabled: the backend counts as Healthy."""
        self.health_state = HealthState.HEALTHY

    def record_outcome(self, *, success: bool, now: datetime) -> None:
        """One usage report's outcome, for the 1-hour error rate."""
        self._outcomes.append((now, success))
        if not success:
            self._failures += 1
            self._failing.add(self._key)
        self._prune(now)

    def record_ttft(self, ttft_ms: float) -> None:
        self.ttft_ms = ema(self.ttft_ms, ttft_ms)

    def record_latency(self, latency_ms: float) -> None:
        self.latency_ms = ema(self.latency_ms, latency_ms)

    def error_rate(self, now: datetime) -> float | None:
        """Share of failed reports in the last hour; None without reports."""
        self._prune(now)
        if not self._outcomes:
            return None
        return self._failures / len(self._outcomes)

    def _prune(self, now: datetime) -> None:
        """Drop reports older than the window; O(1) amortised per report."""
        outcomes = self._outcomes
        horizon = now - ERROR_WINDOW
        while outcomes and outcomes[0][0] <= horizon:
            _, ok = outcomes.popleft()
            if not ok:
                self._failures -= 1
        if not self._failures:
            self._failing.discard(self._key)


@dataclass(slots=True)
class RoutedRecord:
    time: datetime
    model: str
    backend: str
    reason: str


@dataclass(slots=True)
class RejectedRecord:
    time: datetime
    model: str
    reasons: list[str]


class PolicyRuntime:
    """Budget spend and decision counters of one RoutingPolicy in this replica.

    Input API (what decisions and usage reports feed, whichever process they come from):
    `add_spend`, `count_routed`, `count_rejected`, `count_queued`.

    This replica's own running totals (`own_usd` for `period`, and the lifetime counters
    `routed`/`rejected`/`queued`) only ever grow; the status ledger writes them as absolute values
    into this replica's entry of the policy's status, so a retried write cannot add twice.
    `spent_usd` is what decisions see: the other replicas' persisted totals for the period plus
    this replica's own total, which counts at once.
    """

    __slots__ = (
        "_others_usd",
        "last_rejected",
        "last_routed",
        "own_usd",
        "period",
        "previous_own_usd",
        "previous_period",
        "queued",
        "rejected",
        "routed",
        "spent_usd",
    )

    def __init__(self, *, now: datetime | None = None) -> None:
        self.period = period_of(now or datetime.now(UTC))
        self.spent_usd = 0.0
        self.own_usd = 0.0
        self._others_usd = 0.0
        self.previous_period: str | None = None
        self.previous_own_usd: float | None = None
        self.routed = self.rejected = self.queued = 0
        self.last_routed: RoutedRecord | None = None
        self.last_rejected: RejectedRecord | None = None

    def spent_at(self, now: datetime) -> float:
        """Spend in the period containing `now` (0 once the month has rolled over)."""
        return self.spent_usd if period_of(now) == self.period else 0.0

    def add_spend(self, usd: float, now: datetime) -> None:
        """A non-finite amount is dropped: inf or nan would stick in the total until the month ends."""
        if not math.isfinite(usd):
            return
        self._roll(now)
        self.own_usd += usd
        self.spent_usd += usd

    def adopt_total(self, period: str, spent_usd: float) -> None:
        """Take the control process's total as is (a serving worker keeps no ledger of its own)."""
        if period != self.period:
            if period < self.period:
                return
            self._start_period(period)
        self.spent_usd = spent_usd

    def load_others(self, period: str, others_usd: float) -> None:
        """Adopt the other replicas' persisted spend for `period`; an older period is ignored."""
        if period != self.period:
            if period < self.period:
                return
            self._start_period(period)
        self._others_usd = others_usd
        self.spent_usd = others_usd + self.own_usd

    def restore_own(
        self,
        *,
        period: str,
        spent_usd: float,
        previous: tuple[str, float] | None,
        counters: tuple[int, int, int],
    ) -> None:
        """Take back this replica's own totals after a restart (from its status entry or spool).

        Totals only grow, so the larger of what is held and what is restored is the truth: a
        restore never lowers a total nor adds one twice.
        """
        if period > self.period:
            self._start_period(period)
        if period == self.period and spent_usd > self.own_usd:
            self.spent_usd += spent_usd - self.own_usd
            self.own_usd = spent_usd
        if period < self.period and self.previous_period in (None, period):
            self.previous_period = period
            self.previous_own_usd = max(self.previous_own_usd or 0.0, spent_usd)
        if previous is not None and period == self.period:
            prev_period, prev_usd = previous
            if self.previous_period in (None, prev_period):
                self.previous_period = prev_period
                self.previous_own_usd = max(self.previous_own_usd or 0.0, prev_usd)
        routed, rejected, queued = counters
        self.routed = max(self.routed, routed)
        self.rejected = max(self.rejected, rejected)
        self.queued = max(self.queued, queued)

    def count_routed(self, record: RoutedRecord, *, count: int = 1) -> None:
        """`count` decisions routed, `record` the last of them."""
        self.routed += count
        self.last_routed = record

    def count_rejected(self, record: RejectedRecord) -> None:
        self.rejected += 1
        self.last_rejected = record

    def count_queued(self) -> None:
        self.queued += 1

    def roll(self, now: datetime) -> None:
        """Start the period of `now` if it is a later one (the status writer calls it each flush)."""
        self._roll(now)

    def _roll(self, now: datetime) -> None:
        period = period_of(now)
        if period != self.period:
            self._start_period(period)

    def _start_period(self, period: str) -> None:
        self.previous_period = self.period
        self.previous_own_usd = self.own_usd
        self.period = period
        self.spent_usd = 0.0
        self.own_usd = 0.0
        self._others_usd = 0.0


class FactLog:
    """Numbered record of the backends whose health state or credential problem changed, so a reader of static facts asks what changed since it last looked instead of
    comparing every backend's state (bounded: a reader too far behind starts over)."""

    __slots__ = ("_entries", "serial")

    def __init__(self, size: int = 8192) -> None:
        self._entries: deque[BackendKey] = deque(maxlen=size)
        self.serial = 0

    def note(self, key: BackendKey) -> None:
        self.serial += 1
        self._entries.append(key)

    def since(self, serial: int) -> set[BackendKey] | None:
        """Backends noted after `serial`; None when the log no longer reaches back that far."""
        count = self.serial - serial
        if count < 0 or count > len(self._entries):
            return None
        return {self._entries[-i] for i in range(1, count + 1)}


class RuntimeState:
    """All runtime cells of one replica, created on demand and never dropped while referenced."""

    __slots__ = (
        "_backends",
        "_policies",
        "credential_problems",
        "facts",
        "failing",
        "not_healthy",
        "round_robin",
        "saturated",
        "score_log",
    )

    def __init__(self) -> None:
        self._backends: dict[BackendKey, BackendRuntime] = {}
        self._policies: dict[tuple[str, str], PolicyRuntime] = {}
        # roundRobin counters per (namespace, policy or None, model); each replica keeps its own.
        self.round_robin: dict[tuple[str, str | None, str], int] = {}
        self.not_healthy: set[BackendKey] = set()
        self.failing: set[BackendKey] = set()
        self.saturated: set[BackendKey] = set()
        # Backend → why its credential is unusable. Owned by the credential writer (it outlives
        # a backend's cell: forget_backend leaves it to the writer's own forget).
        self.credential_problems: dict[BackendKey, str] = {}
        # Changes of not_healthy membership and of credential_problems, in order.
        self.facts = FactLog()
        self.score_log = ScoreLog()

    def backend(self, namespace: str, name: str) -> BackendRuntime:
        key = (namespace, name)
        cell = self._backends.get(key)
        if cell is None:
            cell = BackendRuntime(
                key,
                not_healthy=self.not_healthy,
                failing=self.failing,
                saturated=self.saturated,
                credential_problems=self.credential_problems,
                facts=self.facts,
                score_log=self.score_log,
            )
            self._backends[key] = cell
        return cell

    def policy(self, namespace: str, name: str) -> PolicyRuntime:
        key = (namespace, name)
        cell = self._policies.get(key)
        if cell is None:
            cell = PolicyRuntime()
            self._policies[key] = cell
        return cell

    def forget_policy(self, namespace: str, name: str) -> None:
        """Drop a deleted policy's cell so a re-created one starts with no spend or counters."""
        self._policies.pop((namespace, name), None)

    def forget_backend(self, namespace: str, name: str) -> None:
        """Drop a deleted backend's cell so a re-created one starts fresh."""
        key = (namespace, name)
        self._backends.pop(key, None)
        if key in self.not_healthy:
            self.facts.note(key)
        self.not_healthy.discard(key)
        self.failing.discard(key)
        self.saturated.discard(key)
