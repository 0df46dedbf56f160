"""Builders for Backends, RoutingPolicies and registries used by the routing-core tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from nexus_operator import api
from nexus_operator.routing import Registry, RoutingEngine

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
CLOUD = frozenset({"openai", "anthropic", "google"})


def model(model_id: str = "llama3:8b", **fields: Any) -> dict[str, Any]:
    return {"id": model_id, **fields}


def backend(
    name: str,
    *,
    models: Iterable[str | Mapping[str, Any]] = ("llama3:8b",),
    namespace: str = "default",
    labels: Mapping[str, str] | None = None,
    **spec: Any,
) -> api.Backend:
    kind = spec.pop("type", "ollama")
    body: dict[str, Any] = {
        "type": kind,
        "url": f"http://{name}.test:11434",
        "models": [model(m) if isinstance(m, str) else dict(m) for m in models],
        **spec,
    }
    if kind in CLOUD:
        body.setdefault("credentialsSecretRef", {"name": "key", "key": "token"})
    meta = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
    return api.Backend.model_validate({"metadata": meta, "spec": body})


def policy(
    name: str, patterns: Iterable[str] = ("*",), *, namespace: str = "default", **spec: Any
) -> api.RoutingPolicy:
    body = {"modelPatterns": list(patterns), **spec}
    return api.RoutingPolicy.model_validate(
        {"metadata": {"name": name, "namespace": namespace}, "spec": body}
    )


def registry(
    backends: Iterable[api.Backend] = (),
    policies: Iterable[api.RoutingPolicy] = (),
    *,
    healthy: bool = True,
) -> Registry:
    reg = Registry()
    backends = list(backends)
    reg.replace_all(backends, policies)
    if healthy:
        for b in backends:
            reg.runtime.backend(b.metadata.namespace, b.metadata.name).set_assumed_healthy()
    return reg


def engine(
    backends: Iterable[api.Backend] = (),
    policies: Iterable[api.RoutingPolicy] = (),
    *,
    healthy: bool = True,
    now: datetime = NOW,
    **kwargs: Any,
) -> RoutingEngine:
    return RoutingEngine(registry(backends, policies, healthy=healthy), clock=lambda: now, **kwargs)


def codes(decision: Any) -> dict[str, str]:
    """backend → reason code of every exclusion in a decision."""
    return {e.backend: e.reason_code for e in decision.exclusions}
