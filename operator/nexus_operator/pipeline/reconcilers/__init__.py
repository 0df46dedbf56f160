"""The built-in reconcilers, one module each, in pipeline order."""

from .analyzer import RequestAnalyzer
from .budget import BudgetReconciler
from .capability import CapabilityReconciler
from .health import HealthReconciler
from .latency import LatencyReconciler
from .lifecycle import LifecycleReconciler
from .privacy import PrivacyReconciler
from .quality import QualityReconciler
from .selection import SelectionReconciler

__all__ = [
    "BudgetReconciler",
    "CapabilityReconciler",
    "HealthReconciler",
    "LatencyReconciler",
    "LifecycleReconciler",
    "PrivacyReconciler",
    "QualityReconciler",
    "RequestAnalyzer",
    "SelectionReconciler",
]
