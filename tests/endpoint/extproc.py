"""A raw ext_proc client standing in for Envoy's side of the stream, and message builders.

It sends exactly what Envoy sends (ProcessingRequest messages with protocol_config on the
first one, headers as raw_value, metadata_context for the subset hint) over a real gRPC
stream to a live GatewayServer on a loopback port.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from prometheus_client import CollectorRegistry

from nexus_operator.routing import CredentialStore, Registry, RoutingEngine
from nexus_operator.serving.gateway import GatewayServer, GatewaySettings

BUFFERED = processing_mode_pb2.ProcessingMode.BUFFERED
FULL_DUPLEX = processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED
NONE = processing_mode_pb2.ProcessingMode.NONE
CHAT = "/v1/chat/completions"


def headers(pairs: Mapping[str, str], *, end_of_stream: bool = False) -> ext.HttpHeaders:
    return ext.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]
        ),
        end_of_stream=end_of_stream,
    )


def request_headers(
    *,
    path: str = CHAT,
    method: str = "POST",
    extra: Mapping[str, str] | None = None,
    body_mode: int = BUFFERED,
    response_mode: int = NONE,
    subset: Sequence[str] | str | None = None,
    content_length: int | None = None,
    end_of_stream: bool = False,
) -> ext.ProcessingRequest:
    pairs = {":method": method, ":path": path, ":authority": "gateway", **(extra or {})}
    if content_length is not None:
        pairs["content-length"] = str(content_length)
    request = ext.ProcessingRequest(
        request_headers=headers(pairs, end_of_stream=end_of_stream),
        protocol_config=ext.ProtocolConfiguration(
            request_body_mode=body_mode, response_body_mode=response_mode
        ),
    )
    if subset is not None:
        hint = request.metadata_context.filter_metadata["envoy.lb.subset_hint"]
        if isinstance(subset, str):
            hint.fields["x-gateway-destination-endpoint-subset"].string_value = subset
        else:
            values = hint.fields["x-gateway-destination-endpoint-subset"].list_value
            for endpoint in subset:
                values.values.add().string_value = endpoint
    return request


def request_body(body: bytes, *, end_of_stream: bool = True) -> ext.ProcessingRequest:
    return ext.ProcessingRequest(request_body=ext.HttpBody(body=body, end_of_stream=end_of_stream))


def response_headers(
    status: int = 200,
    *,
    content_type: str = "application/json",
    served: str | None = None,
    end_of_stream: bool = False,
) -> ext.ProcessingRequest:
    request = ext.ProcessingRequest(
        response_headers=headers(
            {":status": str(status), "content-type": content_type}, end_of_stream=end_of_stream
        )
    )
    if served is not None:
        lb = request.metadata_context.filter_metadata["envoy.lb"]
        lb.fields["x-gateway-destination-endpoint-served"].string_value = served
    return request


def response_body(body: bytes, *, end_of_stream: bool = True) -> ext.ProcessingRequest:
    return ext.ProcessingRequest(response_body=ext.HttpBody(body=body, end_of_stream=end_of_stream))


def chat(model: str = "llama3:8b", **fields: Any) -> bytes:
    document = {"model": model, "messages": [{"role": "user", "content": "hello " * 40}]}
    document.update(fields)
    return json.dumps(document).encode()


def set_headers(common: ext.CommonResponse) -> dict[str, str]:
    return {
        h.header.key: (h.header.raw_value or h.header.value.encode()).decode()
        for h in common.header_mutation.set_headers
    }


def immediate_headers(response: ext.ProcessingResponse) -> dict[str, str]:
    return {
        h.header.key: (h.header.raw_value or h.header.value.encode()).decode()
        for h in response.immediate_response.headers.set_headers
    }


def destination_metadata(response: ext.ProcessingResponse) -> str:
    lb = response.dynamic_metadata.fields["envoy.lb"].struct_value
    return str(lb.fields["x-gateway-destination-endpoint"].string_value)


class ExtProcStream:
    """One ext_proc stream: send requests one by one, read answers one by one."""

    def __init__(self, stub: external_processor_pb2_grpc.ExternalProcessorStub) -> None:
        self._queue: asyncio.Queue[ext.ProcessingRequest | None] = asyncio.Queue()
        self.call = stub.Process(self._requests())

    async def _requests(self) -> AsyncIterator[ext.ProcessingRequest]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def send(self, *requests: ext.ProcessingRequest) -> None:
        for request in requests:
            await self._queue.put(request)

    async def recv(self) -> ext.ProcessingResponse:
        response = await asyncio.wait_for(self.call.read(), timeout=5)
        assert response is not grpc.aio.EOF, "the picker closed the stream"
        return response

    async def recv_eof(self) -> bool:
        return await asyncio.wait_for(self.call.read(), timeout=5) is grpc.aio.EOF

    async def close(self) -> None:
        await self._queue.put(None)
        await asyncio.wait_for(self.call.code(), timeout=5)

    def cancel(self) -> None:
        self.call.cancel()


@asynccontextmanager
async def live_gateway(
    registry: Registry,
    *,
    credentials: CredentialStore | None = None,
    max_body_bytes: int = 4 * 1024 * 1024,
) -> AsyncIterator[tuple[GatewayServer, external_processor_pb2_grpc.ExternalProcessorStub]]:
    """A GatewayServer on a free loopback port and a stub connected to it."""
    server = GatewayServer(
        RoutingEngine(registry),
        settings=GatewaySettings(namespace="default", max_body_bytes=max_body_bytes),
        credentials=credentials if credentials is not None else registry.credentials,
        address="127.0.0.1:0",
        metrics_registry=CollectorRegistry(),
    )
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield server, external_processor_pb2_grpc.ExternalProcessorStub(channel)
    finally:
        await server.stop(0.5)
