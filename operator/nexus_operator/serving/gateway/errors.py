"""OpenAI-format error bodies and the status each outcome maps to (docs/gateway.md's table).

A request the gateway does not route ends in an ImmediateResponse whose body is OpenAI's error
object, `{"error": {"message", "type", "code", "param"}}`, with an extra `error.nexus` object
(outcome, policy, reasonCode, per-backend exclusions) so a client sees why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from ...pipeline import reasons
from ...routing import Decision, Exclusion, Outcome

EXCLUSIONS_MAX = 64

INVALID_REQUEST = "invalid_request_error"
RATE_LIMIT = "rate_limit_error"
SERVER_ERROR = "server_error"

# Request-level reason codes of the routing core → HTTP status.
_REJECT_STATUS = {
    reasons.MODEL_NOT_FOUND: 404,
    reasons.ALIAS_CYCLE: 404,
    reasons.ALIAS_DEPTH_EXCEEDED: 404,
    reasons.NO_ELIGIBLE_BACKENDS: 503,
    reasons.RECONCILER_FAILED: 503,
}

# The gateway's own codes (before or after a decision).
INVALID_JSON = "invalid_json"
MISSING_MODEL = "missing_model"
INVALID_FIELD = "invalid_request"
INVALID_HEADER = "invalid_header"
BODY_REQUIRED = "body_required"
BODY_TOO_LARGE = "request_too_large"
UNKNOWN_PATH = "unknown_path"
ENDPOINT_UNRESOLVABLE = "endpoint_unresolvable"
ROUTING_FAILED = "routing_failed"
UNSUPPORTED_BODY_MODE = "unsupported_body_mode"


class GatewayError(Exception):
    """A request the gateway answers itself: status, OpenAI error fields and the nexus detail."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        nexus: dict[str, Any] | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.nexus = nexus if nexus is not None else {"outcome": "INVALID", "reasonCode": code}
        self.retry_after_s = retry_after_s

    @property
    def type(self) -> str:
        if self.status == 429:
            return RATE_LIMIT
        if self.status >= 500:
            return SERVER_ERROR
        return INVALID_REQUEST

    def body(self) -> bytes:
        error = {
            "message": self.message,
            "type": self.type,
            "code": self.code,
            "param": self.param,
            "nexus": self.nexus,
        }
        return json.dumps({"error": error}, separators=(",", ":")).encode()


def invalid(code: str, message: str, *, param: str | None = None) -> GatewayError:
    return GatewayError(400, code, message, param=param)


def decision_error(decision: Decision) -> GatewayError:
    """The error a QUEUED or REJECTED decision becomes (404, 429 + Retry-After, 503)."""
    nexus: dict[str, Any] = {
        "outcome": decision.outcome.value,
        "policy": decision.policy,
        "reasonCode": decision.reason,
        "model": decision.model,
        "exclusions": exclusions(decision.rejections or decision.exclusions),
    }
    if decision.budget_state is not None:
        nexus["budgetState"] = decision.budget_state.value
    if decision.outcome is Outcome.QUEUED:
        wait_ms = decision.retry_after_ms or 0
        nexus["retryAfterMs"] = wait_ms
        if decision.estimated_wait_ms is not None:
            nexus["estimatedWaitMs"] = decision.estimated_wait_ms
        return GatewayError(
            429,
            decision.reason,
            f"every eligible backend for {decision.model!r} is at capacity; retry later",
            nexus=nexus,
            retry_after_s=max(1, math.ceil(wait_ms / 1000)),
        )
    if decision.available_models:
        nexus["availableModels"] = list(decision.available_models)
    status = _REJECT_STATUS.get(decision.reason, 503)
    return GatewayError(
        status, decision.reason, _reject_message(decision), param="model", nexus=nexus
    )


def _reject_message(decision: Decision) -> str:
    if decision.reason == reasons.MODEL_NOT_FOUND:
        return f"the model {decision.model!r} does not exist or no backend serves it"
    first = next((e for e in decision.rejections if e.reason), None)
    detail = f": {first.reason}" if first is not None and not first.backend else ""
    return f"no backend can serve {decision.model!r} ({decision.reason}){detail}"


def exclusions(items: Iterable[Exclusion]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for exclusion in items:
        if len(out) >= EXCLUSIONS_MAX:
            break
        entry: dict[str, Any] = {
            "backend": exclusion.backend,
            "reconciler": exclusion.reconciler,
            "reasonCode": exclusion.reason_code,
            "reason": exclusion.reason,
            "suggestedAction": exclusion.suggested_action or "",
        }
        if exclusion.required_tier is not None:
            entry["requiredTier"] = exclusion.required_tier
        if exclusion.privacy_zone_required is not None:
            entry["privacyZoneRequired"] = str(exclusion.privacy_zone_required)
        out.append(entry)
    return out
