"""Messages between the control process and its serving workers (pickled over pipes).

Control → worker: registry changes (with the counter rows of the backends in them), health,
usage outcomes seen by other workers, spend totals, slot-release requests, the serving flag, stop.
Worker → control, batched: routed/queued/rejected decisions, usage reports, release answers,
decision metrics, ready, bye. Every message's cost follows what changed, never the fleet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prometheus_client.core import Metric

from nexus_operator.api import HealthState

from ...pipeline.runtime import RejectedRecord
from ...routing import Credential, RegistryChange, RoutedEvent, UsageReport
from ..metrics import DecisionCounts

Key = tuple[str, str]


# Control → worker


@dataclass(frozen=True, slots=True)
class Change:
    change: RegistryChange
    rows: dict[Key, int]


@dataclass(frozen=True, slots=True)
class Health:
    key: Key
    state: HealthState
    latency_ms: float | None
    last_error: str | None
    last_probe_time: datetime | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """A usage report another worker received: outcome window, TTFT, latency (no spend, no slot)."""

    report: UsageReport


@dataclass(frozen=True, slots=True)
class Totals:
    """Spend per policy as the control process's ledger has it: (namespace, name, period, usd)."""

    spend: tuple[tuple[str, str, str, float], ...]


@dataclass(frozen=True, slots=True)
class Release:
    token: int
    report: UsageReport


@dataclass(frozen=True, slots=True)
class Serving:
    serving: bool


@dataclass(frozen=True, slots=True)
class Start:
    """Bind the servers (after the initial state): configured addresses for the first worker
    (None), then the ports it bound."""

    ports: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class CredentialUpdate:
    """An upstream credential for the gateway (or why there is none; both None: forgotten)."""

    key: Key
    credential: Credential | None
    problem: str | None


@dataclass(frozen=True, slots=True)
class Stop:
    grace_s: float


# Worker → control


@dataclass(frozen=True, slots=True)
class Routed:
    """`count` decisions to one backend under one policy since the last batch: the event holds
    the last record and the summed estimated spend."""

    event: RoutedEvent
    count: int


@dataclass(frozen=True, slots=True)
class Queued:
    namespace: str
    policy: str


@dataclass(frozen=True, slots=True)
class Rejected:
    namespace: str
    policy: str
    record: RejectedRecord


@dataclass(frozen=True, slots=True)
class Usage:
    report: UsageReport
    released: bool


@dataclass(frozen=True, slots=True)
class Released:
    token: int
    found: bool


@dataclass(frozen=True, slots=True)
class Metrics:
    counts: DecisionCounts


@dataclass(frozen=True, slots=True)
class Families:
    """Prometheus families of the worker's other servers (the gateway's)."""

    families: list[Metric]


@dataclass(frozen=True, slots=True)
class Ready:
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Bye:
    pass


@dataclass(frozen=True, slots=True)
class Failed:
    message: str
