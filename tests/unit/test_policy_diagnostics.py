"""Why a policy cannot route, which plug-ins are missing, and the Events those conditions post:
the routing report, the status conditions and the transition rule, without an API server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from routing_factories import NOW, backend, engine, policy

from nexus_operator.api import conditions as c
from nexus_operator.operator.condition_events import condition_events
from nexus_operator.operator.status_assembly import PolicyFacts, policy_status
from nexus_operator.pipeline import Reconciler


def _report(*policies: Any, backends: tuple[Any, ...] = (backend("b"),)) -> Any:
    eng = engine(list(backends), list(policies))
    return {p.metadata.name: eng.policy_report("default", p.metadata.name) for p in policies}


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"modelPatterns": []}, c.NO_MODEL_PATTERNS),
        ({"backendSelector": {"matchLabels": {"team": "nobody"}}}, c.SELECTOR_MATCHES_NOTHING),
        (
            {"budget": {"monthlyLimitUsd": 0, "hardLimitAction": "blockAll"}},
            c.BUDGET_BLOCKS_ALL,
        ),
    ],
    ids=["no-patterns", "selector-matches-nothing", "zero-budget-blocking-all"],
)
def test_a_policy_that_can_never_route_names_the_reason(spec: dict[str, Any], reason: str) -> None:
    subject = (
        policy("p", **spec) if "modelPatterns" not in spec else policy("p", spec["modelPatterns"])
    )
    report = _report(subject)["p"]
    assert report.never_routes is not None
    assert report.never_routes[0] == reason


@pytest.mark.parametrize(
    "spec",
    [
        {"budget": {"monthlyLimitUsd": 0}},  # blockCloud: local backends still serve
        {"backendSelector": {"matchLabels": {"team": "a"}}},
        {"aliases": {"fast": "llama3:8b"}},
    ],
    ids=["zero-budget-blocking-cloud", "selector-matching-one", "patterns-and-aliases"],
)
def test_a_policy_that_can_route_reports_no_problem(spec: dict[str, Any]) -> None:
    report = _report(policy("p", **spec), backends=(backend("b", labels={"team": "a"}),))["p"]
    assert report.never_routes is None


def test_an_aliases_only_policy_is_ready_but_says_it_matches_no_model() -> None:
    report = _report(policy("p", [], aliases={"fast": "llama3:8b"}))["p"]
    assert report.never_routes is None
    assert report.no_backends is not None
    assert report.no_backends[0] == c.NO_MODEL_PATTERNS


def test_no_backend_listing_the_models_is_told_apart_from_all_excluded() -> None:
    report = _report(policy("p", ["mistral*"]))["p"]
    assert report.matched_backends == []
    assert report.no_backends is not None
    assert report.no_backends[0] == c.NO_BACKEND_OFFERS_MODELS
    assert "mistral*" in report.no_backends[1]


class _Refusing:
    def __init__(self, config: Mapping[str, Any]) -> None:
        raise ValueError(f"maxLatencyMs must be positive, got {config.get('maxLatencyMs')}")


def test_plugin_problems_name_unknown_and_misconfigured_plugins() -> None:
    refs = [{"name": "no-such"}, {"name": "latency-guard", "config": {"maxLatencyMs": -1}}]
    factories: dict[str, Any] = {"latency-guard": _Refusing}
    eng = engine([backend("b")], [policy("p", reconcilers=refs)], plugins=factories)
    problems = dict(eng.plugin_problems("default", "p"))
    assert set(problems) == {"no-such", "latency-guard"}
    assert "no reconciler registered" in problems["no-such"]
    assert "maxLatencyMs must be positive, got -1" in problems["latency-guard"]


def test_plugin_problems_are_empty_when_every_plugin_builds() -> None:
    def factory(config: Mapping[str, Any]) -> Reconciler:
        class Noop:
            name = "noop"

            def reconcile(self, intent: Any) -> None:
                return None

        return Noop()  # type: ignore[return-value]

    eng = engine(
        [backend("b")], [policy("p", reconcilers=[{"name": "noop"}])], plugins={"noop": factory}
    )
    assert eng.plugin_problems("default", "p") == []


def _conditions(facts: PolicyFacts) -> dict[str, dict[str, Any]]:
    status = policy_status(policy("p"), facts, existing=[], now=NOW)
    return {item["type"]: item for item in status["conditions"]}


def test_conditions_carry_the_specific_reasons() -> None:
    never = (c.SELECTOR_MATCHES_NOTHING, "spec.backendSelector matches no Backend")
    conditions = _conditions(
        PolicyFacts(
            matched_backends=0,
            eligible_backends=[],
            exclusions=[],
            never_routes=never,
            no_backends=never,
            plugins=["no-such"],
            plugin_problems=[("no-such", "no reconciler registered as 'no-such'")],
        )
    )
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", never[0])
    assert conditions["NoEligibleBackends"]["reason"] == never[0]
    plugins = conditions["ReconcilersReady"]
    assert (plugins["status"], plugins["reason"]) == ("False", c.RECONCILER_UNAVAILABLE)
    assert "'no-such'" in plugins["message"]


def test_reconcilers_ready_is_true_without_plugins() -> None:
    conditions = _conditions(
        PolicyFacts(matched_backends=1, eligible_backends=["b"], exclusions=[])
    )
    assert conditions["ReconcilersReady"]["status"] == "True"


def _cond(type_: str, status: str, reason: str) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": f"{type_} {reason}"}


def test_an_event_is_posted_for_a_new_problem_and_once_per_reason() -> None:
    stored = [_cond("Ready", "True", "Accepted")]
    desired = [
        _cond("Ready", "False", "SelectorMatchesNothing"),
        _cond("NoEligibleBackends", "True", "SelectorMatchesNothing"),
        _cond("Shadowed", "False", "NotShadowed"),
    ]
    found = condition_events("RoutingPolicy", stored=stored, desired=desired)
    assert [(e.type_, e.reason) for e in found] == [("Warning", "SelectorMatchesNothing")]


def test_no_event_while_a_problem_holds_and_a_normal_one_when_it_clears() -> None:
    problem = [_cond("Ready", "False", "AliasCycle"), _cond("Shadowed", "True", "ShadowedByPolicy")]
    assert condition_events("RoutingPolicy", stored=problem, desired=problem) == []
    cleared = [_cond("Ready", "True", "Accepted"), _cond("Shadowed", "False", "NotShadowed")]
    found = condition_events("RoutingPolicy", stored=problem, desired=cleared)
    assert [(e.type_, e.reason) for e in found] == [("Normal", "Accepted")]


def test_backends_get_an_event_for_a_rejected_spec_only() -> None:
    unhealthy = [_cond("Ready", "False", "HealthCheckFailed")]
    assert condition_events("Backend", stored=[], desired=unhealthy) == []
    invalid = [_cond("Ready", "False", "InvalidSpec")]
    assert [e.reason for e in condition_events("Backend", stored=[], desired=invalid)] == [
        "InvalidSpec"
    ]
