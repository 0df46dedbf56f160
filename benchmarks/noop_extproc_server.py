"""An ext_proc server that decides nothing: the floor grpc.aio sets per gateway request.

It answers every message Envoy sends with a prebuilt response (the request body's answer
names the one endpoint given on the command line and, like the picker's, carries a client
header as dynamic metadata; the generated config skips response headers for both) through the same read/write loop and the
same grpc.aio server as the picker, so `bench_gateway.py` can tell the transport's CPU per
request from the picker's own. Usage: noop_extproc_server.py PORT IP:PORT.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc

from nexus_operator.serving.gateway import wire


def answers(endpoint: str) -> dict[str, wire.ProcessingResponse]:
    return {
        "request_headers": wire.continue_request_headers(),
        "request_body": wire.routed_buffered_body(
            [(wire.DESTINATION_KEY, endpoint)],
            endpoint=endpoint,
            body=None,
            client_headers=[("x-nexus-backend", "bench/noop")],
        ),
        "request_trailers": wire.continue_request_trailers(),
        "response_headers": wire.response_headers([("x-nexus-backend", "bench/noop")]),
        "response_body": wire.continue_response_body(),
        "response_trailers": wire.continue_response_trailers(),
    }


class NoopExternalProcessor(external_processor_pb2_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, endpoint: str) -> None:
        self._answers = answers(endpoint)

    async def Process(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                return
            await context.write(self._answers[request.WhichOneof("request")])


async def serve(port: int, endpoint: str) -> None:
    server = grpc.aio.server()
    external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(
        NoopExternalProcessor(endpoint), server
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2]))
