"""Registry changes cost what they change: snapshots, plans and the static index are updated for
the changed backends and policies only, and a resync that changes nothing publishes nothing."""

from __future__ import annotations

from typing import Any

from routing_factories import backend, engine, policy

from nexus_operator.api import Backend, HealthState
from nexus_operator.pipeline import reasons
from nexus_operator.routing import RegistryChange, RequestRequirements, RoutingEngine
from nexus_operator.routing.reports import StaticIndex

MODELS = [f"m{i}" for i in range(10)]


def _fleet(count: int = 50) -> list[Backend]:
    return [backend(f"b{i:03d}", models=[MODELS[i % len(MODELS)]]) for i in range(count)]


def _warm(eng: RoutingEngine) -> None:
    for model in MODELS:
        eng.route(RequestRequirements(model=model))


def _index(eng: RoutingEngine) -> StaticIndex:
    return eng.static_index("default")


def test_a_resync_with_the_same_objects_publishes_no_snapshot() -> None:
    backends, policies = _fleet(), [policy("p"), policy("q", ["m1"], precedence=5)]
    eng = engine(backends, policies)
    before, published = eng.registry.snapshot, eng.registry.publishes
    eng.registry.replace_all([b.model_copy() for b in backends], [p.model_copy() for p in policies])
    assert eng.registry.snapshot is before
    assert eng.registry.publishes == published


def test_a_resync_with_one_changed_backend_publishes_one_snapshot_naming_only_it() -> None:
    backends = _fleet()
    eng = engine(backends, [policy("p")])
    old = eng.registry.snapshot.namespace("default")
    changed = [*backends[:7], backend("b007", models=["m7"], priority=3), *backends[8:]]
    published = eng.registry.publishes
    eng.registry.replace_all(changed, [policy("p")])
    assert eng.registry.publishes == published + 1
    found = eng.registry.snapshot.namespace("default").changes_since(old)
    assert found is not None
    assert found.backends == {"b007"}
    assert not found.policies


def test_a_backend_change_keeps_the_plans_of_models_it_does_not_list() -> None:
    eng = engine(_fleet(), [policy("p")])
    _warm(eng)
    built = eng.counters.plans_built
    eng.registry.upsert_backend(backend("b003", models=["m3"], priority=7))
    _warm(eng)
    assert eng.counters.plans_built == built + 1
    assert eng.counters.plans_dropped == 1


def test_a_backend_moving_to_another_model_invalidates_both_plans() -> None:
    eng = engine(_fleet(), [policy("p")])
    _warm(eng)
    built = eng.counters.plans_built
    eng.registry.upsert_backend(backend("b003", models=["m4"]))
    _warm(eng)
    assert eng.counters.plans_built == built + 2
    decision = eng.explain(RequestRequirements(model="m3"))
    assert "b003" not in {e.backend for e in decision.exclusions}


def test_a_policy_change_rebuilds_plans_but_a_backend_change_keeps_pipelines() -> None:
    eng = engine(_fleet(), [policy("p")])
    _warm(eng)
    pipelines = eng.counters.pipelines_built
    eng.registry.upsert_backend(backend("b001", models=["m1"], priority=9))
    _warm(eng)
    assert eng.counters.pipelines_built == pipelines
    eng.registry.upsert_policy(policy("p", min_tier=1))
    _warm(eng)
    assert eng.counters.pipelines_built == pipelines + 1
    assert eng.counters.plans_built == 2 * len(MODELS) + 1


def test_changing_one_backend_reevaluates_only_its_rows_of_the_static_index() -> None:
    policies = [policy("p"), policy("q", ["m1", "m2"], precedence=5), policy("r", ["m9"])]
    eng = engine(_fleet(), policies)
    index = _index(eng)
    evaluated = index.rows_evaluated
    eng.registry.upsert_backend(backend("b002", models=["m2"], draining=True))
    assert _index(eng) is index
    assert index.rows_evaluated == evaluated + len(policies)
    assert eng.counters.static_builds == 1
    found = [(x.policy, x.reason_code) for x in eng.backend_exclusions("default", "b002")]
    assert found == [("q", reasons.DRAINING), ("p", reasons.DRAINING), ("r", reasons.DRAINING)]
    assert "b002" not in eng.policy_report("default", "q").eligible_backends


def test_a_health_change_reevaluates_only_that_backends_rows() -> None:
    eng = engine(_fleet(), [policy("p"), policy("q", ["m1"])])
    index = _index(eng)
    evaluated = index.rows_evaluated
    cell = eng.registry.runtime.backend("default", "b011")
    cell.health_state = HealthState.UNHEALTHY
    assert [x.reason_code for x in eng.backend_exclusions("default", "b011")] == [
        reasons.UNHEALTHY,
        reasons.UNHEALTHY,
    ]
    assert index.rows_evaluated == evaluated + 2
    assert "b011" not in eng.policy_report("default", "q").eligible_backends
    before = index.rows_evaluated
    for _ in range(3):
        eng.backend_exclusions("default", "b012")
    assert index.rows_evaluated == before


def test_changing_one_policy_reevaluates_only_that_policys_rows() -> None:
    backends = _fleet()
    eng = engine(backends, [policy("p"), policy("q", ["m1"])])
    index = _index(eng)
    evaluated = index.rows_evaluated
    eng.registry.upsert_policy(policy("q", ["m1"], min_tier=2))
    report = eng.policy_report("default", "q")
    assert index.rows_evaluated == evaluated + len(backends)
    assert report.eligible_backends == []
    assert {x.reason_code for x in report.exclusions} == {reasons.TIER_TOO_LOW}
    assert len(eng.policy_report("default", "p").eligible_backends) == len(backends)


def test_an_incrementally_kept_index_equals_one_built_from_scratch() -> None:
    policies = [policy("p"), policy("q", ["m1", "m2"], precedence=5, minTier=2)]
    eng = engine(_fleet(), policies)
    _index(eng)
    eng.registry.upsert_backend(backend("b004", models=["m1"], tier=2))
    eng.registry.delete_backend("default", "b005")
    eng.registry.upsert_policy(policy("r", ["m3"], precedence=1))
    eng.registry.runtime.backend("default", "b006").health_state = HealthState.UNHEALTHY
    kept = _index(eng)
    fresh = StaticIndex.build(
        eng.registry.snapshot.namespace("default"), runtime=eng.registry.runtime
    )
    assert kept.reports == fresh.reports
    assert kept.by_backend == fresh.by_backend


def test_a_resync_tells_change_listeners_only_what_differs() -> None:
    backends = _fleet()
    eng = engine(backends, [policy("p")])
    changes: list[RegistryChange] = []
    eng.registry.add_change_listener(changes.append)
    eng.registry.replace_all(backends, [policy("p")])
    assert changes == []
    eng.registry.replace_all([*backends[1:], backend("new", models=["m1"])], [policy("p")])
    assert len(changes) == 1
    assert [b.metadata.name for b in changes[0].backends] == ["new"]
    assert changes[0].deleted_backends == (("default", "b000"),)


def _static_fleet() -> list[Backend]:
    """One model, backends the policy's static stages treat differently: draining, open zone
    (excluded by a restricted policy), a tier too low, and plain."""
    found = []
    for i in range(40):
        kind = i % 4
        spec: dict[str, Any] = {"priority": i % 7}
        if kind == 1:
            spec["draining"] = True
        elif kind == 2:
            spec["type"] = "openai"
        elif kind == 3:
            spec["tier"] = 3
        found.append(backend(f"s{i:02d}", **spec))
    return found


def _summary(eng: RoutingEngine) -> tuple[object, ...]:
    decision = eng.explain(RequestRequirements(model="llama3:8b"))
    backend_name = decision.backend.name if decision.backend is not None else None
    exclusions = [(e.backend, e.reconciler, e.reason_code) for e in decision.exclusions]
    return decision.outcome, backend_name, exclusions


def test_a_plan_rebuilt_after_a_backend_change_checks_only_that_backend_and_decides_alike() -> None:
    restricted = policy("p", privacy="restricted", minTier=2)
    eng = engine(_static_fleet(), [restricted])
    _summary(eng)
    checks = eng.counters.static_checks
    flips = [
        backend("s05", draining=False, priority=1),  # was draining
        backend("s06", priority=0),  # was open zone
        backend("s07", priority=2, draining=True),  # tier 3, now draining too
        backend("s40", type="openai"),  # new
    ]
    for changed in flips:
        eng.registry.upsert_backend(changed)
        eng.registry.runtime.backend("default", changed.metadata.name).set_assumed_healthy()
        rebuilt = _summary(eng)
        fresh = RoutingEngine(eng.registry)
        assert rebuilt == _summary(fresh)
    stages = eng.counters.static_checks - checks
    assert 0 < stages <= len(flips) * 4  # a few stages per changed backend, not 40 backends'
