"""OpenTelemetry traces of routing decisions: one span per Route/Explain, a child per reconciler.

Off by default. It turns on when the standard OpenTelemetry environment asks for OTLP traces
(`OTEL_TRACES_EXPORTER=otlp`, or an `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and the `tracing` extra is installed
(`pip install 'nexus-operator[tracing]'`; the image has it). Everything else about the exporter
(endpoint, headers, TLS, `OTEL_SERVICE_NAME`, sampling) is read by the OpenTelemetry SDK
from the same environment.

The spans are written after the decision from its trace (each reconciler's measured time,
laid end to end from the decision's start), so the decide loop itself never calls into
OpenTelemetry, and a batch processor exports them off the event loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..routing import Decision

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger(__name__)

SCOPE = "nexus_operator.routing"
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def requested(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for OTLP traces (and does not turn the SDK off)."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporters = {e.strip() for e in environ.get("OTEL_TRACES_EXPORTER", "").split(",")}
    if "none" in exporters:
        return False
    return "otlp" in exporters or any(environ.get(name) for name in _ENDPOINT_VARIABLES)


class DecisionTracer:
    """Turns decisions into spans on one TracerProvider."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer(SCOPE)

    def record(
        self, decision: Decision, *, method: str, namespace: str, started_ns: int, ended_ns: int
    ) -> None:
        """One span for the call from `started_ns` to `ended_ns` (time.time_ns), children for
        the reconcilers in trace order."""
        attributes: dict[str, Any] = {
            "nexus.namespace": namespace,
            "nexus.model": decision.model,
            "nexus.outcome": decision.outcome.value,
            "nexus.policy": decision.policy or "",
            "nexus.fallback_used": decision.fallback_used,
        }
        if decision.backend is not None:
            attributes["nexus.backend"] = decision.backend.name
        if decision.request_id:
            attributes["nexus.request_id"] = decision.request_id
        parent = self._tracer.start_span(
            f"nexus.{method}", start_time=started_ns, attributes=attributes
        )
        from opentelemetry import trace

        context = trace.set_span_in_context(parent)
        at = started_ns
        for entry in decision.trace:
            end = at + int(entry.elapsed_us * 1000)
            child = self._tracer.start_span(
                entry.reconciler,
                context=context,
                start_time=at,
                attributes={
                    "nexus.candidates_before": entry.candidates_before,
                    "nexus.candidates_after": entry.candidates_after,
                    "nexus.stage_outcome": entry.outcome,
                },
            )
            if entry.message:
                child.set_attribute("nexus.message", entry.message)
            child.end(end_time=end)
            at = end
        parent.end(end_time=max(ended_ns, at))

    def shutdown(self) -> None:
        self._provider.shutdown()


def from_environment(environ: Mapping[str, str] | None = None) -> DecisionTracer | None:
    """A tracer exporting over OTLP when the environment asks for one, else None."""
    environ = os.environ if environ is None else environ
    if not requested(environ):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logger.warning(
            "OpenTelemetry tracing is configured in the environment but not installed; "
            "install nexus-operator[tracing] to export decision traces"
        )
        return None
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "nexus-operator")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    logger.info("Exporting decision traces over OTLP")
    return DecisionTracer(provider)
