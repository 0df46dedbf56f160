"""SPEC §3 step 0 and step 1: aliases, policy choice, scope and the candidate set."""

from __future__ import annotations

from routing_factories import backend, codes, engine, policy

from nexus_operator.pipeline import reasons
from nexus_operator.routing import Outcome, RequestRequirements


def req(model: str, **kw: object) -> RequestRequirements:
    return RequestRequirements(model=model, **kw)  # type: ignore[arg-type]


def test_aliases_resolve_before_the_policy_is_chosen() -> None:
    eng = engine(
        [backend("local", models=["llama3:8b"])],
        [
            policy("aliases", ["nothing"], aliases={"fast": "llama3:8b"}),
            policy("llama", ["llama*"]),
        ],
    )
    decision = eng.route(req("fast"))
    assert decision.outcome is Outcome.ROUTED
    assert (decision.model, decision.policy) == ("llama3:8b", "llama")


def test_alias_chain_of_three_hops_resolves() -> None:
    aliases = {"a": "b", "b": "c", "c": "llama3:8b"}
    eng = engine([backend("local")], [policy("p", ["zzz"], aliases=aliases)])
    assert eng.route(req("a")).model == "llama3:8b"


def test_alias_chain_of_four_hops_rejects_with_alias_depth_exceeded() -> None:
    aliases = {"a": "b", "b": "c", "c": "d", "d": "llama3:8b"}
    eng = engine([backend("local")], [policy("p", ["*"], aliases=aliases, fallbacks=["llama3:8b"])])
    decision = eng.route(req("a"))
    assert (decision.outcome, decision.reason) == (Outcome.REJECTED, reasons.ALIAS_DEPTH_EXCEEDED)
    assert [r.reason_code for r in decision.rejections] == [reasons.ALIAS_DEPTH_EXCEEDED]


def test_alias_cycle_rejects_with_alias_cycle_without_trying_fallbacks() -> None:
    aliases = {"a": "b", "b": "c", "c": "d", "d": "e", "e": "a"}
    eng = engine([backend("local")], [policy("p", ["*"], aliases=aliases, fallbacks=["llama3:8b"])])
    decision = eng.route(req("a"))
    assert decision.reason == reasons.ALIAS_CYCLE
    assert not decision.fallback_used
    assert len(decision.rejections) == 1


def test_alias_conflict_goes_to_the_lower_precedence_number_then_name() -> None:
    eng = engine(
        [backend("a", models=["m-a"]), backend("b", models=["m-b"]), backend("c", models=["m-c"])],
        [
            policy("z-first", ["x"], precedence=10, aliases={"m": "m-a"}),
            policy("late", ["y"], precedence=20, aliases={"m": "m-b"}),
            policy("a-tie", ["w"], precedence=20, aliases={"n": "m-b"}),
            policy("b-tie", ["v"], precedence=20, aliases={"n": "m-c"}),
        ],
    )
    assert eng.route(req("m")).model == "m-a"
    assert eng.route(req("n")).model == "m-b"


def test_lower_precedence_number_wins_when_several_policies_match() -> None:
    eng = engine(
        [backend("local")],
        [policy("broad", ["*"], precedence=500), policy("narrow", ["llama3:8b"], precedence=900)],
    )
    assert eng.route(req("llama3:8b")).policy == "broad"


def test_precedence_tie_goes_to_the_longest_literal_prefix() -> None:
    eng = engine([backend("local")], [policy("a", ["l*"]), policy("b", ["llama*", "x"])])
    assert eng.route(req("llama3:8b")).policy == "b"


def test_precedence_and_prefix_tie_goes_to_name_ascending() -> None:
    eng = engine([backend("local")], [policy("beta", ["llama*"]), policy("alpha", ["llama*"])])
    assert eng.route(req("llama3:8b")).policy == "alpha"


def test_globs_support_braces_classes_and_single_characters() -> None:
    eng = engine(
        [backend("b", models=["gpt-4o", "m7", "abc"])],
        [policy("brace", ["gpt-{4o,4}"]), policy("cls", ["m[0-9]"]), policy("one", ["a?c"])],
    )
    assert [eng.route(req(m)).policy for m in ("gpt-4o", "m7", "abc")] == ["brace", "cls", "one"]


def test_without_a_matching_policy_defaults_apply_to_every_backend_in_the_namespace() -> None:
    eng = engine(
        [backend("cloud", type="openai", models=["gpt-4o"], priority=0)],
        [policy("llama-only", ["llama*"], privacy="restricted")],
    )
    decision = eng.route(req("gpt-4o"))
    assert (decision.outcome, decision.policy) == (Outcome.ROUTED, None)
    assert decision.budget_state is None


def test_candidates_are_backends_listing_the_model_in_any_health_state() -> None:
    eng = engine([backend("up"), backend("down"), backend("other", models=["qwen"])], healthy=False)
    eng.registry.runtime.backend("default", "up").set_assumed_healthy()
    decision = eng.route(req("llama3:8b"))
    analyzer = decision.trace[0]
    assert (analyzer.reconciler, analyzer.candidates_after) == ("RequestAnalyzer", 2)
    assert codes(decision) == {"down": reasons.HEALTH_UNKNOWN}


def test_backend_selector_limits_the_policy_scope() -> None:
    eng = engine(
        [
            backend("gpu", labels={"pool": "gpu"}),
            backend("cpu", labels={"pool": "cpu"}, priority=0),
        ],
        [policy("gpu-only", ["*"], backendSelector={"matchLabels": {"pool": "gpu"}})],
    )
    assert eng.route(req("llama3:8b")).backend.name == "gpu"  # type: ignore[union-attr]


def test_backend_selector_expressions_follow_label_selector_semantics() -> None:
    selector = {"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["cpu"]}]}
    eng = engine(
        [
            backend("gpu", labels={"pool": "gpu"}),
            backend("cpu", labels={"pool": "cpu"}, priority=0),
            backend("bare"),
        ],
        [policy("p", ["*"], backendSelector=selector, selection={"strategy": "priorityOnly"})],
    )
    decision = eng.explain(req("llama3:8b"))
    assert decision.trace[0].candidates_after == 2
    assert decision.backend.name == "bare"  # type: ignore[union-attr]


def test_backends_of_other_namespaces_are_never_candidates() -> None:
    eng = engine([backend("elsewhere", namespace="team-b")])
    decision = eng.route(req("llama3:8b"))
    assert decision.reason == reasons.MODEL_NOT_FOUND
    assert decision.available_models == []
