"""The Envoy ext_proc / Endpoint Picker Protocol (EPP v1.0.0) messages the gateway reads and writes.

Routed requests carry the chosen endpoint twice, as the protocol asks: the request header
`x-gateway-destination-endpoint: <ip:port>` and the dynamic metadata
`envoy.lb` → `x-gateway-destination-endpoint` (same value). The proxy may narrow the choice with
the filter metadata `envoy.lb.subset_hint` → `x-gateway-destination-endpoint-subset` (a list of
`ip:port`, or one comma-separated string), and may report where the request went with
`envoy.lb` → `x-gateway-destination-endpoint-served` on the response.

Bodies that the picker sends back in FULL_DUPLEX_STREAMED mode go out as `streamed_response`
chunks of at most BODY_CHUNK_BYTES (GIE's 62,000-byte margin under Envoy's 64 KiB), the last
one with end_of_stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2

DESTINATION_NAMESPACE = "envoy.lb"
DESTINATION_KEY = "x-gateway-destination-endpoint"
SERVED_KEY = "x-gateway-destination-endpoint-served"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_KEY = "x-gateway-destination-endpoint-subset"
# The x-nexus-* client response headers travel as dynamic metadata in this namespace: the
# generated Envoy config adds each one to the response from it (so the picker needs no
# response-headers message), and omits the ones left unset.
CLIENT_HEADERS_NAMESPACE = "nexus.gateway"
# The ext_proc filter's namespace for the `response_attributes` it sends (response.code).
ATTRIBUTES_NAMESPACE = "envoy.filters.http.ext_proc"
STATUS_ATTRIBUTE = "response.code"
BODY_CHUNK_BYTES = 62_000

BodyMode = processing_mode_pb2.ProcessingMode.BodySendMode
NONE = processing_mode_pb2.ProcessingMode.NONE
STREAMED = processing_mode_pb2.ProcessingMode.STREAMED
BUFFERED = processing_mode_pb2.ProcessingMode.BUFFERED
BUFFERED_PARTIAL = processing_mode_pb2.ProcessingMode.BUFFERED_PARTIAL
FULL_DUPLEX_STREAMED = processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

ProcessingRequest = ext.ProcessingRequest
ProcessingResponse = ext.ProcessingResponse

Headers = Sequence[tuple[str, str]]


# Reading


def header_map(headers: ext.HttpHeaders) -> dict[str, str]:
    """Lower-cased name → value (raw_value preferred, as Envoy sends it); the last one wins."""
    out: dict[str, str] = {}
    for header in headers.headers.headers:
        raw = header.raw_value
        out[header.key.lower()] = raw.decode("utf-8", "replace") if raw else header.value
    return out


def subset_hint(request: ext.ProcessingRequest) -> frozenset[str] | None:
    """The endpoints the proxy allows (None: no hint). An empty hint allows nothing."""
    if not request.HasField("metadata_context"):
        return None
    filter_metadata = request.metadata_context.filter_metadata
    if SUBSET_NAMESPACE not in filter_metadata:
        return None
    fields = filter_metadata[SUBSET_NAMESPACE].fields
    if SUBSET_KEY not in fields:
        return None
    return frozenset(_endpoints(fields[SUBSET_KEY]))


def served_endpoint(request: ext.ProcessingRequest) -> str | None:
    """`envoy.lb` / x-gateway-destination-endpoint-served, when the proxy reports it."""
    if not request.HasField("metadata_context"):
        return None
    filter_metadata = request.metadata_context.filter_metadata
    if DESTINATION_NAMESPACE not in filter_metadata:
        return None
    value = filter_metadata[DESTINATION_NAMESPACE].fields.get(SERVED_KEY)
    if value is None or value.WhichOneof("kind") != "string_value":
        return None
    return value.string_value.strip() or None


def response_status(request: ext.ProcessingRequest) -> int:
    """The response status from the `response.code` attribute (0 when not sent)."""
    if ATTRIBUTES_NAMESPACE not in request.attributes:
        return 0
    value = request.attributes[ATTRIBUTES_NAMESPACE].fields.get(STATUS_ATTRIBUTE)
    if value is None:
        return 0
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return int(value.number_value)
    if kind == "string_value" and value.string_value.isdigit():
        return int(value.string_value)
    return 0


def _endpoints(value: struct_pb2.Value) -> Iterable[str]:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        items: Iterable[str] = [value.string_value]
    elif kind == "list_value":
        items = [v.string_value for v in value.list_value.values if v.HasField("string_value")]
    else:
        items = []
    for item in items:
        for part in item.split(","):
            endpoint = part.strip()
            if endpoint:
                yield endpoint


# Writing


def header_option(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, raw_value=value.encode()),
        append_action=_OVERWRITE,
    )


def header_mutation(set_headers: Headers, remove: Sequence[str] = ()) -> ext.HeaderMutation:
    return ext.HeaderMutation(
        set_headers=[header_option(k, v) for k, v in set_headers], remove_headers=list(remove)
    )


def routed_metadata(endpoint: str | None, client_headers: Headers = ()) -> struct_pb2.Struct:
    """{"envoy.lb": {"x-gateway-destination-endpoint": endpoint}} (when routed to an
    endpoint) and {"nexus.gateway": {header: value}} for the client response headers."""
    metadata = struct_pb2.Struct()
    if endpoint is not None:
        metadata.fields[DESTINATION_NAMESPACE].struct_value.fields[
            DESTINATION_KEY
        ].string_value = endpoint
    if client_headers:
        fields = metadata.fields[CLIENT_HEADERS_NAMESPACE].struct_value.fields
        for name, value in client_headers:
            fields[name].string_value = value
    return metadata


def continue_request_headers() -> ext.ProcessingResponse:
    return ext.ProcessingResponse(request_headers=ext.HeadersResponse())


def routed_request_headers(
    set_headers: Headers,
    *,
    remove: Sequence[str] = (),
    endpoint: str | None,
    client_headers: Headers = (),
) -> ext.ProcessingResponse:
    """The request-headers answer of a routed request (FULL_DUPLEX_STREAMED: sent once the body
    is complete). clear_route_cache makes Envoy re-match routes on the headers just set."""
    response = ext.ProcessingResponse(
        request_headers=ext.HeadersResponse(
            response=ext.CommonResponse(
                header_mutation=header_mutation(set_headers, remove), clear_route_cache=True
            )
        )
    )
    if endpoint is not None or client_headers:
        response.dynamic_metadata.CopyFrom(routed_metadata(endpoint, client_headers))
    return response


def routed_buffered_body(
    set_headers: Headers,
    *,
    remove: Sequence[str] = (),
    endpoint: str | None,
    body: bytes | None,
    client_headers: Headers = (),
) -> ext.ProcessingResponse:
    """The request-body answer of a routed request in BUFFERED mode: header mutations still
    apply (the headers have not left yet), and `body` (when not None) replaces the body."""
    common = ext.CommonResponse(
        header_mutation=header_mutation(set_headers, remove), clear_route_cache=True
    )
    if body is not None:
        common.body_mutation.body = body
    response = ext.ProcessingResponse(request_body=ext.BodyResponse(response=common))
    if endpoint is not None or client_headers:
        response.dynamic_metadata.CopyFrom(routed_metadata(endpoint, client_headers))
    return response


def streamed_request_body(body: bytes) -> list[ext.ProcessingResponse]:
    """The whole request body as streamed_response chunks, end_of_stream on the last."""
    return [
        ext.ProcessingResponse(request_body=ext.BodyResponse(response=common))
        for common in _streamed_chunks(body, end_of_stream=True)
    ]


def streamed_response_body(body: bytes, *, end_of_stream: bool) -> list[ext.ProcessingResponse]:
    """A response body chunk echoed back unchanged (FULL_DUPLEX_STREAMED response mode)."""
    return [
        ext.ProcessingResponse(response_body=ext.BodyResponse(response=common))
        for common in _streamed_chunks(body, end_of_stream=end_of_stream)
    ]


def _streamed_chunks(body: bytes, *, end_of_stream: bool) -> list[ext.CommonResponse]:
    if not body:
        return [_streamed(b"", end_of_stream)]
    chunks = range(0, len(body), BODY_CHUNK_BYTES)
    last = chunks[-1]
    return [
        _streamed(body[start : start + BODY_CHUNK_BYTES], end_of_stream and start == last)
        for start in chunks
    ]


def _streamed(chunk: bytes, end_of_stream: bool) -> ext.CommonResponse:
    return ext.CommonResponse(
        body_mutation=ext.BodyMutation(
            streamed_response=ext.StreamedBodyResponse(body=chunk, end_of_stream=end_of_stream)
        )
    )


def continue_request_body() -> ext.ProcessingResponse:
    return ext.ProcessingResponse(request_body=ext.BodyResponse())


def continue_response_body() -> ext.ProcessingResponse:
    return ext.ProcessingResponse(response_body=ext.BodyResponse())


def continue_request_trailers() -> ext.ProcessingResponse:
    return ext.ProcessingResponse(request_trailers=ext.TrailersResponse())


def continue_response_trailers() -> ext.ProcessingResponse:
    return ext.ProcessingResponse(response_trailers=ext.TrailersResponse())


def response_headers(set_headers: Headers) -> ext.ProcessingResponse:
    common = ext.CommonResponse(header_mutation=header_mutation(set_headers))
    return ext.ProcessingResponse(response_headers=ext.HeadersResponse(response=common))


def immediate(
    status: int, body: bytes, *, headers: Mapping[str, str] | None = None, details: str = ""
) -> ext.ProcessingResponse:
    """An answer the proxy sends to the client instead of forwarding (JSON body)."""
    set_headers = [("content-type", "application/json"), *(headers or {}).items()]
    return ext.ProcessingResponse(
        immediate_response=ext.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=header_mutation(set_headers),
            body=body,
            details=details,
        )
    )
