"""The admission guard's read deadline, in process: calls on any event loop it serves."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from nexus_operator.serving.limits import AdmissionGuard, ServerLimits
from nexus_operator.serving.proto import router_pb2 as pb


class Aborted(Exception):
    pass


class Context:
    """The part of grpc.aio.ServicerContext the guard uses; `request` None never arrives."""

    def __init__(self, request: Message | None) -> None:
        self.request = request
        self.aborted: tuple[grpc.StatusCode, str] | None = None
        self.reading = asyncio.Event()

    async def read(self) -> Message:
        self.reading.set()
        if self.request is None:
            await asyncio.Event().wait()
        assert self.request is not None
        return self.request

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.aborted = (code, message)
        raise Aborted

    def cancelled(self) -> bool:
        return False


async def _serve_one_stalled_and_one_ready(guard: AdmissionGuard) -> list[object]:
    handled: list[object] = []

    async def handler(request: Any, _context: Any) -> Message:
        handled.append(request)
        return pb.Ack(accepted=True)

    guarded = guard._guarded("Route", handler)
    sweeper = asyncio.create_task(guard.sweep())
    stalled = Context(None)
    with pytest.raises(Aborted):
        await guarded(None, stalled)
    sweeper.cancel()
    ready = pb.RouteRequest(model="m")
    assert await guarded(None, Context(ready)) == pb.Ack(accepted=True)
    assert stalled.aborted is not None
    return [stalled.aborted[0], guard.reading, handled == [ready]]


def test_the_read_deadline_ends_stalled_calls_on_each_loop_the_guard_serves() -> None:
    """The guard keys its deadline table by the handler task and learns the loop that runs
    them from its first call; a later loop (a restarted server, another test) must be found
    again, not looked up under the old one."""
    errors: list[tuple[str, str]] = []
    guard = AdmissionGuard(
        ServerLimits(request_read_timeout_s=0.04),
        count_error=lambda method, code: errors.append((method, code)),
    )
    for _ in range(2):
        outcome = asyncio.run(_serve_one_stalled_and_one_ready(guard))
        assert outcome == [grpc.StatusCode.DEADLINE_EXCEEDED, 0, True]
    assert errors == [("Route", "DEADLINE_EXCEEDED")] * 2
    assert guard.admitted == 0


def test_a_call_cancelled_while_reading_stays_cancelled() -> None:
    """Only the sweeper's own cancellations become DEADLINE_EXCEEDED."""
    guard = AdmissionGuard(ServerLimits(), count_error=lambda method, code: None)

    async def handler(request: Any, _context: Any) -> Message:
        raise AssertionError("no request was read")

    async def cancel_while_reading() -> None:
        context = Context(None)
        call: asyncio.Future[Message] = asyncio.ensure_future(
            guard._guarded("Route", handler)(None, context)
        )
        await context.reading.wait()
        assert guard.reading == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert guard.reading == 0

    asyncio.run(cancel_while_reading())
