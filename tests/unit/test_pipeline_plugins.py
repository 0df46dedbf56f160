"""SPEC §3 plug-in semantics: plug-ins fail open unless they declare otherwise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from routing_factories import backend, engine, policy

from nexus_operator.control import RoutingIntent
from nexus_operator.routing import Outcome, RequestRequirements

REQ = RequestRequirements(model="llama3:8b")


class Undeclared:
    """A plug-in that declares no error policy at all."""

    name: ClassVar[str] = "Undeclared"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def reconcile(self, intent: RoutingIntent) -> None:
        raise RuntimeError("no policy declared")


PLUGINS = {"undeclared": Undeclared}


def with_plugin(name: str, config: Mapping[str, Any] | None = None, **spec: Any) -> Any:
    return policy("p", reconcilers=[{"name": name, "config": dict(config or {})}], **spec)


def test_plug_in_without_an_error_policy_fails_open() -> None:
    eng = engine([backend("a")], [with_plugin("undeclared")], plugins=PLUGINS)
    decision = eng.route(REQ)
    assert decision.outcome is Outcome.ROUTED
    assert [t.outcome for t in decision.trace if t.reconciler == "Undeclared"] == ["skipped"]
