"""The routing core: registry, immutable snapshots, the engine, and the seed's Router API."""

from nexus_operator.pipeline import (
    BackendRuntime,
    Exclusion,
    PolicyRuntime,
    RequestRequirements,
    RuntimeState,
    TraceEntry,
)

from .compiled_patterns import Glob
from .credentials import Credential, CredentialProblem, CredentialStore
from .decision import BackendRef, Decision, Outcome, UsageReport
from .engine import (
    AsyncReconcilerError,
    EngineEvents,
    RoutedEvent,
    RoutingEngine,
    SlotContendedError,
)
from .policies import CompiledPolicy
from .registry import Registry, RegistryChange
from .reports import PolicyReport, StaticExclusion
from .router import (
    AliasError,
    CapacityExceeded,
    ModelNotFound,
    NoEligibleBackends,
    ReconcilerFailed,
    Router,
    RoutingError,
    RoutingResult,
)
from .snapshot import NamespaceSnapshot, RegistrySnapshot

__all__ = [
    "AliasError",
    "AsyncReconcilerError",
    "BackendRef",
    "BackendRuntime",
    "CapacityExceeded",
    "CompiledPolicy",
    "Credential",
    "CredentialProblem",
    "CredentialStore",
    "Decision",
    "EngineEvents",
    "Exclusion",
    "Glob",
    "ModelNotFound",
    "NamespaceSnapshot",
    "NoEligibleBackends",
    "Outcome",
    "PolicyReport",
    "PolicyRuntime",
    "ReconcilerFailed",
    "Registry",
    "RegistryChange",
    "RegistrySnapshot",
    "RequestRequirements",
    "RoutedEvent",
    "Router",
    "RoutingEngine",
    "RoutingError",
    "RoutingResult",
    "RuntimeState",
    "SlotContendedError",
    "StaticExclusion",
    "TraceEntry",
    "UsageReport",
]
