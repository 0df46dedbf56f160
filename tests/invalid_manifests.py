"""Invalid Backend and RoutingPolicy specs, shared by the pydantic unit tests and the
API-server integration tests, so both prove they reject the same input.

Each case names the field the error must name: `field` is the path the API server
reports (e.g. `spec.models[1]`); its last name (`models`) must appear in pydantic's error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

BACKEND_BASE: dict[str, Any] = {
    "type": "ollama",
    "url": "http://127.0.0.1:11434",
    "models": [{"id": "llama3.1:8b"}],
}
CLOUD_BASE: dict[str, Any] = {
    "type": "openai",
    "url": "https://api.openai.com",
    "credentialsSecretRef": {"name": "openai-credentials", "key": "api-key"},
}
POLICY_BASE: dict[str, Any] = {"modelPatterns": ["llama*"]}


@dataclass(frozen=True)
class InvalidSpec:
    id: str
    kind: str  # "Backend" or "RoutingPolicy"
    spec: dict[str, Any]
    field: str

    @property
    def field_name(self) -> str:
        """The last field name in `field`, without list indexes."""
        return re.sub(r"\[\d+\]$", "", self.field.rsplit(".", 1)[-1])


def _backend(case_id: str, field: str, **spec: Any) -> InvalidSpec:
    return InvalidSpec(case_id, "Backend", {**BACKEND_BASE, **spec}, field)


def _policy(case_id: str, field: str, **spec: Any) -> InvalidSpec:
    return InvalidSpec(case_id, "RoutingPolicy", {**POLICY_BASE, **spec}, field)


def _without(spec: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != key}


INVALID_SPECS: tuple[InvalidSpec, ...] = (
    # Backend
    _backend("backend-unknown-type", "spec.type", type="llama-server"),
    _backend("backend-tier-zero", "spec.tier", tier=0),
    _backend("backend-tier-six", "spec.tier", tier=6),
    _backend("backend-priority-above-100", "spec.priority", priority=101),
    _backend("backend-unknown-zone", "spec.zone", zone="Private"),
    _backend("backend-lowercase-zone", "spec.zone", zone="open"),
    InvalidSpec(
        "backend-openai-without-credentials",
        "Backend",
        _without(CLOUD_BASE, "credentialsSecretRef"),
        "spec.credentialsSecretRef",
    ),
    InvalidSpec(
        "backend-anthropic-without-credentials",
        "Backend",
        {"type": "anthropic", "url": "https://api.anthropic.com"},
        "spec.credentialsSecretRef",
    ),
    InvalidSpec("backend-missing-url", "Backend", _without(BACKEND_BASE, "url"), "spec.url"),
    _backend("backend-url-without-scheme", "spec.url", url="ollama.llm:11434"),
    _backend("backend-url-too-long", "spec.url", url="http://" + "a" * 2100),
    _backend("backend-url-with-user-info", "spec.url", url="http://user:pw@ollama.llm:11434"),
    _backend("backend-url-with-token-user", "spec.url", url="https://sk-secret@api.openai.com"),
    _backend("backend-url-without-host", "spec.url", url="http://:11434/v1"),
    _backend("backend-url-only-scheme", "spec.url", url="https://"),
    _backend(
        "backend-negative-price",
        "spec.models[0].pricing.inputPer1k",
        models=[{"id": "gpt-x", "pricing": {"inputPer1k": -0.01}}],
    ),
    _backend("backend-duplicate-model-ids", "spec.models[1]", models=[{"id": "m"}, {"id": "m"}]),
    _backend(
        "backend-too-many-models", "spec.models", models=[{"id": f"m{i}"} for i in range(257)]
    ),
    _backend("backend-empty-model-id", "spec.models[0].id", models=[{"id": ""}]),
    _backend(
        "backend-zero-context-length",
        "spec.models[0].contextLength",
        models=[{"id": "m", "contextLength": 0}],
    ),
    _backend("backend-unknown-field", "spec.weight", weight=3),
    _backend(
        "backend-zero-probe-interval",
        "spec.healthCheck.intervalSeconds",
        healthCheck={"intervalSeconds": 0},
    ),
    _backend(
        "backend-relative-probe-path", "spec.healthCheck.path", healthCheck={"path": "health"}
    ),
    _backend("backend-zero-max-concurrency", "spec.maxConcurrency", maxConcurrency=0),
    InvalidSpec(
        "backend-invalid-secret-name",
        "Backend",
        {**CLOUD_BASE, "credentialsSecretRef": {"name": "Bad_Name", "key": "api-key"}},
        "spec.credentialsSecretRef.name",
    ),
    _backend("backend-model-id-with-newline", "spec.models[0].id", models=[{"id": "llama\n3"}]),
    _backend("backend-model-id-with-escape", "spec.models[0].id", models=[{"id": "m\x1b[31m"}]),
    _backend(
        "backend-max-output-above-context-length",
        "spec.models[0].maxOutputTokens",
        models=[{"id": "m", "contextLength": 1024, "maxOutputTokens": 2048}],
    ),
    _backend(
        "backend-max-output-above-default-context-length",
        "spec.models[0].maxOutputTokens",
        models=[{"id": "m", "maxOutputTokens": 8192}],
    ),
    _backend(
        "backend-probe-timeout-above-interval",
        "spec.healthCheck.timeoutSeconds",
        healthCheck={"intervalSeconds": 5, "timeoutSeconds": 10},
    ),
    _backend(
        "backend-probe-default-timeout-above-interval",
        "spec.healthCheck.timeoutSeconds",
        healthCheck={"intervalSeconds": 2},
    ),
    # RoutingPolicy
    _policy(
        "policy-weights-sum-90",
        "spec.selection.weights",
        selection={"weights": {"priority": 40, "load": 30, "latency": 20}},
    ),
    _policy(
        "policy-weights-default-others-sum-110",
        "spec.selection.weights",
        selection={"weights": {"priority": 60}},
    ),
    _policy("policy-glob-with-space", "spec.modelPatterns[0]", modelPatterns=["gpt 4o"]),
    _policy("policy-glob-with-dollar", "spec.modelPatterns[0]", modelPatterns=["llama$"]),
    _policy("policy-glob-reversed-range", "spec.modelPatterns[1]", modelPatterns=["a*", "m[z-a]"]),
    _policy(
        "policy-glob-negated-reversed-range", "spec.modelPatterns[0]", modelPatterns=["x[!]9-0]"]
    ),
    _policy(
        "policy-too-many-patterns",
        "spec.modelPatterns",
        modelPatterns=[f"m{i}*" for i in range(65)],
    ),
    _policy("policy-duplicate-patterns", "spec.modelPatterns[1]", modelPatterns=["gpt-*", "gpt-*"]),
    _policy(
        "policy-soft-limit-100", "spec.budget.softLimitPercent", budget={"softLimitPercent": 100}
    ),
    _policy(
        "policy-negative-monthly-limit",
        "spec.budget.monthlyLimitUsd",
        budget={"monthlyLimitUsd": -5},
    ),
    _policy(
        "policy-unknown-hard-limit-action",
        "spec.budget.hardLimitAction",
        budget={"hardLimitAction": "block"},
    ),
    _policy("policy-unknown-budget-field", "spec.budget.limit", budget={"limit": 10}),
    _policy("policy-glob-unclosed-brace", "spec.modelPatterns[0]", modelPatterns=["gpt-{4o,4"]),
    _policy("policy-empty-budget", "spec.budget.monthlyLimitUsd", budget={}),
    _policy(
        "policy-budget-without-limit",
        "spec.budget.monthlyLimitUsd",
        budget={"hardLimitAction": "blockAll"},
    ),
    _policy("policy-fallback-with-tab", "spec.fallbacks[0]", fallbacks=["gpt\t4o"]),
    _policy("policy-alias-target-with-newline", "spec.aliases", aliases={"fast": "gpt\n4o"}),
    _policy(
        "policy-reconciler-name-with-space",
        "spec.reconcilers[0].name",
        reconcilers=[{"name": "my plugin"}],
    ),
    _policy("policy-alias-to-itself", "spec.aliases", aliases={"fast": "fast"}),
    _policy("policy-alias-name-too-long", "spec.aliases", aliases={"a" * 300: "gpt-4o"}),
    _policy("policy-min-tier-six", "spec.minTier", minTier=6),
    _policy("policy-unknown-privacy", "spec.privacy", privacy="private"),
    _policy(
        "policy-unknown-strategy", "spec.selection.strategy", selection={"strategy": "fastest"}
    ),
    _policy(
        "policy-zero-error-rate-threshold",
        "spec.quality.errorRateThreshold",
        quality={"errorRateThreshold": 0},
    ),
    _policy("policy-negative-precedence", "spec.precedence", precedence=-1),
    _policy("policy-too-many-fallbacks", "spec.fallbacks", fallbacks=[f"m{i}" for i in range(17)]),
    _policy("policy-negative-max-cost", "spec.maxCostPerRequestUsd", maxCostPerRequestUsd=-0.1),
    _policy(
        "policy-unknown-selector-operator",
        "spec.backendSelector.matchExpressions[0].operator",
        backendSelector={"matchExpressions": [{"key": "site", "operator": "Contains"}]},
    ),
    _policy(
        "policy-duplicate-reconcilers",
        "spec.reconcilers[1]",
        reconcilers=[{"name": "latency"}, {"name": "latency"}],
    ),
)
