"""The ExternalProcessor servicer: one ext_proc stream per HTTP request, as a small state machine.

Request phase. Headers: the path and method pick the endpoint kind (else 404), `x-nexus-*`
headers may tighten the request, a declared content-length over the limit is 413. In BUFFERED
mode the headers are answered at once (Envoy then sends the whole body); in
FULL_DUPLEX_STREAMED mode (what GIE gateways configure) the headers answer is held until the
body is complete, because it carries the chosen endpoint — exactly GIE's reference picker's
sequence: headers response (+ dynamic metadata, clear_route_cache), then the body as
streamed_response chunks, end_of_stream on the last. The mode comes from the stream's
`protocol_config` (BUFFERED when the proxy does not say).

Decision: the body is parsed (openai_request), the engine decides (same engine, same slot
ledger as the gRPC Route), and the decision becomes either the routing headers (wire) or an
ImmediateResponse in OpenAI's error format (errors).

Response phase: the x-nexus-* client headers went out with the decision as dynamic metadata
(`nexus.gateway`), which the generated Envoy config turns into response headers, so Envoy skips
the response-headers message; the first body message brings the status (`response.code`
attribute) and marks the first byte. A proxy that does send response headers gets the x-nexus-*
headers added there. Body chunks feed the usage meter (JSON or SSE told from the body) and pass through (echoed back as streamed_response in FULL_DUPLEX_STREAMED mode).
When the stream ends — end of the response, client abort, upstream error, Envoy cancelling the
ext_proc stream — the usage is reported through `engine.report_usage` (the ReportUsage path),
which also releases the in-flight slot the decision took. `_Stream.finish` runs exactly once,
from the handler's `finally`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from itertools import count
from time import perf_counter

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc

from ...routing import (
    CredentialStore,
    Decision,
    Outcome,
    RequestRequirements,
    RoutingEngine,
    UsageReport,
)
from ..requests import DURATION_MS_MAX
from . import wire
from .endpoints import EndpointResolver, Target, upstream_name
from .errors import (
    BODY_REQUIRED,
    BODY_TOO_LARGE,
    ENDPOINT_UNRESOLVABLE,
    ROUTING_FAILED,
    GatewayError,
    decision_error,
    invalid,
)
from .metrics import GatewayMetrics
from .openai_request import (
    ParsedRequest,
    Tightening,
    endpoint_kind,
    is_model_list,
    model_list,
    parse_body,
    rewrite_model,
)
from .openai_request import tightening as read_tightening
from .usage import UsageMeter

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 4 * MiB
UPSTREAM_HEADER = "x-nexus-upstream"
# Client credentials never travel to a cloud Backend: the picker injects the Backend's own.
CLIENT_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key")
HEADER_VALUE_MAX = 256
INVALID = "INVALID"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """`namespace`: whose Backends and RoutingPolicies serve this listener (never a header)."""

    namespace: str = "default"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


class GatewayService(external_processor_pb2_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """Envoy's `envoy.service.ext_proc.v3.ExternalProcessor`, speaking EPP v1.0.0."""

    def __init__(
        self,
        engine: RoutingEngine,
        *,
        settings: GatewaySettings,
        credentials: CredentialStore,
        resolver: EndpointResolver,
        metrics: GatewayMetrics,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.credentials = credentials
        self.resolver = resolver
        self.metrics = metrics
        # Slot ids share the engine's ledger with gRPC clients' request ids: a random prefix
        # keeps a client's "gw-1" from ever naming one of these.
        self._prefix = f"gw-{secrets.token_hex(6)}-"
        self._ids = count(1)

    async def Process(
        self,
        request_iterator: AsyncIterator[wire.ProcessingRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        stream = _Stream(self, f"{self._prefix}{next(self._ids)}")
        self.metrics.active_streams += 1
        try:
            # context.read()/write() rather than `async for` over request_iterator: mixing the
            # iterator with context.write() stalls streams for seconds under load (measured;
            # docs/gateway.md "Performance").
            while True:
                request = await context.read()
                if request is grpc.aio.EOF:
                    break
                for response in await stream.handle(request):
                    await context.write(response)
                if stream.closed:
                    return
            stream.ended_cleanly = True
        finally:
            self.metrics.active_streams -= 1
            stream.finish()

    def models(self) -> list[str]:
        """Every model the configured namespace's Backends offer, and every alias name."""
        ns = self.engine.registry.snapshot.namespace(self.settings.namespace)
        names = {model for view in ns.backends.values() for model in view.models}
        return sorted(names | set(ns.aliases))

    def backend_of_endpoint(self, endpoint: str) -> str | None:
        """The configured namespace's Backend whose URL resolves (cached) to `endpoint`."""
        backends = self.engine.registry.snapshot.namespace(self.settings.namespace).backends
        for name, view in backends.items():
            target = self.resolver.cached(view.url)
            if target is not None and target.endpoint == endpoint:
                return name
        return None

    async def subset_names(self, subset: frozenset[str]) -> frozenset[str]:
        """Names of the Backends whose endpoint is inside the proxy's subset hint."""
        backends = self.engine.registry.snapshot.namespace(self.settings.namespace).backends
        names = []
        for name, view in backends.items():
            target = self.resolver.cached(view.url) or await self.resolver.target(view.url)
            if target.endpoint is not None and target.endpoint in subset:
                names.append(name)
        return frozenset(names)


@dataclass(slots=True)
class _Routed:
    """What the response phase needs about a routed request."""

    decision: Decision
    requirements: RequestRequirements
    client_headers: list[tuple[str, str]]
    started: float
    meter: UsageMeter
    status: int = 0
    first_byte: float | None = None
    endpoint: str | None = None  # where the picker sent it (None for a cloud route)
    served: str | None = None  # where the proxy says it went, when it says
    responded: bool = False  # any response-phase message arrived


class _Stream:
    __slots__ = (
        "_body",
        "_headers",
        "_kind",
        "_request_mode",
        "_response_mode",
        "_routed",
        "_service",
        "_subset",
        "_tighten",
        "closed",
        "ended_cleanly",
        "finished",
        "request_id",
    )

    def __init__(self, service: GatewayService, request_id: str) -> None:
        self._service = service
        self.request_id = request_id
        self._request_mode = wire.BUFFERED
        self._response_mode = wire.NONE
        self._kind: str | None = None
        self._headers: dict[str, str] = {}
        self._tighten = Tightening()
        self._subset: frozenset[str] | None = None
        self._body = bytearray()
        self._routed: _Routed | None = None
        self.closed = False
        self.ended_cleanly = False
        self.finished = False

    async def handle(self, request: wire.ProcessingRequest) -> list[wire.ProcessingResponse]:
        if request.HasField("protocol_config"):
            config = request.protocol_config
            self._request_mode = config.request_body_mode or wire.BUFFERED
            self._response_mode = config.response_body_mode
        which = request.WhichOneof("request")
        try:
            if which == "request_headers":
                return self._on_request_headers(request)
            if which == "request_body":
                return await self._on_request_body(request)
            if which == "request_trailers":
                return await self._on_request_trailers()
            if which == "response_headers":
                return self._on_response_headers(request)
            if which == "response_body":
                return self._on_response_body(request)
            if which == "response_trailers":
                self.finish()
                return [wire.continue_response_trailers()]
        except GatewayError as error:
            return [self._refuse(error)]
        except Exception:
            # A bug must not become Envoy's 500 (or a hung request): refuse before the
            # decision, pass the response through after it.
            logger.exception("gateway stream %s failed on %s", self.request_id, which)
            if self._routed is None and which is not None and which.startswith("request"):
                return [self._refuse(_internal())]
            return _passthrough(request, self._response_mode)
        return []

    # Request phase

    def _on_request_headers(self, request: wire.ProcessingRequest) -> list[wire.ProcessingResponse]:
        message = request.request_headers
        headers = self._headers = wire.header_map(message)
        method, path = headers.get(":method", ""), headers.get(":path", "")
        if is_model_list(method, path):
            self.closed = True
            self._service.metrics.observe_request("MODELS", 200)
            return [wire.immediate(200, model_list(self._service.models()))]
        self._kind = endpoint_kind(method, path)
        self._tighten = read_tightening(headers)
        self._subset = wire.subset_hint(request)
        length = headers.get("content-length")
        limit = self._service.settings.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise _too_large(limit)
        if message.end_of_stream:
            raise invalid(BODY_REQUIRED, "the request has no body; send an OpenAI JSON body")
        if self._request_mode == wire.FULL_DUPLEX_STREAMED:
            return []  # answered with the decision, once the body is complete
        return [wire.continue_request_headers()]

    async def _on_request_body(
        self, request: wire.ProcessingRequest
    ) -> list[wire.ProcessingResponse]:
        if self._kind is None or self._routed is not None:
            return [wire.continue_request_body()]
        message = request.request_body
        limit = self._service.settings.max_body_bytes
        if len(self._body) + len(message.body) > limit:
            raise _too_large(limit)
        self._body += message.body
        if not message.end_of_stream:
            if self._request_mode == wire.FULL_DUPLEX_STREAMED:
                return []
            if self._request_mode == wire.BUFFERED_PARTIAL:
                raise _too_large(limit)  # the proxy's buffer filled before the body ended
            return [wire.continue_request_body()]
        return await self._decide()

    async def _on_request_trailers(self) -> list[wire.ProcessingResponse]:
        """Trailers end a FULL_DUPLEX_STREAMED body that had no end_of_stream chunk."""
        responses: list[wire.ProcessingResponse] = []
        if self._kind is not None and self._routed is None and self._body:
            responses = await self._decide()
            if self.closed:
                return responses
        return [*responses, wire.continue_request_trailers()]

    async def _decide(self) -> list[wire.ProcessingResponse]:
        service = self._service
        started = perf_counter()
        only = await service.subset_names(self._subset) if self._subset is not None else None
        assert self._kind is not None
        parsed = parse_body(
            bytes(self._body),
            kind=self._kind,
            namespace=service.settings.namespace,
            tighten=self._tighten,
            request_id=self.request_id,
            only_backends=only,
        )
        decision = await self._route(parsed.requirements)
        service.metrics.observe_decision(perf_counter() - started)
        if decision.outcome is not Outcome.ROUTED or decision.backend is None:
            raise decision_error(decision)
        backend = decision.backend
        try:  # the decision took a slot: anything failing before _routed exists gives it back
            target = service.resolver.cached(backend.url) or await service.resolver.target(
                backend.url
            )
            if not target.cloud and target.endpoint is None:
                raise GatewayError(
                    503,
                    ENDPOINT_UNRESOLVABLE,
                    f"backend {backend.namespace}/{backend.name} was chosen but its URL does not "
                    "resolve to an address",
                )
            client_headers = _client_headers(decision)
            responses = self._forward(
                decision, parsed, target=target, client_headers=client_headers
            )
        except BaseException:
            service.engine.release_slot(backend.namespace, backend.name, request_id=self.request_id)
            raise
        self._routed = _Routed(
            decision=decision,
            requirements=parsed.requirements,
            client_headers=client_headers,
            started=started,
            meter=UsageMeter(prompt_estimate=parsed.requirements.estimated_tokens),
            endpoint=target.endpoint,
        )
        service.metrics.observe_request(Outcome.ROUTED.value, 0)
        return responses

    async def _route(self, requirements: RequestRequirements) -> Decision:
        engine = self._service.engine
        try:
            return await engine.route_async(requirements)
        except Exception:
            logger.exception("gateway routing failed for model %r", requirements.model)
            raise GatewayError(
                503, ROUTING_FAILED, "routing failed; see the picker's log"
            ) from None

    def _forward(
        self,
        decision: Decision,
        parsed: ParsedRequest,
        *,
        target: Target,
        client_headers: wire.Headers,
    ) -> list[wire.ProcessingResponse]:
        backend = decision.backend
        assert backend is not None
        set_headers: list[tuple[str, str]] = []
        remove: list[str] = []
        # Routing headers come from the picker only: a client's own copy is dropped, or it
        # could steer Envoy's route past the decision (e.g. to a cloud cluster).
        if target.endpoint is not None:
            set_headers.append((wire.DESTINATION_KEY, target.endpoint))
        elif wire.DESTINATION_KEY in self._headers:
            remove.append(wire.DESTINATION_KEY)
        if not target.cloud and UPSTREAM_HEADER in self._headers:
            remove.append(UPSTREAM_HEADER)
        if target.cloud:
            key = (backend.namespace, backend.name)
            set_headers.append((UPSTREAM_HEADER, upstream_name(*key)))
            credential = self._service.credentials.header(key)
            injected = credential.header_name.lower() if credential is not None else None
            remove.extend(h for h in CLIENT_CREDENTIAL_HEADERS if h != injected)
            if credential is not None:
                set_headers.append((credential.header_name.lower(), credential.header_value))
        body: bytes | None = None
        if decision.model != parsed.requirements.model:
            body = rewrite_model(parsed, decision.model)
            if "content-length" in self._headers:
                set_headers.append(("content-length", str(len(body))))
        if self._request_mode == wire.FULL_DUPLEX_STREAMED:
            return [
                wire.routed_request_headers(
                    set_headers,
                    remove=remove,
                    endpoint=target.endpoint,
                    client_headers=client_headers,
                ),
                *wire.streamed_request_body(body if body is not None else bytes(self._body)),
            ]
        return [
            wire.routed_buffered_body(
                set_headers,
                remove=remove,
                endpoint=target.endpoint,
                body=body,
                client_headers=client_headers,
            )
        ]

    def _refuse(self, error: GatewayError) -> wire.ProcessingResponse:
        self.closed = True
        outcome = str(error.nexus.get("outcome", INVALID))
        self._service.metrics.observe_request(outcome, error.status)
        headers = {}
        if error.retry_after_s is not None:
            headers["retry-after"] = str(error.retry_after_s)
        policy = error.nexus.get("policy")
        if policy:
            headers["x-nexus-policy"] = _header_value(str(policy))
        return wire.immediate(error.status, error.body(), headers=headers, details=error.code)

    # Response phase

    def _on_response_headers(
        self, request: wire.ProcessingRequest
    ) -> list[wire.ProcessingResponse]:
        routed = self._routed
        if routed is None:
            return [wire.response_headers(())]
        routed.responded = True
        headers = wire.header_map(request.response_headers)
        status = headers.get(":status", "")
        routed.status = int(status) if status.isdigit() else 0
        routed.served = wire.served_endpoint(request)
        routed.meter.start(headers.get("content-type", ""))
        if routed.first_byte is None:
            routed.first_byte = perf_counter()
        # Proxies configured to send response headers (not the generated config, which adds
        # these from the routed dynamic metadata) get the client headers here.
        responses = [wire.response_headers(routed.client_headers)]
        if request.response_headers.end_of_stream:
            self.finish()
        return responses

    def _on_response_body(self, request: wire.ProcessingRequest) -> list[wire.ProcessingResponse]:
        message = request.response_body
        routed = self._routed
        if routed is not None:
            # Without a response-headers message (the generated config skips it) the first
            # body message brings the status (`response.code` attribute) and the served
            # endpoint, and its arrival is the first byte.
            routed.responded = True
            if not routed.status:
                routed.status = wire.response_status(request)
            if routed.served is None:
                routed.served = wire.served_endpoint(request)
            if routed.first_byte is None and (message.body or message.end_of_stream):
                routed.first_byte = perf_counter()
            routed.meter.feed(message.body)
        if message.end_of_stream:
            self.finish()
        if self._response_mode == wire.FULL_DUPLEX_STREAMED:
            return wire.streamed_response_body(message.body, end_of_stream=message.end_of_stream)
        return [wire.continue_response_body()]

    # End of stream

    def finish(self) -> None:
        """Report usage and release the slot; exactly once, however the stream ended."""
        if self.finished:
            return
        self.finished = True
        routed = self._routed
        if routed is None:
            return
        try:
            self._report(routed)
        except Exception:
            logger.exception("gateway usage accounting failed for %s", self.request_id)

    def _report(self, routed: _Routed) -> None:
        service = self._service
        decision = routed.decision
        backend = decision.backend
        assert backend is not None
        now = perf_counter()
        status = routed.status
        if status:
            success = status < 500
        elif self._response_mode != wire.NONE and not routed.responded:
            # The proxy streams response bodies but sent no response message at all: it skips
            # response headers (envoy-config --skip-response-headers) and the response had no
            # body, so its status never reached the picker. A completion without a body is
            # not a success.
            success = False
        else:
            # No status from a proxy that sends no response phase: fine when it closed cleanly.
            success = self.ended_cleanly
        usage = routed.meter.result()
        served_name = backend.name
        # The proxy usually reports the endpoint it was given: only another one needs the scan
        # over the namespace's Backends.
        if routed.served is not None and routed.served != routed.endpoint:
            served_name = service.backend_of_endpoint(routed.served) or backend.name
        first = routed.first_byte
        service.engine.report_usage(
            UsageReport(
                backend=served_name,
                model=decision.model,
                namespace=backend.namespace,
                policy=decision.policy,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                success=success,
                latency_ms=min((now - routed.started) * 1000, DURATION_MS_MAX),
                ttft_ms=min((first - routed.started) * 1000, DURATION_MS_MAX) if first else None,
                request_id=self.request_id,
            )
        )
        if served_name != backend.name:
            service.engine.release_slot(backend.namespace, backend.name, request_id=self.request_id)
        service.metrics.observe_usage(estimated=usage.estimated, success=success)


def _client_headers(decision: Decision) -> list[tuple[str, str]]:
    backend = decision.backend
    assert backend is not None
    headers = [
        ("x-nexus-backend", f"{backend.namespace}/{backend.name}"),
        ("x-nexus-model", _header_value(decision.model)),
        ("x-nexus-route-reason", _header_value(decision.reason)),
    ]
    if decision.policy:
        headers.append(("x-nexus-policy", _header_value(decision.policy)))
    if decision.budget_state is not None:
        headers.append(("x-nexus-budget", decision.budget_state.value))
    if decision.fallback_used:
        headers.append(("x-nexus-fallback", "true"))
    return headers


def _header_value(text: str) -> str:
    """Printable ASCII only, at most HEADER_VALUE_MAX characters."""
    if text.isascii() and text.isprintable() and len(text) <= HEADER_VALUE_MAX:
        return text
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in text[:HEADER_VALUE_MAX])


def _internal() -> GatewayError:
    return GatewayError(503, ROUTING_FAILED, "the picker failed; see its log")


def _passthrough(request: wire.ProcessingRequest, mode: int) -> list[wire.ProcessingResponse]:
    """The answer that lets a response phase message through unchanged."""
    which = request.WhichOneof("request")
    if which == "response_headers":
        return [wire.response_headers(())]
    if which == "response_body":
        body = request.response_body
        if mode == wire.FULL_DUPLEX_STREAMED:
            return wire.streamed_response_body(body.body, end_of_stream=body.end_of_stream)
        return [wire.continue_response_body()]
    if which == "response_trailers":
        return [wire.continue_response_trailers()]
    if which == "request_trailers":
        return [wire.continue_request_trailers()]
    return [wire.continue_request_body()]


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, BODY_TOO_LARGE, f"the request body is larger than {limit} bytes", param=None
    )
