"""Reason codes: the small, stable vocabulary of why a backend or a request was turned down.

Clients branch on these strings (gRPC `reasonCode`, status `exclusions[].reasonCode`), so they
never change meaning once released; docs/reason-codes.md describes each one.
"""

from __future__ import annotations

from typing import Final

# Backend exclusions, by the stage that records them.
DRAINING: Final = "draining"
OUTSIDE_SUBSET_HINT: Final = "outside_subset_hint"
PRIVACY_ZONE: Final = "privacy_zone"
BUDGET_HARD_LIMIT: Final = "budget_hard_limit"
COST_EXCEEDS_MAX: Final = "cost_exceeds_max"
TIER_TOO_LOW: Final = "tier_too_low"
MISSING_CAPABILITIES: Final = "missing_capabilities"
CONTEXT_TOO_LONG: Final = "context_too_long"
ERROR_RATE: Final = "error_rate"
UNHEALTHY: Final = "unhealthy"
HEALTH_UNKNOWN: Final = "health_unknown"
CREDENTIALS_UNAVAILABLE: Final = "credentials_unavailable"
AT_CAPACITY: Final = "at_capacity"
LATENCY_TOO_HIGH: Final = "latency_too_high"
EXCLUDED_BY_RECONCILER: Final = "excluded_by_reconciler"

# Request-level rejections (the exclusion's backend is empty).
MODEL_NOT_FOUND: Final = "model_not_found"
ALIAS_CYCLE: Final = "alias_cycle"
ALIAS_DEPTH_EXCEEDED: Final = "alias_depth_exceeded"
RECONCILER_FAILED: Final = "reconciler_failed"
NO_ELIGIBLE_BACKENDS: Final = "no_eligible_backends"

# Codes that reject a request before any candidate exists; they never try fallbacks.
TERMINAL: Final = frozenset({ALIAS_CYCLE, ALIAS_DEPTH_EXCEEDED, RECONCILER_FAILED})

# Route reasons that are not strategy-specific.
ONLY_CANDIDATE: Final = "only_candidate"
