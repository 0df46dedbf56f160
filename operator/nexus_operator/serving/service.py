"""The nexus.routing.v1.Router servicer: validate, ask the routing engine, map the decision.

Every decision awaits the engine's one decide loop, which does no I/O and so runs to completion
on the event loop without suspending, unless the matched policy runs an async plug-in.
Validation failures and unexpected errors abort the RPC.
"""

from __future__ import annotations

import logging
from time import perf_counter, time_ns
from typing import NoReturn

import grpc
from google.protobuf.message import Message

from ..routing import Decision, RequestRequirements, RoutingEngine
from . import tracing
from .inventory import inventory
from .limits import Handler
from .metrics import RoutingMetrics
from .proto import router_pb2 as pb
from .proto import router_pb2_grpc
from .requests import InvalidArgument, inventory_namespace, route_requirements, usage_report
from .responses import explanation, route_response
from .tracing import DecisionTracer

logger = logging.getLogger(__name__)


class RouterService(router_pb2_grpc.RouterServicer):
    """Route, Explain, ReportUsage and GetInventory over one RoutingEngine."""

    def __init__(
        self,
        engine: RoutingEngine,
        *,
        metrics: RoutingMetrics,
        tracer: DecisionTracer | None = None,
    ) -> None:
        """`tracer`: decision spans; by default one from the OpenTelemetry environment, if any."""
        self._engine = engine
        self._metrics = metrics
        self._tracer = tracer if tracer is not None else tracing.from_environment()

    def methods(self) -> dict[str, tuple[Handler, type[Message], type[Message]]]:
        """Each method with its request and response types, for the admission guard."""
        return {
            "Route": (self.Route, pb.RouteRequest, pb.RouteResponse),
            "Explain": (self.Explain, pb.RouteRequest, pb.Explanation),
            "ReportUsage": (self.ReportUsage, pb.UsageReport, pb.Ack),
            "GetInventory": (self.GetInventory, pb.InventoryRequest, pb.Inventory),
        }

    async def Route(
        self, request: pb.RouteRequest, context: grpc.aio.ServicerContext
    ) -> pb.RouteResponse:
        # The hot method: every step is inline (an awaited helper costs a coroutine per call),
        # and the wall clock is read only when a tracer will record it.
        try:
            requirements = route_requirements(request)
        except InvalidArgument as exc:
            await self._abort(
                context, "Route", code=grpc.StatusCode.INVALID_ARGUMENT, message=str(exc)
            )
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            # Routing now would take an in-flight slot that no caller will ever report.
            await self._abort(
                context,
                "Route",
                code=grpc.StatusCode.DEADLINE_EXCEEDED,
                message="deadline exceeded before routing",
            )
        tracer = self._tracer
        wall = time_ns() if tracer is not None else 0
        started = perf_counter()
        try:
            decision = await self._engine.route_async(requirements)
        except Exception:
            await self._failed(context, "Route", requirements=requirements)
        self._metrics.observe_decision(
            decision, perf_counter() - started, namespace=requirements.namespace
        )
        if tracer is not None:
            self._trace("Route", decision, namespace=requirements.namespace, started_ns=wall)
        return route_response(decision)

    async def Explain(
        self, request: pb.RouteRequest, context: grpc.aio.ServicerContext
    ) -> pb.Explanation:
        try:
            requirements = route_requirements(request)
        except InvalidArgument as exc:
            await self._abort(
                context, "Explain", code=grpc.StatusCode.INVALID_ARGUMENT, message=str(exc)
            )
        wall = time_ns()
        try:
            decision = await self._engine.explain_async(requirements)
        except Exception:
            await self._failed(context, "Explain", requirements=requirements)
        self._trace("Explain", decision, namespace=requirements.namespace, started_ns=wall)
        return explanation(decision)

    def _trace(self, method: str, decision: Decision, *, namespace: str, started_ns: int) -> None:
        if self._tracer is None:
            return
        try:
            self._tracer.record(
                decision,
                method=method,
                namespace=namespace,
                started_ns=started_ns,
                ended_ns=time_ns(),
            )
        except Exception:
            logger.exception("Recording the %s trace failed; the decision stands", method)

    async def ReportUsage(
        self, request: pb.UsageReport, context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        try:
            report = usage_report(request)
        except InvalidArgument as exc:
            await self._abort(
                context, "ReportUsage", code=grpc.StatusCode.INVALID_ARGUMENT, message=str(exc)
            )
        try:
            accepted = self._engine.report_usage(report)
        except Exception:
            logger.exception("ReportUsage failed for backend %r", report.backend)
            await self._abort(
                context,
                "ReportUsage",
                code=grpc.StatusCode.INTERNAL,
                message="usage report failed; see the operator log",
            )
        if accepted:
            self._metrics.observe_usage(report)
        return pb.Ack(accepted=accepted)

    async def GetInventory(
        self, request: pb.InventoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.Inventory:
        try:
            namespace = inventory_namespace(request)
        except InvalidArgument as exc:
            await self._abort(
                context, "GetInventory", code=grpc.StatusCode.INVALID_ARGUMENT, message=str(exc)
            )
        try:
            return inventory(self._engine, namespace=namespace)
        except Exception:
            logger.exception("GetInventory failed for namespace %r", namespace)
            await self._abort(
                context,
                "GetInventory",
                code=grpc.StatusCode.INTERNAL,
                message="GetInventory failed; see the operator log",
            )

    async def _failed(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        *,
        requirements: RequestRequirements,
    ) -> NoReturn:
        """End a call whose decision raised: logged with its traceback, INTERNAL to the caller."""
        logger.exception("%s failed for model %r", method, requirements.model)
        await self._abort(
            context,
            method,
            code=grpc.StatusCode.INTERNAL,
            message=f"{method} failed; see the operator log",
        )

    async def _abort(
        self, context: grpc.aio.ServicerContext, method: str, *, code: grpc.StatusCode, message: str
    ) -> NoReturn:
        self._metrics.observe_error(method, code.name)
        await context.abort(code, message)
        raise AssertionError("context.abort returned")
