"""SPEC §3 plug-in semantics: a failed-open plug-in is skipped without a trace of its edits,
and plug-ins fail open unless they declare otherwise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from routing_factories import backend, codes, engine, policy

from nexus_operator.api import Zone
from nexus_operator.pipeline import ReconcileErrorPolicy, RoutingIntent, reasons
from nexus_operator.routing import Outcome, RequestRequirements

REQ = RequestRequirements(model="llama3:8b")


class RestoresThenRaises:
    """Puts every planned candidate back, then fails (open)."""

    name: ClassVar[str] = "RestoresThenRaises"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_OPEN

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def reconcile(self, intent: RoutingIntent) -> None:
        assert intent.plan is not None
        intent.candidate_backends = list(intent.plan.candidates)
        raise RuntimeError("half done")


class ExcludesThenRaises:
    """Excludes one named backend through the intent, then fails (open)."""

    name: ClassVar[str] = "ExcludesThenRaises"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_OPEN

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.target = str(config["target"])

    def reconcile(self, intent: RoutingIntent) -> None:
        for candidate in intent.candidate_backends:
            if candidate.backend.name == self.target:
                intent.exclude(candidate, reason_code="doomed", reason="about to fail")
        raise RuntimeError("half done")


class DropsThenRaises:
    """Drops every candidate silently and sets a penalty, then fails (open)."""

    name: ClassVar[str] = "DropsThenRaises"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_OPEN

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def reconcile(self, intent: RoutingIntent) -> None:
        intent.candidate_backends.clear()
        intent.annotations.penalize_open = True
        raise RuntimeError("half done")


class Undeclared:
    """A plug-in that declares no error policy at all."""

    name: ClassVar[str] = "Undeclared"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def reconcile(self, intent: RoutingIntent) -> None:
        raise RuntimeError("no policy declared")


PLUGINS = {
    "restore": RestoresThenRaises,
    "exclude": ExcludesThenRaises,
    "drop": DropsThenRaises,
    "undeclared": Undeclared,
}


def with_plugin(name: str, config: Mapping[str, Any] | None = None, **spec: Any) -> Any:
    return policy("p", reconcilers=[{"name": name, "config": dict(config or {})}], **spec)


def test_failed_open_plug_in_cannot_restore_a_backend_privacy_excluded() -> None:
    eng = engine(
        [backend("cloud", type="openai"), backend("local")],
        [with_plugin("restore", privacy="restricted", selection={"strategy": "random"})],
        plugins=PLUGINS,
    )
    for _ in range(20):
        decision = eng.explain(REQ)
        assert decision.backend is not None
        assert decision.backend.zone is not Zone.OPEN
    assert codes(decision) == {"cloud": reasons.PRIVACY_ZONE}


def test_failed_open_plug_in_exclusions_are_rolled_back() -> None:
    eng = engine(
        [backend("a", priority=10), backend("b", priority=20)],
        [with_plugin("exclude", {"target": "a"}, selection={"strategy": "priorityOnly"})],
        plugins=PLUGINS,
    )
    decision = eng.explain(REQ)
    assert decision.reason == "priority:a:10"
    assert codes(decision) == {}


def test_failed_open_plug_in_that_emptied_the_set_still_lets_selection_run() -> None:
    eng = engine(
        [backend("cloud", type="openai"), backend("local", priority=60)],
        [with_plugin("drop", selection={"strategy": "smart"})],
        plugins=PLUGINS,
    )
    decision = eng.explain(REQ)
    assert decision.outcome is Outcome.ROUTED
    # no open-zone penalty: cloud (priority 50) outscores local (priority 60)
    assert decision.reason == "highest_score:cloud:75.0"
    assert [t.outcome for t in decision.trace if t.reconciler == "DropsThenRaises"] == ["skipped"]


def test_plug_in_without_an_error_policy_fails_open() -> None:
    eng = engine([backend("a")], [with_plugin("undeclared")], plugins=PLUGINS)
    decision = eng.route(REQ)
    assert decision.outcome is Outcome.ROUTED
    assert [t.outcome for t in decision.trace if t.reconciler == "Undeclared"] == ["skipped"]
