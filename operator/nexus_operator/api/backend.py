"""The Backend custom resource: one LLM inference server."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from .base import (
    MESSAGE_MAX,
    MODEL_ID_MAX,
    MODEL_ID_PATTERN,
    NAME_MAX,
    TIME_MAX,
    TIMESTAMP,
    URL_MAX,
    CelRule,
    ObjectMeta,
    SpecModel,
    StatusModel,
    list_map,
    validations,
)
from .conditions import CONDITIONS_MAX, Condition, unique_condition_types


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

_CLOUD_TYPE_LIST = ", ".join(f"'{t.value}'" for t in sorted(CLOUD_TYPES))
CLOUD_CREDENTIALS_RULE = CelRule(
    rule=f"!(self.type in [{_CLOUD_TYPE_LIST}]) || has(self.credentialsSecretRef)",
    message=f"`credentialsSecretRef` is required for cloud types ({_CLOUD_TYPE_LIST})",
    field_path=".credentialsSecretRef",
    reason="FieldValueRequired",
)
TIER_RULE = CelRule(
    rule="self >= 1 && self <= 5", message="`tier` must be between 1 and 5 inclusive"
)

# URL rules, one regex each, evaluated alike by CEL (RE2) and by `re` in the model. A user-info
# part (`user:password@`) is refused: it would be printed wherever the URL is (kubectl get -o
# wide, gRPC, nexusctl); an API key belongs in credentialsSecretRef.
_AUTHORITY_USERINFO = r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@"
_URL_WITH_HOST = (
    r"^https?://([^/?#@]*@)?([^/?#@:\[\]]+|\[[0-9a-fA-F:.]+\])(:[0-9]{0,5})?([/?#].*)?$"
)
URL_NO_USERINFO_RULE = CelRule(
    rule=f"!self.matches(r'{_AUTHORITY_USERINFO}')",
    message="`url` must not contain user-info (user:password@); put an API key in "
    "credentialsSecretRef",
)
URL_HOST_RULE = CelRule(
    rule=f"self.matches(r'{_URL_WITH_HOST}')",
    message="`url` must name a host, e.g. 'http://ollama.llm:11434'",
)
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#]*@")


def redact_url(url: str) -> str:
    """`url` with any user-info replaced by `***`, for every place a URL is printed: objects
    stored before the rule existed may still carry one."""
    return _USERINFO.sub(r"\1***@", url) if "@" in url else url


MAX_OUTPUT_RULE = CelRule(
    rule="!has(self.maxOutputTokens) || self.maxOutputTokens <= self.contextLength",
    message="`maxOutputTokens` must not exceed `contextLength` (default 4096)",
    field_path=".maxOutputTokens",
)
PROBE_TIMEOUT_RULE = CelRule(
    rule="self.timeoutSeconds <= self.intervalSeconds",
    message="`timeoutSeconds` (default 5) must not exceed `intervalSeconds` (default 10)",
    field_path=".timeoutSeconds",
)

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"


class Zone(StrEnum):
    """Privacy zone: Restricted backends keep data in the trust boundary; Open ones do not."""

    RESTRICTED = "Restricted"
    OPEN = "Open"


class Pricing(SpecModel):
    """Price of one model on one backend, in USD per 1,000 tokens."""

    input_per1k: float = Field(
        0.0,
        alias="inputPer1k",
        ge=0,
        le=1000,
        description="USD per 1,000 input tokens (0 to 1000).",
    )
    output_per1k: float = Field(
        0.0,
        alias="outputPer1k",
        ge=0,
        le=1000,
        description="USD per 1,000 output tokens (0 to 1000).",
    )


class BackendModel(SpecModel):
    """A model served by the backend and what it can do."""

    model_config = SpecModel.model_config | {"json_schema_extra": validations(MAX_OUTPUT_RULE)}

    id: str = Field(
        min_length=1,
        max_length=MODEL_ID_MAX,
        pattern=MODEL_ID_PATTERN,
        description="Model identifier as requested by clients, e.g. 'llama3:8b'; unique per Backend, no control characters.",
    )
    context_length: int = Field(
        4096, ge=1, le=10_000_000, description="Maximum tokens (input + output) the model accepts."
    )
    supports_vision: bool = Field(False, description="The model accepts image inputs.")
    supports_tools: bool = Field(False, description="The model supports tool / function calling.")
    supports_json_mode: bool = Field(
        False, description="The model supports constrained JSON output."
    )
    max_output_tokens: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Largest maxOutputTokens a request may ask for (at most contextLength); a request asking for more is excluded by the Capability reconciler. No cap when absent.",
    )
    pricing: Pricing | None = Field(
        None, description="Price per 1,000 tokens in USD; an unpriced model costs 0."
    )

    @model_validator(mode="after")
    def _output_within_context(self) -> BackendModel:
        if self.max_output_tokens is not None and self.max_output_tokens > self.context_length:
            raise ValueError(MAX_OUTPUT_RULE.message)
        return self


class SecretKeyRef(SpecModel):
    """A key in a Secret in the Backend's namespace. Its value is never copied anywhere."""

    name: str = Field(
        min_length=1,
        max_length=NAME_MAX,
        pattern=DNS_SUBDOMAIN,
        description="Name of the Secret, in the Backend's namespace.",
    )
    key: str = Field(
        min_length=1,
        max_length=NAME_MAX,
        pattern=SECRET_KEY,
        description="Key within the Secret whose value is the API key.",
    )


class HealthCheck(SpecModel):
    """How the operator probes the backend."""

    model_config = SpecModel.model_config | {"json_schema_extra": validations(PROBE_TIMEOUT_RULE)}

    enabled: bool = Field(
        True,
        description="Probe the backend. When false the backend is assumed Healthy (condition reason HealthCheckDisabled).",
    )
    path: str | None = Field(
        None,
        min_length=1,
        max_length=URL_MAX,
        pattern=r"^/",
        description="HTTP path to probe, starting with '/'. Default by type: /api/tags for ollama, /health for llamacpp, /v1beta/models for google, /v1/models otherwise.",
    )
    interval_seconds: int = Field(
        10, ge=1, le=3600, description="Seconds between probes (1 to 3600)."
    )
    timeout_seconds: int = Field(
        5,
        ge=1,
        le=300,
        description="Seconds before a probe counts as failed (1 to 300, at most intervalSeconds).",
    )
    failure_threshold: int = Field(
        3, ge=1, le=100, description="Consecutive failures before Healthy becomes Unhealthy."
    )
    recovery_threshold: int = Field(
        2, ge=1, le=100, description="Consecutive successes before Unhealthy becomes Healthy."
    )

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> HealthCheck:
        if self.timeout_seconds > self.interval_seconds:
            raise ValueError(PROBE_TIMEOUT_RULE.message)
        return self


class BackendSpec(SpecModel):
    """Desired state of a Backend: where it is, what it serves, how far it may be trusted."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": validations(CLOUD_CREDENTIALS_RULE)
    }

    type: BackendType = Field(
        description="Inference server flavour: ollama, vllm, llamacpp, exo, lmstudio, generic (local) or openai, anthropic, google (cloud)."
    )
    url: str = Field(
        min_length=1,
        max_length=URL_MAX,
        pattern=r"^https?://",
        json_schema_extra=validations(URL_NO_USERINFO_RULE, URL_HOST_RULE),
        description="Base URL of the inference server, e.g. 'http://ollama.llm:11434'. No user-info (user:password@): an API key goes in credentialsSecretRef.",
    )
    zone: Zone | None = Field(
        None,
        description="Privacy zone: Restricted or Open. When absent the operator uses Restricted for local types and Open for cloud types (openai, anthropic, google), and reports the effective zone in status.zone.",
    )
    tier: int = Field(
        1,
        ge=1,
        le=5,
        json_schema_extra=validations(TIER_RULE),
        description="Capability tier from 1 (smallest) to 5 (frontier).",
    )
    priority: int = Field(
        50, ge=0, le=100, description="Preference from 0 to 100; lower is preferred."
    )
    models: Annotated[list[BackendModel], Field(max_length=256)] = Field(
        default_factory=list,
        json_schema_extra=list_map("id"),
        description="Models this backend serves (at most 256, ids unique).",
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret key holding the API key; required for cloud types. The value is never copied into status, events, logs or decisions.",
    )
    health_check: HealthCheck = Field(
        default_factory=HealthCheck, description="Health probing settings."
    )
    max_concurrency: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="In-flight request cap; a backend at its cap is skipped (the request may be Queued). No cap when absent.",
    )
    draining: bool = Field(
        False, description="Cordon: when true the backend is selected for nothing new."
    )

    @field_validator("url")
    @classmethod
    def _url_rules(cls, url: str) -> str:
        if re.search(_AUTHORITY_USERINFO, url):
            raise ValueError(URL_NO_USERINFO_RULE.message)
        if not re.search(_URL_WITH_HOST, url) or "\n" in url:
            raise ValueError(URL_HOST_RULE.message)
        return url

    @field_validator("models")
    @classmethod
    def _unique_model_ids(cls, models: list[BackendModel]) -> list[BackendModel]:
        ids = [m.id for m in models]
        if len(ids) != len(set(ids)):
            raise ValueError("`models` must not repeat an id")
        return models

    @model_validator(mode="after")
    def _cloud_needs_credentials(self) -> BackendSpec:
        if self.type.is_cloud and self.credentials_secret_ref is None:
            raise ValueError(CLOUD_CREDENTIALS_RULE.message)
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
    """Health probing verdict: Unknown until the first probe, then Healthy or Unhealthy."""

    UNKNOWN = "Unknown"
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"


class HealthStatus(StatusModel):
    """Result of health probing."""

    state: HealthState = Field(
        HealthState.UNKNOWN, description="Unknown (not probed yet), Healthy or Unhealthy."
    )
    latency_ms: float | None = Field(
        None,
        ge=0,
        description=(
            "Exponential moving average of probe latency in milliseconds: new = (sample + "
            "4*old)/5. Written on its own only when it moved by 20 % and 5 ms."
        ),
    )
    last_probe_time: str | None = Field(
        None,
        max_length=TIME_MAX,
        json_schema_extra=TIMESTAMP,
        description=(
            "RFC 3339 time of the last probe the status recorded: written with any other "
            "status change, else at a heartbeat of 10 min (longer in large fleets)."
        ),
    )
    consecutive_failures: int = Field(0, ge=0, description="Probe failures since the last success.")
    last_error: str | None = Field(
        None, max_length=MESSAGE_MAX, description="Error of the last failed probe."
    )


class RoutingCounters(StatusModel):
    """Decisions that selected this backend."""

    selected_total: int = Field(0, ge=0, description="Route decisions that selected this backend.")
    last_selected_time: str | None = Field(
        None,
        max_length=TIME_MAX,
        json_schema_extra=TIMESTAMP,
        description="RFC 3339 time of the last selection.",
    )
    in_flight: int = Field(0, ge=0, description="Routed requests whose usage is not reported yet.")


class ReplicaSelections(StatusModel):
    """One replica's own selection count of this backend, written as an absolute value."""

    replica: str = Field(max_length=253, description="Stable replica identity.")
    selected: int = Field(0, ge=0, description="Route decisions of this replica selecting it.")
    last_selected_time: str | None = Field(
        None,
        max_length=TIME_MAX,
        json_schema_extra=TIMESTAMP,
        description="RFC 3339 time of this replica's last selection.",
    )


class ExclusionReason(StatusModel):
    """Why a backend is excluded whatever the request: the shared part of both exclusion lists."""

    reconciler: str = Field(max_length=128, description="Reconciler that excludes the backend.")
    reason_code: str = Field(
        max_length=64, description="Machine-readable reason, e.g. 'privacy_zone'."
    )
    reason: str = Field(max_length=MESSAGE_MAX, description="Human-readable reason.")
    suggested_action: str = Field(
        "", max_length=MESSAGE_MAX, description="What would make the backend eligible."
    )


class BackendExclusion(ExclusionReason):
    """A RoutingPolicy that excludes this backend whatever the request."""

    policy: str = Field(max_length=NAME_MAX, description="Name of the RoutingPolicy.")


class BackendStatus(StatusModel):
    """Observed state of a Backend, written by the operator."""

    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the status reflects."
    )
    conditions: Annotated[list[Condition], Field(max_length=CONDITIONS_MAX)] = Field(
        default_factory=list,
        json_schema_extra=list_map("type"),
        description="Ready and Healthy conditions, and CredentialsReady when spec.credentialsSecretRef is set (False: SecretNotFound, KeyNotFound, EmptyValue, InvalidValue or SecretUnreadable).",
    )
    zone: Zone | None = Field(
        None,
        description="Effective privacy zone: spec.zone, or the type's default when spec.zone is absent.",
    )
    health: HealthStatus | None = Field(None, description="Health probing results.")
    routing: RoutingCounters | None = Field(None, description="Routing counters.")
    replicas: Annotated[list[ReplicaSelections], Field(max_length=256)] = Field(
        default_factory=list,
        json_schema_extra=list_map("replica"),
        description="Per-replica selection counts that routing.selectedTotal sums.",
    )
    retired_selected: int | None = Field(
        None, ge=0, description="Selections of replicas gone for over a month, kept in the sum."
    )
    exclusions: Annotated[list[BackendExclusion], Field(max_length=64)] = Field(
        default_factory=list,
        description="RoutingPolicies that exclude this backend whatever the request (at most 64).",
    )

    @field_validator("conditions")
    @classmethod
    def _unique_conditions(cls, conditions: list[Condition]) -> list[Condition]:
        unique_condition_types(conditions)
        return conditions


class Backend(SpecModel):
    """Backend is one LLM inference server the router may send requests to."""

    model_config = SpecModel.model_config | {"extra": "ignore"}

    metadata: ObjectMeta
    spec: BackendSpec
    status: BackendStatus | None = None
