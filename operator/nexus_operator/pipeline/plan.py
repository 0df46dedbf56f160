"""Per-(policy, model) precomputation: everything about a decision that no request can change.

A plan is built once per snapshot for each policy and model that is asked for. It holds the
candidates in name order and in priority order, the exclusions that depend only on spec
(draining, policy privacy, policy tier and capabilities) attributed exactly as a sequential run
would attribute them, and bounds that let request-dependent stages skip work when the request
cannot exclude anything.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from .runtime import BackendRuntime, ScoreLog
from .verdict import Exclusion
from .views import BackendKey, Candidate, token_cost


@runtime_checkable
class StaticFilter(Protocol):
    """A reconciler whose spec-only part can be evaluated once per plan."""

    @property
    def name(self) -> str: ...

    def static_exclusion(self, candidate: Candidate) -> Exclusion | None: ...


@dataclass(frozen=True, slots=True)
class StaticStage:
    """One stage's spec-only exclusions, and the state a decision is in once it applied them
    after every earlier stage's: built once per plan and shared (never copied) by decisions.

    `before` names what the earlier stages excluded and `survivors` are the candidates left
    after this one, in name order; `applied` is every static exclusion so far, in order, and
    `counts` the same counted by (reconciler, reason code), so a decision that took the static
    path is counted in metrics at a cost of its reason codes, not of its exclusions."""

    exclusions: tuple[Exclusion, ...]
    before: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    survivors: tuple[Candidate, ...] = ()
    applied: tuple[Exclusion, ...] = ()
    counts: Mapping[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PriceBounds:
    """The highest per-1k prices among a set of candidates: an upper bound of any estimate."""

    input_per1k: float
    output_per1k: float

    @classmethod
    def of(cls, candidates: Iterable[Candidate]) -> PriceBounds:
        models = [c.model for c in candidates]
        return cls(
            input_per1k=max((m.input_per1k for m in models), default=0.0),
            output_per1k=max((m.output_per1k for m in models), default=0.0),
        )

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return token_cost(
            input_tokens,
            output_tokens,
            input_per1k=self.input_per1k,
            output_per1k=self.output_per1k,
        )


@dataclass(frozen=True, slots=True)
class CapabilityBounds:
    """What every candidate of a plan offers, so a request within these bounds adds nothing."""

    min_tier: int
    all_vision: bool
    all_tools: bool
    all_json_mode: bool
    min_context_length: int
    min_max_output_tokens: int | None

    @classmethod
    def of(cls, candidates: Sequence[Candidate]) -> CapabilityBounds:
        models = [c.model for c in candidates]
        caps = [m.max_output_tokens for m in models if m.max_output_tokens is not None]
        return cls(
            min_tier=min((c.backend.tier for c in candidates), default=1),
            all_vision=all(m.supports_vision for m in models),
            all_tools=all(m.supports_tools for m in models),
            all_json_mode=all(m.supports_json_mode for m in models),
            min_context_length=min((m.context_length for m in models), default=0),
            min_max_output_tokens=min(caps, default=None),
        )


SmartRow = tuple[int, str, Candidate, BackendRuntime, bool]
"""(100 − min(priority, 100), name, candidate, runtime, Open zone): what the smart score reads
of a candidate that no request changes, in the order it scans them."""


def smart_rows(candidates: Sequence[Candidate], *, ordered: bool = False) -> tuple[SmartRow, ...]:
    """The smart strategy's rows in (priority, name) order (`ordered`: already in it)."""
    if not ordered:
        candidates = sorted(candidates, key=lambda c: (c.backend.priority, c.backend.name))
    return tuple(
        (
            100 - min(c.backend.priority, 100),
            c.backend.name,
            c,
            c.runtime,
            c.backend.is_open,
        )
        for c in candidates
    )


ScoreEntry = tuple[float, str, int, int, Candidate, BackendRuntime, bool]
"""(−bound, name, row index in `smart_rows`, then the rest of the row: priority part,
candidate, runtime, Open zone): ascending order scans bounds high to low, ties by name (names
are unique, so tuples never compare past them)."""


def fresh_bounds(rows: Sequence[SmartRow], weights: tuple[int, int, int]) -> list[ScoreEntry]:
    """Each row's priority part plus the full load and latency weights, in scan order: with no
    runtime fact known, the bound of its score (the order is (priority, name) for wP > 0)."""
    w_prio, w_load, w_lat = weights
    dynamic_max = 100 * w_load + 100 * w_lat
    return sorted(
        (-(row[0] * w_prio + dynamic_max) / 100, row[1], index, row[0], row[2], row[3], row[4])
        for index, row in enumerate(rows)
    )


class ScoreBounds:
    """Upper bounds of the smart scores of a plan's candidates before the Open-zone and TTFT
    penalties (which only lower a score), in descending order, for one set of weights.

    Every bound starts fresh (`fresh_bounds`). A scan that computes a score lowers that
    candidate's bound to it (`tighten`); a cell the runtime's ScoreLog records (its score may
    have risen) gets its fresh bound back (`current`). Nothing else raises a score, so each
    bound stays at or above the score it bounds, and a scan in this order may stop at the first
    bound below the best score found. Not `active` (the bounds stay fresh) when the candidates'
    in-flight counts are shared with other processes, whose releases are not recorded here, or
    when their cells do not all record into one log.

    Keeping bounds costs a few µs per decision when usage reports keep releasing slots, more
    than a short scan in fresh order: the bounds are kept (`learning`) only while a scan in
    fresh order would visit more than LONG_SCAN rows (`settle` decides after each pick), and
    start fresh again whenever they are taken up.
    """

    __slots__ = (
        "_entries",
        "_fresh",
        "_index",
        "_log",
        "_serial",
        "active",
        "fresh_order",
        "learning",
        "order",
        "weights",
    )

    def __init__(self, rows: Sequence[SmartRow], *, weights: tuple[int, int, int]) -> None:
        runtimes = [row[3] for row in rows]
        logs = {id(r.score_log): r.score_log for r in runtimes}
        self.weights = weights
        self._log = next(iter(logs.values())) if len(logs) == 1 else ScoreLog()
        self.active = len(logs) == 1 and not any(r.shares_in_flight for r in runtimes)
        self._serial = self._log.serial
        self._index = {id(runtime): (index, runtime) for index, runtime in enumerate(runtimes)}
        self.fresh_order = fresh_bounds(rows, weights)
        self.order = list(self.fresh_order)
        self._fresh = sorted(self.fresh_order, key=lambda entry: entry[2])
        self._entries = list(self._fresh)
        self.learning = False

    def current(self) -> list[ScoreEntry]:
        """The bounds in scan order, after what the log recorded since the last call."""
        if not self.learning:
            return self.fresh_order
        if self._log.serial != self._serial:
            self._catch_up()
        return self.order

    def settle(self, best_score: float, best_name: str) -> None:
        """Keep bounds from now on if a scan in fresh order would have been long, else stop."""
        long = bisect_left(self.fresh_order, (-best_score, best_name)) > LONG_SCAN
        if long and not self.learning and self.active:
            self._entries = list(self._fresh)
            self.order = list(self.fresh_order)
            self._serial = self._log.serial
        self.learning = long and self.active

    def tighten(self, scores: Sequence[tuple[int, float]]) -> None:
        """Lower the bounds of the rows with these indices to the scores a scan computed."""
        entries, order = self._entries, self.order
        for index, score in scores:
            old = entries[index]
            entries[index] = new = (-score, *old[1:])
            del order[bisect_left(order, old)]
            insort(order, new)

    def _catch_up(self) -> None:
        log, index = self._log, self._index
        recorded = log.since(self._serial)
        self._serial = log.serial
        if recorded is None:  # too far behind: any cell may have changed
            cells = list(index.values())
        else:
            cells = [found for found in map(index.get, map(id, recorded)) if found is not None]
        if any(runtime.shares_in_flight for _, runtime in cells):
            self.active = self.learning = False
        if not self.active or len(cells) > _MOVES_BEFORE_SORT:
            self._entries = list(self._fresh)
            self.order = sorted(self._fresh)
            return
        entries, order, fresh = self._entries, self.order, self._fresh
        for row, _ in cells:
            old = entries[row]
            if old is not fresh[row]:
                entries[row] = fresh[row]
                del order[bisect_left(order, old)]
                insort(order, fresh[row])


_MOVES_BEFORE_SORT = 8
"""More cells recorded at once than this: every bound starts fresh again (one sort)."""
LONG_SCAN = 30
"""Rows a scan in fresh order visits before keeping bounds pays. Measured at 50 backends with
every Route reported (≈ 0.27 µs a row; a release costs the kept bounds ≈ 3 µs in moves): at 24
rows they cost ≈ 1 µs more than the scan, at 50 rows ≈ 3 µs less; with no releases (clients
that never report) they cut a 50-row scan to one or two rows."""


def among(keys: set[BackendKey], plan: CandidatePlan) -> list[Candidate]:
    """The plan's candidates whose keys are in `keys`, in name order; costs O(len(keys)), so a
    small runtime set (unhealthy, failing, saturated) is checked without touching every
    candidate. The set is copied first: probes may update it from another thread."""
    by_key = plan.by_key
    found = [by_key[k] for k in tuple(keys) if k in by_key]
    found.sort(key=lambda c: c.backend.name)
    return found


class CandidatePlan:
    """Immutable precomputation for one (namespace, policy, model), and the smart strategy's
    score bounds over its candidates (kept up to date as the runtime changes)."""

    __slots__ = (
        "_score_bounds",
        "by_key",
        "by_priority",
        "candidates",
        "capabilities",
        "model",
        "open_candidates",
        "prices",
        "smart_rows",
        "static",
    )

    def __init__(
        self, *, model: str, candidates: Iterable[Candidate], filters: Sequence[StaticFilter]
    ) -> None:
        ordered = tuple(sorted(candidates, key=lambda c: c.backend.name))
        self.model = model
        self.candidates = ordered
        self.by_key = {c.backend.key: c for c in ordered}
        self.by_priority = tuple(
            sorted(ordered, key=lambda c: (c.backend.priority, c.backend.name))
        )
        self.open_candidates = tuple(c for c in ordered if c.backend.is_open)
        self.smart_rows = smart_rows(self.by_priority, ordered=True)
        self._score_bounds: ScoreBounds | None = None
        self.prices = PriceBounds.of(ordered)
        self.capabilities = CapabilityBounds.of(ordered)
        self.static = _static_stages(ordered, filters)

    def score_bounds(self, weights: tuple[int, int, int]) -> ScoreBounds:
        """The smart scores' bounds for these weights (made on first use, kept while they last)."""
        bounds = self._score_bounds
        if bounds is None or bounds.weights != weights:
            bounds = self._score_bounds = ScoreBounds(self.smart_rows, weights=weights)
        return bounds


def _static_stages(
    candidates: Sequence[Candidate], filters: Sequence[StaticFilter]
) -> dict[str, StaticStage]:
    """Run the spec-only checks in pipeline order; the first stage that excludes a backend owns it."""
    taken: set[str] = set()
    applied: list[Exclusion] = []
    counts: dict[tuple[str, str], int] = {}
    stages: dict[str, StaticStage] = {}
    for stage in filters:
        before = frozenset(taken)
        found: list[Exclusion] = []
        for candidate in candidates:
            if candidate.backend.name in taken:
                continue
            exclusion = stage.static_exclusion(candidate)
            if exclusion is not None:
                taken.add(candidate.backend.name)
                found.append(exclusion)
                key = (exclusion.reconciler, exclusion.reason_code)
                counts[key] = counts.get(key, 0) + 1
        applied.extend(found)
        stages[stage.name] = StaticStage(
            exclusions=tuple(found),
            before=before,
            names=frozenset(e.backend for e in found),
            survivors=tuple(c for c in candidates if c.backend.name not in taken),
            applied=tuple(applied),
            counts=MappingProxyType(dict(counts)),
        )
    return stages
