"""Names of the built-in reconcilers: the `reconciler` field of every exclusion and trace entry."""

from __future__ import annotations

from typing import Final

REQUEST_ANALYZER: Final = "RequestAnalyzer"
LIFECYCLE: Final = "LifecycleReconciler"
PRIVACY: Final = "PrivacyReconciler"
BUDGET: Final = "BudgetReconciler"
CAPABILITY: Final = "CapabilityReconciler"
QUALITY: Final = "QualityReconciler"
HEALTH: Final = "HealthReconciler"
SELECTION: Final = "SelectionReconciler"
