"""What one client may hold of the serving plane, and the admission guard that enforces it.

The grpc.aio concurrency limit (`maximum_concurrent_rpcs`) counts a call from the moment its
headers arrive, so a client that opens streams and never sends the request holds slots that no
one else can use. Instead every method is registered stream-unary on the server side (the wire
format of a unary call is the same): the handler starts when the headers arrive, reads the one
request message under a deadline, and only then counts the call against the cap. A stalled or
hostile client therefore exhausts only what HTTP/2 lets one connection hold
(`max_streams_per_connection`), for at most `request_read_timeout_s`, and keepalive enforcement
and the connection age/idle limits close connections that misbehave or linger.

A payload that does not decode never reaches a handler as an exception: the request
deserializer returns an `Undecodable` marker, the guard answers INVALID_ARGUMENT, counts it and
logs at most one line per burst.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError, Message

MiB = 1024 * 1024

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerLimits:
    """Per-server and per-connection limits; every field is a `run`/`serve` flag and a chart value."""

    max_concurrent_rpcs: int = 1000
    max_streams_per_connection: int = 1000
    request_read_timeout_s: float = 10.0
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    min_client_ping_interval_s: float = 10.0
    max_connection_idle_s: float = 900.0
    max_connection_age_s: float = 3600.0
    max_connection_age_grace_s: float = 30.0
    max_message_bytes: int = 4 * MiB

    def grpc_options(self) -> list[tuple[str, int]]:
        """Channel arguments of the grpc.aio server (grpc core names, milliseconds)."""
        ms = _ms
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_concurrent_streams", self.max_streams_per_connection),
            ("grpc.keepalive_time_ms", ms(self.keepalive_time_s)),
            ("grpc.keepalive_timeout_ms", ms(self.keepalive_timeout_s)),
            ("grpc.keepalive_permit_without_calls", 1),
            (
                "grpc.http2.min_recv_ping_interval_without_data_ms",
                ms(self.min_client_ping_interval_s),
            ),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.max_connection_idle_ms", ms(self.max_connection_idle_s)),
            ("grpc.max_connection_age_ms", ms(self.max_connection_age_s)),
            ("grpc.max_connection_age_grace_ms", ms(self.max_connection_age_grace_s)),
        ]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


_LATE = object()
"""What the guard reads in place of a request that missed the read deadline."""


class Undecodable:
    """What the request deserializer returns for bytes that are not the method's message."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def lenient_deserializer(message_type: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    parse = message_type.FromString

    def deserialize(data: bytes) -> Message | Undecodable:
        try:
            return parse(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            return Undecodable(str(exc) or type(exc).__name__)

    return deserialize


class BurstLog:
    """At most one warning per `interval_s`; the next one says how many were left out."""

    def __init__(self, log: logging.Logger, interval_s: float = 10.0) -> None:
        self._log = log
        self._interval_s = interval_s
        self._next = 0.0
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self._interval_s
        suppressed, self._suppressed = self._suppressed, 0
        if suppressed:
            self._log.warning(message + " (and %d more like it)", *args, suppressed)
        else:
            self._log.warning(message, *args)


ErrorCounter = Callable[[str, str], None]
Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]]
TaskOf = Callable[[asyncio.AbstractEventLoop], "asyncio.Task[Any] | None"]


def _task_of_loop() -> TaskOf:
    """The task a given event loop is running, as one C call. Python 3.11's
    `asyncio.current_task` is a Python function (it looks the running loop up, then reads the
    C-maintained table of running tasks); from 3.12 it is C itself."""
    if sys.version_info >= (3, 12):
        return asyncio.current_task
    running: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] = vars(asyncio.tasks)[
        "_current_tasks"
    ]
    return running.get


_task_of = _task_of_loop()


class AdmissionGuard:
    """Reads the request under a deadline, refuses undecodable ones, and caps admitted calls."""

    def __init__(self, limits: ServerLimits, *, count_error: ErrorCounter) -> None:
        self._limits = limits
        self._count_error = count_error
        self.admitted = 0
        self._undecodable_log = BurstLog(logger)
        # Calls waiting for their request: handler task → read deadline (time.monotonic). One
        # sweeper cancels the late ones, so a call costs a dict entry instead of a timer and a
        # task.
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        # The loop the handlers run on, learnt from the first call: the key of its running task.
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def reading(self) -> int:
        """Calls whose request message has not arrived yet."""
        return len(self._reading)

    async def sweep(self) -> None:
        """Run for the server's life: end calls whose request is later than the read deadline."""
        period = min(1.0, self._limits.request_read_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for task, deadline in list(self._reading.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    def register(
        self,
        server: grpc.aio.Server,
        *,
        service: str,
        methods: Mapping[str, tuple[Handler, type[Message], type[Message]]],
    ) -> None:
        """Register each method stream-unary behind this guard, as registered methods: grpc core
        then matches the method itself and keeps a request slot open per method, where a
        generic handler is looked up in Python per call (measured on the no-op server: ~6 %
        less CPU per call)."""
        server.add_registered_method_handlers(
            service,
            {
                name: grpc.stream_unary_rpc_method_handler(
                    self._guarded(name, handler),
                    request_deserializer=lenient_deserializer(request_type),
                    response_serializer=response_type.SerializeToString,
                )
                for name, (handler, request_type, response_type) in methods.items()
            },
        )

    def _guarded(
        self, method: str, handler: Handler
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]]:
        limit = self._limits.max_concurrent_rpcs
        timeout = self._limits.request_read_timeout_s
        reading = self._reading
        monotonic = time.monotonic
        task_of = _task_of

        async def guarded(_requests: Any, context: grpc.aio.ServicerContext) -> Message:
            # Runs once per call: the read is inline rather than an awaited helper, and the
            # handler task is found with one C call (see _task_of_loop).
            loop = self._loop
            task = task_of(loop) if loop is not None else None
            if task is None:
                task = self._learn_loop()
            reading[task] = monotonic() + timeout
            try:
                request = await context.read()
            except asyncio.CancelledError:
                if task not in self._expired:
                    raise
                self._expired.discard(task)
                task.uncancel()
                request = _LATE
            finally:
                del reading[task]
            if not isinstance(request, Message):
                await self._refuse(method, request, context=context)
            if self.admitted >= limit:
                await self._abort(
                    context,
                    method,
                    code=grpc.StatusCode.RESOURCE_EXHAUSTED,
                    message=f"more than {limit} calls in progress; retry",
                )
            self.admitted += 1
            try:
                return await handler(request, context)
            finally:
                self.admitted -= 1

        return guarded

    def _learn_loop(self) -> asyncio.Task[Any]:
        """The running task, remembering its loop for the next calls' one-call lookup."""
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        return task

    async def _refuse(
        self, method: str, request: object, *, context: grpc.aio.ServicerContext
    ) -> NoReturn:
        """End a call whose request never came whole: late, missing or undecodable."""
        if request is _LATE:
            timeout = self._limits.request_read_timeout_s
            await self._abort(
                context,
                method,
                code=grpc.StatusCode.DEADLINE_EXCEEDED,
                message=f"request message not received within {timeout:g}s",
            )
        if isinstance(request, Undecodable):
            self._undecodable_log.warning(
                "%s: undecodable request from %s: %s", method, context.peer(), request.error
            )
            await self._abort(
                context,
                method,
                code=grpc.StatusCode.INVALID_ARGUMENT,
                message=f"request is not a valid {method} message: {request.error}",
            )
        # EOF: a client that cancels before its message arrived (a load generator at the end
        # of its run) is not a malformed request.
        code = (
            grpc.StatusCode.CANCELLED if context.cancelled() else grpc.StatusCode.INVALID_ARGUMENT
        )
        await self._abort(context, method, code=code, message="no request message")

    async def _abort(
        self, context: grpc.aio.ServicerContext, method: str, *, code: grpc.StatusCode, message: str
    ) -> NoReturn:
        self._count_error(method, code.name)
        await context.abort(code, message)
        raise AssertionError("context.abort returned")
