"""The seed's public API: Router.select_backend(requirements) → RoutingResult or RoutingError.

Two front doors, one engine: `RoutingEngine` is the router (policy match, fallbacks, usage
accounting, in-flight slots) and returns a `Decision` for every outcome; the operator and the
gRPC server use it. `Router` is the seed-facing facade over a `RoutingEngine` (`router.engine`):
it turns a routed Decision into a `RoutingResult` and any other outcome into one of the
exceptions below, chosen by the decision's reason code (`_KINDS`, the only such mapping).
Over gRPC the same outcomes are not errors but `RouteResponse`s with outcome REJECTED or
QUEUED and that reason code (docs/grpc.md); nexusctl exits 3 / 4 for them.

    RoutingError
    ├── ModelNotFound            no backend in scope offers the model (and, as the seed has it,
    │   └── NoEligibleBackends   every candidate was excluded — reason code tells them apart)
    ├── AliasError               alias_cycle / alias_depth_exceeded
    ├── ReconcilerFailed         a FailClosed reconciler raised
    └── CapacityExceeded         Queue: every remaining backend is at its concurrency cap
"""

from __future__ import annotations

from dataclasses import dataclass

from nexus_operator.api import RoutingPolicySpec, Selection, Strategy, Weights
from nexus_operator.pipeline import (
    Annotations,
    Candidate,
    Exclusion,
    QueueDecision,
    ReconcilerPipeline,
    RejectDecision,
    RequestRequirements,
    RouteDecision,
    RoutingIntent,
    reasons,
)

from .decision import BackendRef, Decision, Outcome
from .engine import RoutingEngine
from .registry import Registry


@dataclass(frozen=True, slots=True)
class RoutingResult:
    backend: BackendRef
    model: str
    route_reason: str
    cost_estimate: float
    fallback_used: bool
    annotations: Annotations


class RoutingError(Exception):
    """A request that could not be routed; `annotations` hold every exclusion and the trace."""

    def __init__(
        self,
        message: str,
        *,
        model: str,
        reason_code: str,
        annotations: Annotations,
        decision: Decision | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.reason_code = reason_code
        self.annotations = annotations
        self.decision = decision

    @property
    def exclusions(self) -> list[Exclusion]:
        return self.annotations.exclusions


class ModelNotFound(RoutingError):
    @property
    def available_models(self) -> list[str]:
        return self.decision.available_models if self.decision is not None else []


class NoEligibleBackends(ModelNotFound):
    """Every candidate was excluded (the seed maps this to ModelNotFound, hence the subclass)."""


class AliasError(RoutingError):
    pass


class ReconcilerFailed(RoutingError):
    pass


class CapacityExceeded(RoutingError):
    @property
    def retry_after_ms(self) -> int | None:
        return self.decision.retry_after_ms if self.decision is not None else None


_KINDS: dict[str, type[RoutingError]] = {
    reasons.MODEL_NOT_FOUND: ModelNotFound,
    reasons.ALIAS_CYCLE: AliasError,
    reasons.ALIAS_DEPTH_EXCEEDED: AliasError,
    reasons.RECONCILER_FAILED: ReconcilerFailed,
    reasons.NO_ELIGIBLE_BACKENDS: NoEligibleBackends,
}


class Router:
    """The seed-facing facade over `self.engine`, a RoutingEngine on `registry` whose default
    policy (for requests no RoutingPolicy matches) selects with `strategy` and `weights`.

    With `pipeline` given (the seed's Router::with_pipeline) that pipeline replaces the
    policy-built one for every request; its candidates are every backend of the namespace that
    lists the model."""

    def __init__(
        self,
        registry: Registry,
        strategy: Strategy = Strategy.SMART,
        weights: Weights | None = None,
        *,
        pipeline: ReconcilerPipeline | None = None,
    ) -> None:
        self.registry = registry
        self.pipeline = pipeline
        spec = RoutingPolicySpec(
            selection=Selection(strategy=strategy, weights=weights or Weights())
        )
        self.engine = RoutingEngine(registry, default_spec=spec)

    @classmethod
    def with_pipeline(cls, registry: Registry, pipeline: ReconcilerPipeline) -> Router:
        return cls(registry, pipeline=pipeline)

    def select_backend(self, requirements: RequestRequirements) -> RoutingResult:
        if self.pipeline is not None:
            intent = self._custom_intent(requirements)
            self.pipeline.execute_sync(intent)
            return _intent_result(intent)
        return _result(self.engine.route(requirements))

    async def select_backend_async(self, requirements: RequestRequirements) -> RoutingResult:
        if self.pipeline is not None:
            intent = self._custom_intent(requirements)
            await self.pipeline.execute(intent)
            return _intent_result(intent)
        return _result(await self.engine.route_async(requirements))

    def _custom_intent(self, requirements: RequestRequirements) -> RoutingIntent:
        """Candidates for a custom pipeline: every backend of the namespace listing the model."""
        ns = self.registry.snapshot.namespace(requirements.namespace)
        resolution = ns.resolve(requirements.model)
        intent = RoutingIntent(requirements)
        intent.model = resolution.model
        runtime = self.registry.runtime
        intent.candidate_backends = [
            Candidate(v, v.models[intent.model], runtime.backend(v.namespace, v.name))
            for v in ns.offering(None, intent.model)
        ]
        return intent


def _annotations_of(decision: Decision) -> Annotations:
    annotations = Annotations()
    annotations.exclusions.extend(decision.exclusions or decision.rejections)
    annotations.trace_entries.extend(decision.trace)
    annotations.estimated_cost = decision.cost_estimate
    annotations.budget_state = decision.budget_state
    return annotations


def _result(decision: Decision) -> RoutingResult:
    annotations = _annotations_of(decision)
    if decision.outcome is Outcome.ROUTED:
        assert decision.backend is not None
        return RoutingResult(
            decision.backend,
            decision.model,
            decision.reason,
            decision.cost_estimate,
            decision.fallback_used,
            annotations,
        )
    raise _error(decision, annotations)


UNPROBED_HINT = (
    "no backend has been probed yet (health Unknown) and a Router runs no health prober: "
    "call registry.mark_unprobed_healthy() in a library or test setup, set "
    "spec.healthCheck.enabled: false on the Backends, or route through `nexus-operator run` / "
    "`serve`, which probe"
)


def _error(decision: Decision, annotations: Annotations) -> RoutingError:
    code = decision.reason
    if decision.outcome is Outcome.QUEUED:
        kind: type[RoutingError] = CapacityExceeded
    else:
        kind = _KINDS.get(code, NoEligibleBackends)
    message = "; ".join(e.reason for e in decision.rejections[:5]) or code
    if decision.rejections and all(
        e.reason_code == reasons.HEALTH_UNKNOWN for e in decision.rejections
    ):
        message = f"{message}; {UNPROBED_HINT}"
    return kind(
        f"{decision.model}: {message}",
        model=decision.model,
        reason_code=code,
        annotations=annotations,
        decision=decision,
    )


def _intent_result(intent: RoutingIntent) -> RoutingResult:
    decision = intent.decision
    if isinstance(decision, RouteDecision):
        backend = BackendRef.of(decision.candidate.backend)
        return RoutingResult(
            backend,
            intent.model,
            decision.reason,
            decision.cost_estimate,
            False,
            intent.annotations,
        )
    if isinstance(decision, QueueDecision):
        kind: type[RoutingError] = CapacityExceeded
        code = reasons.AT_CAPACITY
    elif (
        isinstance(decision, RejectDecision)
        and decision.reason_code != reasons.NO_ELIGIBLE_BACKENDS
    ):
        kind, code = _KINDS.get(decision.reason_code, RoutingError), decision.reason_code
    elif intent.annotations.exclusions:
        kind, code = NoEligibleBackends, reasons.NO_ELIGIBLE_BACKENDS
    else:
        kind, code = ModelNotFound, reasons.MODEL_NOT_FOUND
    raise kind(
        f"{intent.model}: {code}",
        model=intent.model,
        reason_code=code,
        annotations=intent.annotations,
    )
