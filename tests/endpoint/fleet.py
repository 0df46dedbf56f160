"""Backends and policies for the gRPC endpoint tests, as manifests and as a live server.

The default fleet: `mixtral` is served by a preferred Open-zone cloud backend and a
Restricted local one, so budget states visibly change the decision; `llama3:8b` and
`llama3:70b` live on local backends of tier 1 and 3; `budgeted` holds a 10 USD monthly limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import yaml
from prometheus_client import CollectorRegistry

from nexus_operator.api import Backend, RoutingPolicy
from nexus_operator.routing import Registry, RoutingEngine
from nexus_operator.serving import GrpcServer, TlsConfig

API_VERSION = "nexus.routing.dev/v1alpha1"
BUDGET_LIMIT_USD = 10.0


def backend(
    name: str,
    *,
    type_: str,
    models: Iterable[str],
    priority: int = 50,
    tier: int = 1,
    price: float | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Backend manifest; cloud types get a credentials reference, priced models a price."""
    model_list = []
    for model_id in models:
        entry: dict[str, Any] = {"id": model_id, "contextLength": 32768}
        if price is not None:
            entry["pricing"] = {"inputPer1k": price, "outputPer1k": price}
        model_list.append(entry)
    body: dict[str, Any] = {
        "type": type_,
        "url": f"http://{name}.invalid:8080",
        "priority": priority,
        "tier": tier,
        "models": model_list,
        **spec,
    }
    if type_ in ("openai", "anthropic", "google"):
        body["credentialsSecretRef"] = {"name": f"{name}-key", "key": "apiKey"}
    return {
        "apiVersion": API_VERSION,
        "kind": "Backend",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body,
    }


def policy(name: str, *, patterns: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "RoutingPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"modelPatterns": patterns, **spec},
    }


def default_fleet() -> list[dict[str, Any]]:
    return [
        backend(
            "cloud",
            type_="openai",
            models=["mixtral", "gpt-4o", "llama3:8b"],
            priority=10,
            tier=5,
            price=0.01,
        ),
        backend("local", type_="ollama", models=["mixtral", "llama3:8b"], priority=90),
        backend("big", type_="vllm", models=["llama3:70b"], tier=3),
        policy(
            "budgeted",
            patterns=["mixtral"],
            budget={
                "monthlyLimitUsd": BUDGET_LIMIT_USD,
                "softLimitPercent": 75,
                "hardLimitAction": "blockCloud",
            },
        ),
        policy("private-llama", patterns=["llama3:*"], privacy="restricted"),
    ]


def write_manifests(directory: Path, documents: list[dict[str, Any]]) -> Path:
    """One multi-document YAML file, plus a Secret the loader must skip."""
    directory.mkdir(parents=True, exist_ok=True)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "cloud-key"},
        "stringData": {"apiKey": "not-a-key"},
    }
    path = directory / "fleet.yaml"
    path.write_text(yaml.safe_dump_all([*documents, secret], sort_keys=False))
    return path


def registry_of(documents: list[dict[str, Any]]) -> Registry:
    """A synced registry holding the documents, every backend assumed healthy."""
    registry = Registry()
    backends = [Backend.model_validate(d) for d in documents if d["kind"] == "Backend"]
    registry.replace_all(
        backends,
        [RoutingPolicy.model_validate(d) for d in documents if d["kind"] == "RoutingPolicy"],
    )
    for b in backends:
        registry.runtime.backend(b.metadata.namespace, b.metadata.name).set_assumed_healthy()
    registry.synced = True
    return registry


@asynccontextmanager
async def live_server(
    registry: Registry, *, tls: TlsConfig | None = None, **options: Any
) -> AsyncIterator[tuple[GrpcServer, str]]:
    """A GrpcServer on a free loopback port; yields (server, "127.0.0.1:port")."""
    server = GrpcServer(
        RoutingEngine(registry),
        address="127.0.0.1:0",
        tls=tls,
        metrics_registry=CollectorRegistry(),
        **options,
    )
    port = await server.start()
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        await server.stop(0.5)


def aio_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address)
