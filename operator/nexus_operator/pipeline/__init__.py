"""The reconciler pipeline: a pure library (no Kubernetes, kopf or gRPC).

Request → RoutingIntent → [reconcilers] → RoutingDecision, as in the seed quickstart.
"""

from nexus_operator.api import PrivacyConstraint

from .aliases import MAX_ALIAS_HOPS, AliasResolution, resolve_alias
from .assembly import build_pipeline
from .intent import Annotations, RoutingAnnotations, RoutingIntent, TraceLines
from .plan import CandidatePlan
from .plugins import ENTRY_POINT_GROUP, ReconcilerFactory, build_plugin
from .reconcilers import (
    BudgetReconciler,
    CapabilityReconciler,
    HealthReconciler,
    LatencyReconciler,
    LifecycleReconciler,
    PrivacyReconciler,
    QualityReconciler,
    RequestAnalyzer,
    SelectionReconciler,
)
from .requirements import RequestRequirements, estimate_tokens
from .runner import (
    ReconcileError,
    ReconcileErrorPolicy,
    Reconciler,
    ReconcilerPipeline,
    run_to_end,
)
from .runtime import BackendRuntime, PolicyRuntime, RuntimeState
from .verdict import (
    Exclusion,
    QueueDecision,
    RejectDecision,
    RouteDecision,
    RoutingDecision,
    TraceEntry,
)
from .views import BackendView, Candidate, ModelView

__all__ = [
    "ENTRY_POINT_GROUP",
    "MAX_ALIAS_HOPS",
    "AliasResolution",
    "Annotations",
    "BackendRuntime",
    "BackendView",
    "BudgetReconciler",
    "Candidate",
    "CandidatePlan",
    "CapabilityReconciler",
    "Exclusion",
    "HealthReconciler",
    "LatencyReconciler",
    "LifecycleReconciler",
    "ModelView",
    "PolicyRuntime",
    "PrivacyConstraint",
    "PrivacyReconciler",
    "QualityReconciler",
    "QueueDecision",
    "ReconcileError",
    "ReconcileErrorPolicy",
    "Reconciler",
    "ReconcilerFactory",
    "ReconcilerPipeline",
    "RejectDecision",
    "RequestAnalyzer",
    "RequestRequirements",
    "RouteDecision",
    "RoutingAnnotations",
    "RoutingDecision",
    "RoutingIntent",
    "RuntimeState",
    "SelectionReconciler",
    "TraceEntry",
    "TraceLines",
    "build_pipeline",
    "build_plugin",
    "estimate_tokens",
    "resolve_alias",
    "run_to_end",
]
