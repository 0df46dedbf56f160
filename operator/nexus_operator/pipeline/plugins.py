"""Plug-in reconcilers, found by name in the `nexus_operator.reconcilers` entry-point group.

An entry point names a factory `(config: Mapping[str, Any]) -> Reconciler`. A name that is not
registered, or a factory that fails, yields a stand-in that raises on every run; plug-ins fail
open by default, so the stage is traced as skipped and routing continues.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from importlib.metadata import entry_points
from typing import Any, ClassVar, cast

from .intent import RoutingIntent
from .runner import ReconcileError, ReconcileErrorPolicy, Reconciler

ENTRY_POINT_GROUP = "nexus_operator.reconcilers"

ReconcilerFactory = Callable[[Mapping[str, Any]], Reconciler]


@cache
def installed_factories() -> Mapping[str, ReconcilerFactory]:
    """Entry points are scanned once per process: scanning is slow and installs do not change."""
    return {
        ep.name: cast(ReconcilerFactory, ep.load()) for ep in entry_points(group=ENTRY_POINT_GROUP)
    }


class UnavailableReconciler:
    """Stands in for a plug-in that could not be built, so the failure shows in every trace."""

    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_OPEN

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem

    def reconcile(self, intent: RoutingIntent) -> None:
        raise ReconcileError(self.problem)


def build_plugin(
    name: str,
    config: Mapping[str, Any],
    *,
    factories: Mapping[str, ReconcilerFactory] | None = None,
) -> Reconciler:
    """The plug-in registered as `name`, configured; explicit `factories` win over entry points."""
    factory = (factories or {}).get(name) or installed_factories().get(name)
    if factory is None:
        return UnavailableReconciler(name, f"no reconciler registered as {name!r}")
    try:
        return factory(config)
    except Exception as exc:
        return UnavailableReconciler(name, f"{name}: {exc}")
