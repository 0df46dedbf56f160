"""The gRPC routing endpoint (nexus.routing.v1.Router), its health, reflection and metrics."""

from .grpc_server import SERVICE_NAME, GrpcServer
from .limits import ServerLimits
from .metrics import RoutingMetrics, start_metrics_server
from .tls import TlsConfig

__all__ = [
    "SERVICE_NAME",
    "GrpcServer",
    "RoutingMetrics",
    "ServerLimits",
    "TlsConfig",
    "start_metrics_server",
]
