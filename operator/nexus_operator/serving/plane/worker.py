"""A serving worker process: a Registry and RoutingEngine replica fed by the control process,
and the servers one factory builds over it (the Router gRPC service; the gateway's external
processor beside it). It never talks to the API server and runs no control-loop work, so
nothing but decisions competes for its event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Protocol

from ...pipeline.runtime import RejectedRecord
from ...routing import Registry, RoutedEvent, RoutingEngine, UsageReport
from .. import event_loop as loops
from ..metrics import RoutingMetrics
from . import wire
from .counters import SharedCounters
from .inbox import Inbox, change_size
from .link import Batch, Link

logger = logging.getLogger(__name__)

METRICS_PERIOD_S = 1.0
# Decisions and reports reach the control process in one write per this many seconds at most.
FLUSH_DELAY_S = 0.002
SLOT_EXPIRY_PERIOD_S = 10.0


class PlaneServer(Protocol):
    async def start(self) -> int: ...

    async def stop(self, grace: float) -> None: ...


class ServerFactory(Protocol):
    """Builds a worker's servers over its engine; must pickle (it crosses the spawn)."""

    def __call__(
        self, engine: RoutingEngine, metrics: RoutingMetrics, *, ports: Sequence[int] | None
    ) -> Sequence[PlaneServer]:
        """`ports`: None for the first worker (configured addresses, port 0 picks one); then
        the ports the first worker bound, in server order."""
        ...


# Work a worker applies per loop turn at most, in registry objects (a Backend or policy
# written or deleted: ≈ 50 µs each with 500 Backends in a namespace, several times that on a
# busy machine); any other message (health, an outcome, totals, ...) costs a few µs and
# counts as 1/16 of one. A larger change is applied in slices, decisions running between them.
APPLY_SLICE_OBJECTS = 64
_UNITS_PER_OBJECT = 16

# What lives as long as the worker is frozen out of the collector's reach (gc.freeze after a
# collection): the imported modules and the servers once they run, the registry once it is
# synced, and the registry again after a burst of changes this large (the initial registry, a
# mass apply). Unfrozen, every full collection walked all of it: 80-150 ms pauses at 500
# Backends under churn (grpc leaves a reference cycle per call, so full collections come every
# few seconds), and 100s of ms at 10,000.
FREEZE_AFTER_BACKENDS = 1000


def freeze_heap() -> None:
    gc.collect()
    gc.freeze()


def worker_main(
    index: int,
    *,
    receive: Connection,
    send: Connection,
    counters: SharedCounters,
    factory: ServerFactory,
    log_level: str,
    event_loop: str = "auto",
) -> None:
    """Entry point of a spawned worker; `event_loop` as `--event-loop` (serving/event_loop.py)."""
    signal.signal(
        signal.SIGINT, signal.SIG_IGN
    )  # Ctrl-C reaches the control process, which stops us
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s %(name)s[worker {index}]: %(message)s",
    )
    link = Link(send=send, receive=receive, name=f"worker-{index}", flush_delay_s=FLUSH_DELAY_S)
    host = WorkerHost(index, link, counters=counters, factory=factory)
    loops.run(host.run(), choice=event_loop)


class WorkerHost:
    def __init__(
        self, index: int, link: Link, *, counters: SharedCounters, factory: ServerFactory
    ) -> None:
        self.index = index
        self._link = link
        self._counters = counters
        self._factory = factory
        self.registry = Registry()
        self.engine = RoutingEngine(self.registry)
        self.engine.events = self
        self.metrics = RoutingMetrics(self.registry)
        self._servers: list[PlaneServer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._routed: dict[tuple[str, str, str | None], tuple[RoutedEvent, int]] = {}
        self._done = asyncio.Event()
        self._stopping = False
        self._inbox = Inbox()
        self._drain_handle: asyncio.Handle | None = None
        self._burst = 0  # Backends written since the inbox was last empty

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._link.start(loop, on_batch=self._on_batch, on_closed=self._on_closed)
        loop.add_signal_handler(signal.SIGTERM, self._stop_soon, 5.0)
        self._spawn(self._ship_metrics())
        self._spawn(self._expire_slots())
        await self._done.wait()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Control → worker

    def _on_batch(self, batch: Batch) -> None:
        """Queue what arrived and apply the first step of it now (a change reaches decisions
        in the callback that read it, as in one process); the rest follows, a step per turn."""
        self._inbox.extend(batch)
        if self._drain_handle is None:
            self._drain()

    def _drain(self) -> None:
        """Apply queued messages until this turn's budget is spent; schedule the rest after
        the callbacks already waiting (decisions) have run."""
        self._drain_handle = None
        budget = APPLY_SLICE_OBJECTS * _UNITS_PER_OBJECT
        while self._inbox and budget > 0:
            message = self._inbox.take(budget // _UNITS_PER_OBJECT)
            if isinstance(message, wire.Change):
                budget -= change_size(message.change) * _UNITS_PER_OBJECT
            else:
                budget -= 1
            try:
                self._handle(message)
            except Exception:
                logger.exception("Serving worker could not apply %s", type(message).__name__)
        if self._inbox:
            self._drain_handle = asyncio.get_running_loop().call_soon(self._drain)
        elif self._burst:
            if self._burst >= FREEZE_AFTER_BACKENDS:
                freeze_heap()
            self._burst = 0

    def _handle(self, message: object) -> None:
        runtime = self.registry.runtime
        if isinstance(message, wire.Change):
            change = message.change
            self.registry.apply(change)
            self._burst += len(change.backends)
            for key in change.deleted_backends:
                runtime.forget_backend(*key)
            for key in change.deleted_policies:
                runtime.forget_policy(*key)
            for key, row in message.rows.items():
                runtime.backend(*key).bind_in_flight(self._counters, row)
        elif isinstance(message, wire.Health):
            cell = runtime.backend(*message.key)
            cell.health_state = message.state
            cell.latency_ms = message.latency_ms
            cell.last_error = message.last_error
            cell.last_probe_time = message.last_probe_time
        elif isinstance(message, wire.Outcome):
            self.engine.account_usage(message.report, spend=False)
        elif isinstance(message, wire.Totals):
            for namespace, name, period, usd in message.spend:
                runtime.policy(namespace, name).adopt_total(period, usd)
        elif isinstance(message, wire.Release):
            report = message.report
            found = self.engine.release_slot(
                report.namespace, report.backend, request_id=report.request_id
            )
            self._link.send(wire.Released(message.token, found))
        elif isinstance(message, wire.Serving):
            if message.serving and not self.registry.synced:
                freeze_heap()  # before health says SERVING
            self.registry.synced = message.serving
        elif isinstance(message, wire.Start):
            self._spawn(self._start(message.ports))
        elif isinstance(message, wire.Stop):
            self._stop_soon(message.grace_s)
        elif isinstance(message, wire.CredentialUpdate):
            store = self.registry.credentials
            if message.credential is not None:
                store.set(message.key, message.credential)
            elif message.problem is not None:
                store.set_problem(message.key, message.problem)
            else:
                store.forget(message.key)

    def _on_closed(self) -> None:
        """The control process is gone: stop serving rather than decide from a frozen copy."""
        if not self._stopping:
            logger.error("Control process closed the link; stopping")
            self._stop_soon(1.0)

    async def _start(self, ports: tuple[int, ...] | None) -> None:
        try:
            self._servers = list(self._factory(self.engine, self.metrics, ports=ports))
            bound = tuple([await server.start() for server in self._servers])
            freeze_heap()
        except Exception as exc:
            logger.exception("Serving worker %d could not start", self.index)
            self._link.send(wire.Failed(str(exc) or type(exc).__name__))
            self._link.close()
            self._done.set()
            return
        self._link.send(wire.Ready(bound))

    def _stop_soon(self, grace_s: float) -> None:
        if not self._stopping:
            self._stopping = True
            self._spawn(self._stop(grace_s))

    async def _stop(self, grace_s: float) -> None:
        """Drain every server, then send the last counters and usage before saying bye."""
        for server in self._servers:
            try:
                await server.stop(grace_s)
            except Exception:
                logger.exception("Serving worker %d: a server failed to stop", self.index)
        self._send_routed()
        self._send_metrics()
        self._link.send(wire.Bye())
        await asyncio.sleep(0)  # let the outbox flush
        self._link.close()
        self._done.set()

    async def _ship_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_PERIOD_S)
            self._send_metrics()

    def _send_metrics(self) -> None:
        self._link.send(wire.Metrics(self.metrics.counts()))
        families = [
            family
            for server in self._servers
            if (collector := getattr(server, "metrics", None)) is not None
            and collector is not self.metrics
            for family in collector.collect()
        ]
        if families:
            self._link.send(wire.Families(families))

    async def _expire_slots(self) -> None:
        while True:
            await asyncio.sleep(SLOT_EXPIRY_PERIOD_S)
            with contextlib.suppress(Exception):
                released = self.engine.expire_slots(datetime.now(UTC))
                if released:
                    logger.info("Released %d in-flight slots without a usage report", released)

    # EngineEvents: what this worker decided, for the control process to account

    def routed(self, record: RoutedEvent) -> None:
        """Folded per (backend, policy) until the end of this loop iteration: one message for
        many decisions, so accounting costs the control process little per decision."""
        key = (record.namespace, record.backend, record.policy)
        pending = self._routed
        if not pending:
            asyncio.get_running_loop().call_soon(self._send_routed)
        previous = pending.get(key)
        if previous is None:
            pending[key] = (record, 1)
            return
        event, count = previous
        spend = record.estimated_spend
        if spend is not None and event.estimated_spend is not None:
            spend += event.estimated_spend
        pending[key] = (dataclasses.replace(record, estimated_spend=spend), count + 1)

    def _send_routed(self) -> None:
        pending, self._routed = self._routed, {}
        for event, count in pending.values():
            self._link.send(wire.Routed(event, count))

    def queued(self, namespace: str, policy: str) -> None:
        self._link.send(wire.Queued(namespace, policy))

    def rejected(self, namespace: str, policy: str, *, record: RejectedRecord) -> None:
        self._link.send(wire.Rejected(namespace, policy, record))

    def usage(self, report: UsageReport, *, released: bool) -> None:
        self._link.send(wire.Usage(report, released))
