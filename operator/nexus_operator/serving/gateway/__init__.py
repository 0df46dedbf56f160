"""The gateway data plane: an Envoy external processor speaking the Endpoint Picker Protocol."""

from .endpoints import EndpointResolver, Target, upstream_name
from .errors import GatewayError
from .metrics import GatewayMetrics
from .server import DEFAULT_PORT, EXT_PROC_SERVICE, LIVENESS, READINESS, GatewayServer
from .service import (
    DEFAULT_MAX_BODY_BYTES,
    UPSTREAM_HEADER,
    GatewayService,
    GatewaySettings,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_PORT",
    "EXT_PROC_SERVICE",
    "LIVENESS",
    "READINESS",
    "UPSTREAM_HEADER",
    "EndpointResolver",
    "GatewayError",
    "GatewayMetrics",
    "GatewayServer",
    "GatewayService",
    "GatewaySettings",
    "Target",
    "upstream_name",
]
