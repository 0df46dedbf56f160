"""A Router server that decides nothing: the floor that grpc.aio and ghz set on this machine.

`bench_grpc.py` measures it with exactly the same ghz runs as the real server, so the
difference between the two rows is what routing costs; run alone it prints its port. The first
argument picks the event loop as `--event-loop` does (default asyncio, grpc.aio's own floor).
"""

from __future__ import annotations

import sys

import grpc

from nexus_operator.serving import event_loop
from nexus_operator.serving.proto import router_pb2, router_pb2_grpc


class NoopRouter(router_pb2_grpc.RouterServicer):
    async def Route(
        self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RouteResponse:
        return router_pb2.RouteResponse(model=request.model)

    async def Explain(
        self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.Explanation:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the no-op server only routes")
        raise AssertionError("unreachable")

    async def ReportUsage(
        self, request: router_pb2.UsageReport, context: grpc.aio.ServicerContext
    ) -> router_pb2.Ack:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the no-op server only routes")
        raise AssertionError("unreachable")

    async def GetInventory(
        self, request: router_pb2.InventoryRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.Inventory:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the no-op server only routes")
        raise AssertionError("unreachable")


async def serve() -> None:
    server = grpc.aio.server()
    router_pb2_grpc.add_RouterServicer_to_server(NoopRouter(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"serving on port {port}, no-op on {event_loop.running_loop_name()}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    event_loop.run(serve(), choice=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
