"""The serving plane of one replica: N worker processes serving decisions on one port, fed by
the control process (see docs/architecture.md, "The serving plane")."""

from .counters import SharedCounters
from .supervisor import ServingPlane, WorkerStartError
from .worker import PlaneServer, ServerFactory

__all__ = ["PlaneServer", "ServerFactory", "ServingPlane", "SharedCounters", "WorkerStartError"]
