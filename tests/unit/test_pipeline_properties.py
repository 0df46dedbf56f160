"""Property tests of the pipeline invariants over random fleets, policies and requests."""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from routing_factories import NOW, backend, policy, registry

from nexus_operator.api import Budget, BudgetState, HealthState, Privacy, RoutingPolicySpec, Zone
from nexus_operator.pipeline import (
    Candidate,
    ReconcileErrorPolicy,
    ReconcilerPipeline,
    RouteDecision,
    RoutingIntent,
    SelectionReconciler,
    build_pipeline,
    reasons,
)
from nexus_operator.routing import Decision, Outcome, RequestRequirements, RoutingEngine

MODELS = ("m1", "m2")
NAMES = tuple(f"b{i}" for i in range(8))
HEALTH = (*[HealthState.HEALTHY] * 6, HealthState.UNHEALTHY, HealthState.UNKNOWN)
RARELY = st.sampled_from([False] * 5 + [True])


@st.composite
def backends(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=8, unique=True))
    fleet = []
    for name in names:
        models = draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=2, unique=True))
        fleet.append(
            {
                "name": name,
                "type": draw(st.sampled_from(["ollama", "vllm", "openai"])),
                "tier": draw(st.integers(1, 5)),
                "priority": draw(st.integers(0, 100)),
                "draining": draw(RARELY),
                "cap": draw(st.sampled_from([None, None, 1, 2])),
                "models": [
                    {
                        "id": m,
                        "contextLength": draw(st.sampled_from([1000, 4000, 8000, 8000])),
                        "supportsVision": draw(st.booleans()),
                        "supportsTools": draw(st.booleans()),
                        "maxOutputTokens": draw(st.sampled_from([None, 500])),
                        "pricing": draw(
                            st.sampled_from([None, {"inputPer1k": 1.0, "outputPer1k": 2.0}])
                        ),
                    }
                    for m in models
                ],
                "health": draw(st.sampled_from(HEALTH)),
                "in_flight": draw(st.integers(0, 2)),
                "latency": draw(st.sampled_from([None, 10.0, 250.0, 2000.0])),
                "errors": draw(st.sampled_from([0, 0, 0, 1, 2])),
            }
        )
    return fleet


policies = st.fixed_dictionaries(
    {
        "privacy": st.sampled_from(["unrestricted", "unrestricted", "restricted"]),
        "minTier": st.sampled_from([1, 1, 1, 2, 3, 5]),
        "requiredCapabilities": st.fixed_dictionaries(
            {"vision": RARELY, "minContextLength": st.sampled_from([0, 0, 0, 4000])}
        ),
        "maxCostPerRequestUsd": st.sampled_from([None, 1.0, 5.0]),
        "budget": st.sampled_from(
            [
                None,
                {"monthlyLimitUsd": 10, "hardLimitAction": "blockCloud"},
                {"monthlyLimitUsd": 10, "hardLimitAction": "blockAll"},
                {"monthlyLimitUsd": 10, "hardLimitAction": "warn"},
            ]
        ),
        "selection": st.fixed_dictionaries(
            {"strategy": st.sampled_from(["smart", "priorityOnly", "leastLatency", "roundRobin"])}
        ),
    }
)

requests = st.builds(
    RequestRequirements,
    model=st.sampled_from(MODELS),
    estimated_tokens=st.sampled_from([0, 500, 3000]),
    needs_vision=RARELY,
    needs_tools=RARELY,
    max_output_tokens=st.sampled_from([None, None, 200, 1000]),
    privacy=st.sampled_from([None, Privacy.RESTRICTED, Privacy.UNRESTRICTED]),
    min_tier=st.sampled_from([None, None, 1, 3]),
)


def build(fleet: list[dict[str, Any]], spec: dict[str, Any] | None, spent: float) -> RoutingEngine:
    objects = [
        backend(
            b["name"],
            type=b["type"],
            tier=b["tier"],
            priority=b["priority"],
            draining=b["draining"],
            maxConcurrency=b["cap"],
            models=b["models"],
        )
        for b in fleet
    ]
    reg = registry(objects, [policy("p", ["m*"], **spec)] if spec else [], healthy=False)
    engine = RoutingEngine(reg, clock=lambda: NOW)
    for b in fleet:
        cell = reg.runtime.backend("default", b["name"])
        cell.health_state = b["health"]
        cell.in_flight = b["in_flight"]
        cell.latency_ms = b["latency"]
        for index in range(b["errors"]):
            cell.record_outcome(success=index % 2 == 1, now=NOW)
    if spec:
        reg.runtime.policy("default", "p").add_spend(spent, NOW)
    return engine


def plain_backend(name: str, *, health: HealthState = HealthState.HEALTHY) -> dict[str, Any]:
    """One backend of the generated shape, serving m1 with no limits: the explicit examples."""
    offered = {
        "id": "m1",
        "contextLength": 8000,
        "supportsVision": False,
        "supportsTools": False,
        "maxOutputTokens": None,
        "pricing": None,
    }
    return {
        "name": name,
        "type": "ollama",
        "tier": 3,
        "priority": 50,
        "draining": False,
        "cap": None,
        "models": [offered],
        "health": health,
        "in_flight": 0,
        "latency": None,
        "errors": 0,
    }


scenario = given(
    backends(), st.one_of(st.none(), policies), requests, st.sampled_from([0.0, 8.0, 10.0])
)
fast = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def primary_exclusions(decision: Decision, model: str) -> list[Any]:
    return [e for e in decision.exclusions if e.model == model]


@fast
@scenario
def test_an_excluded_backend_never_returns_and_is_recorded_once(
    fleet: Any, spec: Any, req: Any, spent: float
) -> None:
    decision = build(fleet, spec, spent).explain(req)
    per_attempt = Counter((e.model, e.backend) for e in decision.exclusions)
    assert all(count == 1 for count in per_attempt.values())
    for entry in decision.trace:
        if entry.reconciler != "RequestAnalyzer":
            assert entry.candidates_after <= entry.candidates_before
    if decision.backend is not None:
        assert (decision.model, decision.backend.name) not in per_attempt


@fast
@scenario
def test_deterministic_strategies_decide_the_same_twice(
    fleet: Any, spec: Any, req: Any, spent: float
) -> None:
    engine = build(fleet, spec, spent)
    first, second = engine.explain(req), engine.explain(req)
    assert (first.outcome, first.backend, first.reason, first.exclusions) == (
        second.outcome,
        second.backend,
        second.reason,
        second.exclusions,
    )


@fast
@scenario
@example([plain_backend("b0")], None, RequestRequirements(model="m1"), 0.0)
def test_a_routed_winner_passes_every_filter(
    fleet: Any, spec: Any, req: RequestRequirements, spent: float
) -> None:
    decision = build(fleet, spec, spent).explain(req)
    assume(decision.outcome is Outcome.ROUTED and not decision.fallback_used)
    event(f"routed: {decision.reason.split(':')[0]}")
    assert decision.backend is not None
    chosen = next(b for b in fleet if b["name"] == decision.backend.name)
    offered = next(m for m in chosen["models"] if m["id"] == decision.model)
    spec = spec or {}
    assert not chosen["draining"]
    restricted = spec.get("privacy") == "restricted" or req.privacy is Privacy.RESTRICTED
    assert not (restricted and decision.backend.zone is Zone.OPEN)
    assert chosen["tier"] >= max(spec.get("minTier", 1), req.min_tier or 1)
    caps = spec.get("requiredCapabilities", {})
    assert offered["supportsVision"] or not (req.needs_vision or caps.get("vision"))
    assert offered["supportsTools"] or not req.needs_tools
    assert req.estimated_tokens + (req.max_output_tokens or 0) <= offered["contextLength"]
    assert offered["contextLength"] >= caps.get("minContextLength", 0)
    assert chosen["health"] is HealthState.HEALTHY
    assert chosen["cap"] is None or chosen["in_flight"] < chosen["cap"]
    assert chosen["errors"] < 2
    limit = spec.get("maxCostPerRequestUsd")
    assert limit is None or decision.cost_estimate <= limit
    budget = spec.get("budget")
    if budget is not None and Budget(monthly_limit_usd=10).state(spent) is BudgetState.HARD_LIMIT:
        assert budget["hardLimitAction"] != "blockAll"
        assert budget["hardLimitAction"] == "warn" or decision.backend.zone is Zone.RESTRICTED


@fast
@scenario
@example(
    [plain_backend("b0", health=HealthState.UNHEALTHY), plain_backend("b1")],
    {"minTier": 5},
    RequestRequirements(model="m1"),
    0.0,
)
def test_a_rejection_gives_every_candidate_a_reason(
    fleet: Any, spec: Any, req: RequestRequirements, spent: float
) -> None:
    decision = build(fleet, spec, spent).explain(req)
    assume(decision.outcome is Outcome.REJECTED and decision.reason != reasons.MODEL_NOT_FOUND)
    event(f"rejected: {decision.reason}")
    candidates = {b["name"] for b in fleet if any(m["id"] == req.model for m in b["models"])}
    assert {e.backend for e in primary_exclusions(decision, req.model)} == candidates
    assert all(e.reason_code != reasons.AT_CAPACITY for e in decision.rejections)


class Restorer:
    """A misbehaving plug-in that tries to put every original candidate back."""

    name: ClassVar[str] = "Restorer"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_OPEN

    def __init__(self, everyone: list[Candidate]) -> None:
        self.everyone = everyone

    def reconcile(self, intent: RoutingIntent) -> None:
        intent.candidate_backends = list(self.everyone)


@fast
@given(backends(), policies, requests)
def test_a_plug_in_cannot_restore_excluded_backends(
    fleet: Any, spec: Any, req: RequestRequirements
) -> None:
    engine = build(fleet, spec, 0.0)
    ns = engine.registry.snapshot.namespace("default")
    everyone = [
        Candidate.of(v, req.model, runtime=engine.registry.runtime.backend("default", v.name))
        for v in ns.offering(None, req.model)
    ]
    compiled = ns.policy("p")
    assert compiled is not None
    stages = list(
        build_pipeline(
            compiled.spec, runtime=engine.registry.runtime, scope=("default", "p")
        ).reconcilers
    )
    pipeline = ReconcilerPipeline([*stages[:-1], Restorer(everyone), SelectionReconciler()])
    intent = RoutingIntent(req, everyone, dry_run=True, now=NOW)
    pipeline.execute_sync(intent)
    excluded = {e.backend for e in intent.annotations.exclusions}
    assert not excluded & {c.name for c in intent.candidate_backends}


@fast
@given(backends(), requests, st.lists(st.integers(0, 7), min_size=1, max_size=12))
def test_exclusion_is_idempotent(fleet: Any, req: RequestRequirements, picks: list[int]) -> None:
    engine = build(fleet, None, 0.0)
    ns = engine.registry.snapshot.namespace("default")
    candidates = [Candidate.of(v, req.model) for v in ns.offering(None, req.model)]
    intent = RoutingIntent(req, candidates)
    assume(candidates)
    for pick in picks:
        target = candidates[pick % len(candidates)]
        first_time = not intent.is_excluded(target.name)
        assert intent.exclude(target, reason_code="x", reason="x", reconciler="T") is first_time
    names = [e.backend for e in intent.annotations.exclusions]
    assert len(names) == len(set(names))
    assert {c.name for c in intent.candidate_backends} == {c.name for c in candidates} - set(names)


@fast
@scenario
@example([plain_backend("b0"), plain_backend("b1")], None, RequestRequirements(model="m1"), 0.0)
def test_a_decision_from_the_plan_equals_the_pipeline_run_over_plain_candidates(
    fleet: Any, spec: Any, req: RequestRequirements, spent: float
) -> None:
    """The engine's shortcuts (precomputed static blocks, shared counts, the capability check
    skipped for requests that add only tokens) decide exactly as every stage evaluated."""
    engine = build(fleet, spec, spent)
    planned = engine.explain(req)
    ns = engine.registry.snapshot.namespace("default")
    runtime = engine.registry.runtime
    compiled = ns.match(req.model)
    candidates = [
        Candidate.of(v, req.model, runtime=runtime.backend("default", v.name))
        for v in ns.offering(compiled, req.model)
    ]
    assume(candidates and not planned.fallback_used)
    pipeline = build_pipeline(
        compiled.spec if compiled is not None else RoutingPolicySpec(),
        runtime=runtime,
        scope=("default", compiled.name if compiled is not None else None),
        spend=runtime.policy("default", compiled.name) if compiled is not None else None,
    )
    intent = RoutingIntent(req, candidates, dry_run=True, now=NOW)
    pipeline.execute_sync(intent)
    plain = intent.decision

    def described(exclusions: Any) -> Counter[tuple[str, str, str, str]]:
        return Counter((e.backend, e.reconciler, e.reason_code, e.reason) for e in exclusions)

    assert described(planned.exclusions) == described(intent.annotations.exclusions)
    assert planned.count_exclusions() == Counter(
        (e.reconciler, e.reason_code) for e in intent.annotations.exclusions
    )
    if isinstance(plain, RouteDecision):
        assert planned.outcome is Outcome.ROUTED
        assert planned.backend is not None
        assert (planned.backend.name, planned.reason) == (plain.candidate.name, plain.reason)
    else:
        assert planned.outcome is not Outcome.ROUTED
