"""Selection strategies: each picks one candidate and says why, in the SPEC's reason format.

`PICKS` maps every `api.Strategy` to its pick function; the SelectionReconciler looks the
policy's strategy up there (a unit test checks that every member has an entry). What each
strategy does, as users read it in the CRD, is `api.STRATEGY_SUMMARIES` (the api layer cannot
import this one); the same test checks both tables name the same strategies.

Unknown latency counts as 0 ms (pLat 100) so a backend without measurements still gets
traffic, and thereby measurements.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, NamedTuple, Protocol

from nexus_operator.api import Strategy

from .intent import RoutingIntent
from .plan import ScoreBounds, fresh_bounds, smart_rows
from .views import Candidate


@dataclass(frozen=True, slots=True)
class SmartWeights:
    priority: int = 50
    load: int = 30
    latency: int = 20


class Pick(NamedTuple):
    candidate: Candidate
    reason: str


class Selector(Protocol):
    """What a pick function may read from the SelectionReconciler that calls it."""

    @property
    def weights(self) -> SmartWeights: ...

    @property
    def ttft_penalty_threshold_ms(self) -> int: ...

    @property
    def rng(self) -> random.Random: ...

    def take_turn(self, intent: RoutingIntent) -> int:
        """The roundRobin position for this request's model; advances it unless a dry run."""
        ...


class PickFunction(Protocol):
    def __call__(
        self, intent: RoutingIntent, candidates: Sequence[Candidate], *, selector: Selector
    ) -> Pick: ...


def pick_smart(
    intent: RoutingIntent, candidates: Sequence[Candidate], *, selector: Selector
) -> Pick:
    """Highest score, ties by name ascending, where

        score = (pPrio·wP + pLoad·wL + pLat·wLat) / 100
        pPrio = 100 − min(priority, 100), pLoad = 100 − min(inFlight, 100),
        pLat = 100 − min(latencyMs / 10, 100)   (unknown latency: pLat = 100)

    halved for Open zones under budget pressure (`penalize_open`), and multiplied by
    1 − min((ttft − t) / t, 1) when 0 < t < ttft (t: `ttft_threshold_ms`).

    Load, latency and the penalties can only lower a score below its priority part plus the
    full load and latency weights, so a scan in (priority, name) order may stop once that bound
    falls below the best score found. A plan keeps tighter bounds (`ScoreBounds`: the scores
    its earlier scans computed, until the runtime records that one may have risen) in
    descending order, and the scan follows them: when most candidates are loaded, as under
    clients that never report usage, it stops after a row or two instead of visiting every
    candidate. A row whose bound equals the best score is skipped only when its name sorts
    after the best's (it could at most tie, and a tie goes to the lower name), so the pick is
    the full scan's in every case. Without a plan (library callers), or with in-flight counts
    shared with other processes, the bounds stay fresh: (priority, name) order, cut at the
    priority part plus the full load and latency weights.
    This is the hottest loop of a decision: the formula is inlined, with no call per candidate.
    """
    weights, penalize_open = selector.weights, intent.annotations.penalize_open
    w_prio, w_load, w_lat = weights.priority, weights.load, weights.latency
    key = (w_prio, w_load, w_lat)
    t = selector.ttft_penalty_threshold_ms
    plan, excluded = intent.plan, intent.excluded_names
    bounds: ScoreBounds | None = None
    if plan is not None:
        bounds = plan.score_bounds(key)
        order, learn = bounds.current(), bounds.learning
    else:
        order, learn = fresh_bounds(smart_rows(candidates), key), False
    best: Candidate | None = None
    best_name = ""
    best_score = -1.0
    tightened: list[tuple[int, float]] = []
    for neg_bound, name, index, p_prio, candidate, runtime, is_open in order:
        if name in excluded:
            continue
        if best is not None and (
            -neg_bound < best_score or (-neg_bound == best_score and name > best_name)
        ):
            break  # and so would every later row: they come in (−bound, name) order
        in_flight = runtime.in_flight
        latency = runtime.latency_ms
        p_lat = 100.0 if latency is None else (0.0 if latency >= 1000 else 100 - latency / 10)
        p_load = 100 - (in_flight if in_flight < 100 else 100)
        score = (p_prio * w_prio + p_load * w_load + p_lat * w_lat) / 100
        if learn and score < -neg_bound:
            tightened.append((index, score))
        if penalize_open and is_open:
            score /= 2
        ttft = runtime.ttft_ms
        if ttft is not None and 0 < t < ttft:
            score *= 1 - min((ttft - t) / t, 1.0)
        if score > best_score or (score == best_score and name < best_name):
            best, best_name, best_score = candidate, name, score
    if best is None:
        raise ValueError("pick_smart needs at least one candidate")
    if bounds is not None:
        if tightened:
            bounds.tighten(tightened)
        bounds.settle(best_score, best_name)
    return Pick(best, f"highest_score:{best_name}:{best_score:.1f}")


def pick_round_robin(
    intent: RoutingIntent, candidates: Sequence[Candidate], *, selector: Selector
) -> Pick:
    """Each candidate in turn, in name order; one counter per (namespace, policy, model)."""
    by_name = _by_name(intent, candidates)
    chosen = by_name[selector.take_turn(intent) % len(by_name)]
    return Pick(chosen, f"round_robin:{chosen.backend.name}")


def pick_priority(
    intent: RoutingIntent, candidates: Sequence[Candidate], *, selector: Selector
) -> Pick:
    """Lowest priority value, ties by name."""
    excluded = intent.excluded_names
    for candidate in _by_priority(intent, candidates):
        if candidate.backend.name not in excluded:
            return Pick(
                candidate, f"priority:{candidate.backend.name}:{candidate.backend.priority}"
            )
    raise ValueError("pick_priority needs at least one candidate")


def pick_random(
    intent: RoutingIntent, candidates: Sequence[Candidate], *, selector: Selector
) -> Pick:
    """Uniformly at random."""
    chosen = selector.rng.choice(candidates)
    return Pick(chosen, f"random:{chosen.backend.name}")


def pick_least_latency(
    intent: RoutingIntent, candidates: Sequence[Candidate], *, selector: Selector
) -> Pick:
    """Lowest latency EMA; in name order, so min() keeps the first of a tie."""
    chosen = min(_by_name(intent, candidates), key=_latency)
    return Pick(chosen, f"least_latency:{chosen.backend.name}:{round(_latency(chosen))}")


def _latency(candidate: Candidate) -> float:
    latency = candidate.runtime.latency_ms
    return 0.0 if latency is None else latency


def _by_priority(intent: RoutingIntent, candidates: Sequence[Candidate]) -> Sequence[Candidate]:
    plan = intent.plan
    if plan is not None:
        return plan.by_priority
    return sorted(candidates, key=lambda c: (c.backend.priority, c.backend.name))


def _by_name(intent: RoutingIntent, candidates: Sequence[Candidate]) -> Sequence[Candidate]:
    """Plans keep candidates in name order; library callers may pass any order."""
    if intent.plan is not None:
        return candidates
    return sorted(candidates, key=lambda c: c.backend.name)


PICKS: Final[Mapping[Strategy, PickFunction]] = MappingProxyType(
    {
        Strategy.SMART: pick_smart,
        Strategy.ROUND_ROBIN: pick_round_robin,
        Strategy.PRIORITY_ONLY: pick_priority,
        Strategy.RANDOM: pick_random,
        Strategy.LEAST_LATENCY: pick_least_latency,
    }
)
