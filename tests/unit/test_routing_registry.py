"""Registry snapshots, runtime cells, usage accounting and the static reports for status."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from routing_factories import NOW, backend, engine, policy, registry

from nexus_operator.api import HealthState
from nexus_operator.pipeline import PolicyRuntime, ReconcileErrorPolicy, RoutingIntent, reasons
from nexus_operator.pipeline.runtime import BackendRuntime
from nexus_operator.routing import (
    AsyncReconcilerError,
    ModelNotFound,
    Outcome,
    Registry,
    RegistrySnapshot,
    RequestRequirements,
    Router,
    RoutingEngine,
    UsageReport,
)

REQ = RequestRequirements(model="llama3:8b")


def test_every_change_publishes_a_new_snapshot_and_leaves_the_old_one_untouched() -> None:
    reg = Registry()
    seen: list[RegistrySnapshot] = []
    reg.add_listener(seen.append)
    reg.upsert_backend(backend("a"))
    first = reg.snapshot
    reg.upsert_backend(backend("b", models=["qwen"]))
    reg.delete_backend("default", "a")
    assert [s.version for s in seen] == [1, 2, 3]
    assert set(first.backends) == {("default", "a")}
    assert set(first.namespace("default").model_index) == {"llama3:8b"}
    assert set(reg.snapshot.namespace("default").model_index) == {"qwen"}


def test_updating_a_backend_reindexes_its_models() -> None:
    reg = registry([backend("a", models=["m1", "m2"])])
    reg.upsert_backend(backend("a", models=["m2", "m3"]))
    index = reg.snapshot.namespace("default").model_index
    assert {m: sorted(v) for m, v in index.items()} == {"m2": ["a"], "m3": ["a"]}


def test_replace_all_drops_objects_missing_from_the_full_list() -> None:
    reg = registry([backend("a"), backend("b")], [policy("p")])
    reg.replace_all([backend("b")], [])
    assert set(reg.snapshot.backends) == {("default", "b")}
    assert reg.snapshot.policies == {}


def test_decisions_see_registry_changes_at_once() -> None:
    eng = engine([backend("a")])
    assert eng.route(REQ).outcome is Outcome.ROUTED
    eng.registry.upsert_backend(backend("a", draining=True))
    assert eng.route(REQ).outcome is Outcome.REJECTED
    eng.registry.upsert_policy(policy("p", fallbacks=["qwen"]))
    eng.registry.upsert_backend(backend("q", models=["qwen"]))
    eng.registry.runtime.backend("default", "q").set_assumed_healthy()
    assert eng.route(REQ).model == "qwen"


def test_backends_with_health_checks_disabled_are_assumed_healthy() -> None:
    reg = registry([backend("a", healthCheck={"enabled": False}), backend("b")], healthy=False)
    assert reg.runtime.backend("default", "a").health_state is HealthState.HEALTHY
    assert reg.runtime.backend("default", "b").health_state is HealthState.UNKNOWN


def test_health_state_machine_follows_thresholds() -> None:
    cell = BackendRuntime()
    probe: dict[str, Any] = {"failure_threshold": 2, "recovery_threshold": 2, "now": NOW}
    states: list[tuple[bool, HealthState]] = []
    for ok, latency, error in [
        (True, 10.0, None),
        (False, None, "timeout"),
        (False, None, "timeout"),
        (True, 20.0, None),
        (True, 20.0, None),
    ]:
        changed = cell.record_probe(ok, latency, error=error, **probe)
        states.append((changed, cell.health_state))
    assert states == [
        (True, HealthState.HEALTHY),
        (False, HealthState.HEALTHY),
        (True, HealthState.UNHEALTHY),
        (False, HealthState.UNHEALTHY),
        (True, HealthState.HEALTHY),
    ]


def test_latency_ema_takes_the_first_sample_then_weights_four_to_one() -> None:
    cell = BackendRuntime()
    probe: dict[str, Any] = {"failure_threshold": 3, "recovery_threshold": 2, "now": NOW}
    cell.record_probe(True, 100.0, error=None, **probe)
    cell.record_probe(True, 200.0, error=None, **probe)
    assert cell.latency_ms == pytest.approx(120.0)


def test_usage_reports_feed_latency_only_when_probes_are_off() -> None:
    eng = engine([backend("probed"), backend("silent", healthCheck={"enabled": False})])
    for name in ("probed", "silent"):
        eng.report_usage(
            UsageReport(backend=name, model="llama3:8b", latency_ms=80.0, ttft_ms=40.0)
        )
    runtime = eng.registry.runtime
    assert runtime.backend("default", "probed").latency_ms is None
    assert runtime.backend("default", "silent").latency_ms == 80.0
    assert runtime.backend("default", "probed").ttft_ms == 40.0


def test_policy_spend_is_own_total_plus_the_other_replicas_persisted_spend() -> None:
    spend = PolicyRuntime(now=NOW)
    spend.add_spend(2.0, NOW)
    spend.load_others("2026-03", 5.0)
    spend.load_others("2026-03", 5.5)
    assert (spend.spent_usd, spend.own_usd) == (7.5, 2.0)


def test_month_rollover_records_the_previous_period() -> None:
    spend = PolicyRuntime(now=NOW)
    spend.add_spend(3.0, NOW)
    spend.add_spend(1.0, NOW + timedelta(days=20))
    assert (spend.period, spend.spent_usd) == ("2026-04", 1.0)
    assert (spend.previous_period, spend.previous_own_usd) == ("2026-03", 3.0)


def test_policy_report_lists_matched_eligible_and_static_exclusions() -> None:
    eng = engine(
        [
            backend("local"),
            backend("cloud", type="openai"),
            backend("tiny", tier=1),
            backend("other", models=["qwen"]),
        ],
        [policy("p", ["llama*"], privacy="restricted")],
    )
    eng.registry.upsert_backend(backend("tiny", draining=True))
    report = eng.policy_report("default", "p")
    assert report.matched_backends == ["cloud", "local", "tiny"]
    assert report.eligible_backends == ["local"]
    assert [(x.backend, x.reason_code) for x in report.exclusions] == [
        ("cloud", reasons.PRIVACY_ZONE),
        ("tiny", reasons.DRAINING),
    ]


def test_backend_exclusions_name_every_policy_that_excludes_it() -> None:
    eng = engine(
        [backend("cloud", type="openai")],
        [
            policy("private", ["llama*"], privacy="restricted"),
            policy("open", ["*"]),
            policy("big", ["*"], minTier=3),
        ],
    )
    found = {(x.policy, x.reason_code) for x in eng.backend_exclusions("default", "cloud")}
    assert found == {("private", reasons.PRIVACY_ZONE), ("big", reasons.TIER_TOO_LOW)}


def test_a_policy_that_can_never_win_is_shadowed() -> None:
    eng = engine(
        [],
        [
            policy("catch-all", ["*"], precedence=10),
            policy("llama", ["llama*"], precedence=20),
            policy("free", ["llama*"], precedence=5),
        ],
    )
    assert eng.policy_report("default", "llama").shadowed_by == "free"
    assert eng.policy_report("default", "catch-all").shadowed_by is None


def test_policies_involved_in_a_broken_alias_chain_report_it() -> None:
    eng = engine(
        [],
        [
            policy("a", ["x"], aliases={"one": "two"}),
            policy("b", ["y"], aliases={"two": "one"}),
            policy("c", ["z"]),
        ],
    )
    for name in ("a", "b"):
        error = eng.policy_report("default", name).alias_error
        assert error is not None
        assert error[0] == reasons.ALIAS_CYCLE
    assert eng.policy_report("default", "c").alias_error is None


class Slow:
    name: ClassVar[str] = "Slow"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_OPEN

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    async def reconcile(self, intent: RoutingIntent) -> None:
        intent.trace("awaited")


async def test_async_plug_ins_need_route_async_and_route_refuses_them_before_any_change() -> None:
    reg = registry([backend("a")], [policy("p", reconcilers=[{"name": "slow"}])])
    eng = RoutingEngine(reg, plugins={"slow": Slow})
    with pytest.raises(AsyncReconcilerError, match="route_async"):
        eng.route(REQ)
    assert reg.runtime.backend("default", "a").selected_total == 0
    decision = await eng.route_async(REQ)
    assert [t.message for t in decision.trace if t.reconciler == "Slow"] == ["awaited"]


async def test_route_and_route_async_are_one_decide_loop_with_the_same_decision() -> None:
    def fresh() -> RoutingEngine:
        return engine(
            [backend("a", priority=10), backend("b", type="openai"), backend("c", draining=True)],
            [policy("p", privacy="restricted", fallbacks=["other"])],
        )

    in_thread, awaited = fresh().explain(REQ), await fresh().explain_async(REQ)
    assert (in_thread.outcome, in_thread.reason, in_thread.exclusions) == (
        awaited.outcome,
        awaited.reason,
        awaited.exclusions,
    )
    assert [t.reconciler for t in in_thread.trace] == [t.reconciler for t in awaited.trace]


def test_static_reports_follow_health_changes() -> None:
    eng = engine([backend("a"), backend("b")], [policy("p")])
    assert eng.policy_report("default", "p").eligible_backends == ["a", "b"]
    eng.registry.runtime.backend("default", "b").health_state = HealthState.UNHEALTHY
    assert eng.policy_report("default", "p").eligible_backends == ["a"]
    assert [x.reason_code for x in eng.backend_exclusions("default", "b")] == [reasons.UNHEALTHY]


def test_restricted_policy_report_names_open_backends_that_serve_none_of_its_models() -> None:
    eng = engine(
        [
            backend("local", models=["internal-a"]),
            backend("cloud", type="openai", models=["gpt-4o"]),
            backend("other-local", models=["qwen"]),
        ],
        [policy("internal", ["internal-*"], privacy="restricted")],
    )
    report = eng.policy_report("default", "internal")
    assert report.matched_backends == ["local"]
    assert [(x.backend, x.reason_code) for x in report.exclusions] == [
        ("cloud", reasons.PRIVACY_ZONE)
    ]


def test_the_router_is_a_facade_over_its_engine() -> None:
    router = Router(registry([backend("a", priority=20), backend("b", priority=10)]))
    assert isinstance(router.engine, RoutingEngine)
    expected = router.engine.explain(REQ)
    result = router.select_backend(REQ)
    assert expected.backend is not None
    assert (result.backend, result.route_reason) == (expected.backend, expected.reason)


def test_router_errors_are_chosen_by_the_decisions_reason_code() -> None:
    router = Router(registry([backend("a")]))
    unknown = RequestRequirements(model="no-such-model")
    with pytest.raises(ModelNotFound) as failure:
        router.select_backend(unknown)
    assert failure.value.reason_code == router.engine.explain(unknown).reason
    assert failure.value.reason_code == reasons.MODEL_NOT_FOUND
