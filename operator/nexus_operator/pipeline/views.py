"""Plain, frozen views of the custom resources, converted once per change.

The decision path reads these instead of pydantic models: attribute access on a slotted
dataclass is several times cheaper, and precomputed fields (effective zone, per-model price)
keep per-request arithmetic minimal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from nexus_operator.api import Backend, BackendModel, BackendType, Zone

from .runtime import BackendRuntime

BackendKey = tuple[str, str]


def _empty_mapping() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ModelView:
    """One model entry of a backend."""

    id: str
    context_length: int = 4096
    supports_vision: bool = False
    supports_tools: bool = False
    supports_json_mode: bool = False
    max_output_tokens: int | None = None
    input_per1k: float = 0.0
    output_per1k: float = 0.0

    @classmethod
    def from_api(cls, model: BackendModel) -> ModelView:
        pricing = model.pricing
        return cls(
            id=model.id,
            context_length=model.context_length,
            supports_vision=model.supports_vision,
            supports_tools=model.supports_tools,
            supports_json_mode=model.supports_json_mode,
            max_output_tokens=model.max_output_tokens,
            input_per1k=pricing.input_per1k if pricing else 0.0,
            output_per1k=pricing.output_per1k if pricing else 0.0,
        )

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for the given token counts; unpriced models cost 0."""
        return token_cost(
            input_tokens,
            output_tokens,
            input_per1k=self.input_per1k,
            output_per1k=self.output_per1k,
        )


def token_cost(
    input_tokens: int, output_tokens: int, *, input_per1k: float, output_per1k: float
) -> float:
    """SPEC's estimate: input and output tokens, each priced per 1,000 (USD)."""
    return input_tokens / 1000 * input_per1k + output_tokens / 1000 * output_per1k


@dataclass(frozen=True, slots=True)
class BackendView:
    """A Backend's spec with defaults resolved."""

    namespace: str
    name: str
    type: BackendType
    url: str
    zone: Zone
    tier: int = 1
    priority: int = 50
    max_concurrency: int | None = None
    draining: bool = False
    health_check_enabled: bool = True
    labels: Mapping[str, str] = field(default_factory=_empty_mapping)
    models: Mapping[str, ModelView] = field(default_factory=_empty_mapping)

    @classmethod
    def from_api(cls, backend: Backend) -> BackendView:
        spec = backend.spec
        return cls(
            namespace=backend.metadata.namespace,
            name=backend.metadata.name,
            type=spec.type,
            url=spec.url,
            zone=spec.effective_zone,
            tier=spec.tier,
            priority=spec.priority,
            max_concurrency=spec.max_concurrency,
            draining=spec.draining,
            health_check_enabled=spec.health_check.enabled,
            labels=MappingProxyType(dict(backend.metadata.labels)),
            models=MappingProxyType({m.id: ModelView.from_api(m) for m in spec.models}),
        )

    @property
    def key(self) -> BackendKey:
        return (self.namespace, self.name)

    @property
    def is_open(self) -> bool:
        return self.zone is Zone.OPEN


@dataclass(frozen=True, slots=True)
class Candidate:
    """A backend offering the requested model, joined with its mutable runtime cell.

    Built once per snapshot and model, shared by every request: never mutate one.
    """

    backend: BackendView
    model: ModelView
    runtime: BackendRuntime

    @classmethod
    def of(
        cls,
        backend: Backend | BackendView,
        model: str,
        *,
        runtime: BackendRuntime | None = None,
        latency_ms: float | None = None,
    ) -> Candidate:
        """A candidate for library use and tests; the backend must list `model`. `latency_ms`
        sets a fresh runtime's latency EMA, as if probes had measured it."""
        view = backend if isinstance(backend, BackendView) else BackendView.from_api(backend)
        cell = runtime or BackendRuntime()
        if latency_ms is not None:
            cell.latency_ms = latency_ms
        return cls(backend=view, model=view.models[model], runtime=cell)

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def latency_ms(self) -> float | None:
        """Probe latency EMA; None until measured."""
        return self.runtime.latency_ms

    @property
    def avg_latency_ms(self) -> float:
        """The seed's `avg_latency_ms`: the latency EMA, 0 until measured (as the seed's
        atomic counter starts), so `latency > limit` works on fresh backends too."""
        latency = self.runtime.latency_ms
        return 0.0 if latency is None else latency
