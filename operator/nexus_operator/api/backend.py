"""The Backend custom resource: one LLM inference server."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator

from .base import MODEL_ID_MAX, NAME_MAX, URL_MAX, ObjectMeta, SpecModel, StatusModel
from .conditions import Condition


class BackendType(StrEnum):
    """The inference server's API flavour; decides the health endpoint and default zone."""

    OLLAMA = "ollama"
    VLLM = "vllm"
    LLAMACPP = "llamacpp"
    EXO = "exo"
    LMSTUDIO = "lmstudio"
    GENERIC = "generic"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GOOGLE = "google"

    @property
    def is_cloud(self) -> bool:
        return self in CLOUD_TYPES


CLOUD_TYPES = frozenset({BackendType.OPENAI, BackendType.ANTHROPIC, BackendType.GOOGLE})

# Health probe path per type when spec.healthCheck.path is not given.
DEFAULT_HEALTH_PATHS: dict[BackendType, str] = {
    BackendType.OLLAMA: "/api/tags",
    BackendType.VLLM: "/v1/models",
    BackendType.LLAMACPP: "/health",
    BackendType.EXO: "/v1/models",
    BackendType.LMSTUDIO: "/v1/models",
    BackendType.GENERIC: "/v1/models",
    BackendType.OPENAI: "/v1/models",
    BackendType.ANTHROPIC: "/v1/models",
    BackendType.GOOGLE: "/v1beta/models",
}


class Zone(StrEnum):
    """Privacy zone: Restricted backends keep data in the trust boundary; Open ones do not."""

    RESTRICTED = "Restricted"
    OPEN = "Open"


class Pricing(SpecModel):
    """Price of one model on one backend, in USD per 1,000 tokens."""

    input_per1k: float = Field(0.0, alias="inputPer1k", ge=0, le=1000, description="USD per 1,000 input tokens.")
    output_per1k: float = Field(0.0, alias="outputPer1k", ge=0, le=1000, description="USD per 1,000 output tokens.")


class BackendModel(SpecModel):
    """A model served by the backend and what it can do."""

    id: str = Field(min_length=1, max_length=MODEL_ID_MAX, description="Model identifier as requested by clients, e.g. 'llama3:8b'.")
    context_length: int = Field(4096, ge=1, le=10_000_000, description="Maximum tokens (input + output) the model accepts.")
    supports_vision: bool = Field(False, description="Accepts image inputs.")
    supports_tools: bool = Field(False, description="Supports tool / function calling.")
    supports_json_mode: bool = Field(False, description="Supports constrained JSON output.")
    max_output_tokens: int | None = Field(None, ge=1, le=10_000_000, description="Largest maxOutputTokens a request may ask for; larger requests are excluded by Capability.")
    pricing: Pricing | None = Field(None, description="Price per 1,000 tokens; unpriced models cost 0.")


class SecretKeyRef(SpecModel):
    """A key in a Secret in the Backend's namespace. Its value is never copied anywhere."""

    name: str = Field(min_length=1, max_length=NAME_MAX, description="Name of the Secret.")
    key: str = Field(min_length=1, max_length=NAME_MAX, description="Key within the Secret.")


class HealthCheck(SpecModel):
    """How the operator probes the backend."""

    enabled: bool = Field(True, description="Probe the backend; when false it is assumed Healthy.")
    path: str | None = Field(None, max_length=URL_MAX, description="HTTP path to probe; default by type (/api/tags for ollama, /v1/models for OpenAI-compatible servers).")
    interval_seconds: int = Field(10, ge=1, le=3600, description="Seconds between probes.")
    timeout_seconds: int = Field(5, ge=1, le=300, description="Seconds before a probe counts as failed.")
    failure_threshold: int = Field(3, ge=1, le=100, description="Consecutive failures before Healthy becomes Unhealthy.")
    recovery_threshold: int = Field(2, ge=1, le=100, description="Consecutive successes before Unhealthy becomes Healthy.")


class BackendSpec(SpecModel):
    """Desired state of a Backend."""

    type: BackendType = Field(description="Inference server flavour.")
    url: str = Field(min_length=1, max_length=URL_MAX, pattern=r"^https?://", description="Base URL of the inference server, e.g. 'http://ollama.llm:11434'.")
    zone: Zone | None = Field(None, description="Privacy zone; default Restricted for local types, Open for cloud types (openai, anthropic, google).")
    tier: int = Field(1, ge=1, le=5, description="Capability tier from 1 (smallest) to 5 (frontier).")
    priority: int = Field(50, ge=0, le=100, description="Preference from 0 to 100; lower is preferred.")
    models: Annotated[list[BackendModel], Field(max_length=256)] = Field(default_factory=list, description="Models this backend serves.")
    credentials_secret_ref: SecretKeyRef | None = Field(None, description="Secret key holding the API key; required for cloud types.")
    health_check: HealthCheck = Field(default_factory=HealthCheck, description="Health probing settings.")
    max_concurrency: int | None = Field(None, ge=1, le=100_000, description="In-flight request cap; a backend at its cap is skipped.")
    draining: bool = Field(False, description="Cordon: serve nothing new.")

    @model_validator(mode="after")
    def _cloud_needs_credentials(self) -> BackendSpec:
        if self.type.is_cloud and self.credentials_secret_ref is None:
            raise ValueError("`credentialsSecretRef` is required for cloud types (openai, anthropic, google)")
        return self

    @property
    def effective_zone(self) -> Zone:
        if self.zone is not None:
            return self.zone
        return Zone.OPEN if self.type.is_cloud else Zone.RESTRICTED

    @property
    def health_path(self) -> str:
        return self.health_check.path or DEFAULT_HEALTH_PATHS[self.type]


class HealthState(StrEnum):
    UNKNOWN = "Unknown"
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"


class HealthStatus(StatusModel):
    """Result of health probing."""

    state: HealthState = Field(HealthState.UNKNOWN, description="Unknown, Healthy or Unhealthy.")
    latency_ms: float | None = Field(None, ge=0, description="Exponential moving average of probe latency in ms.")
    last_probe_time: str | None = Field(None, description="RFC 3339 time of the last probe.")
    consecutive_failures: int = Field(0, ge=0, description="Failures since the last success.")
    last_error: str | None = Field(None, max_length=1024, description="Last probe error.")


class RoutingCounters(StatusModel):
    """Decisions that selected this backend."""

    selected_total: int = Field(0, ge=0, description="Route decisions that selected this backend.")
    last_selected_time: str | None = Field(None, description="RFC 3339 time of the last selection.")
    in_flight: int = Field(0, ge=0, description="Routed requests not yet reported.")


class BackendExclusion(StatusModel):
    """A RoutingPolicy that excludes this backend whatever the request."""

    policy: str = Field(max_length=NAME_MAX, description="Name of the RoutingPolicy.")
    reconciler: str = Field(max_length=128, description="Reconciler that excludes the backend.")
    reason_code: str = Field(max_length=64, description="Machine-readable reason, e.g. 'privacy_zone'.")
    reason: str = Field(max_length=1024, description="Human-readable reason.")
    suggested_action: str = Field("", max_length=1024, description="What would make the backend eligible.")


class BackendStatus(StatusModel):
    """Observed state of a Backend."""

    observed_generation: int | None = Field(None, ge=0, description="Generation the status reflects.")
    conditions: Annotated[list[Condition], Field(max_length=16)] = Field(default_factory=list, description="Ready and Healthy conditions.")
    health: HealthStatus | None = Field(None, description="Health probing results.")
    routing: RoutingCounters | None = Field(None, description="Routing counters.")
    exclusions: Annotated[list[BackendExclusion], Field(max_length=64)] = Field(default_factory=list, description="Policies that exclude this backend statically.")


class Backend(SpecModel):
    """A Backend object as read from the API server."""

    model_config = SpecModel.model_config | {"extra": "ignore"}

    metadata: ObjectMeta
    spec: BackendSpec
    status: BackendStatus | None = None
