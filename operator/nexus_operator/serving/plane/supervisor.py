"""The control process's side of the serving plane: spawns the workers, feeds each one the
registry changes, health, usage outcomes and spend totals, and accounts what they decided.

The control process (kopf watches, resyncs, probes, status writer, Lease) serves nothing itself:
every decision is made by a worker, so control-loop work can only ever delay the messages
that keep workers current, never a decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

from ...api import Backend
from ...pipeline import BackendRuntime
from ...routing import Credential, RegistryChange, RoutingEngine, UsageReport
from ..metrics import RoutingMetrics
from . import wire
from .counters import RowAllocator, SharedCounters, spawn_context
from .families import WorkerFamilies
from .link import Batch, Link
from .worker import ServerFactory, worker_main

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0
RELEASE_TIMEOUT_S = 5.0
HOUSEKEEPING_S = 0.5


class WorkerStartError(RuntimeError):
    """A worker could not bind or start its servers; the message says why."""


@dataclass(eq=False)
class _Worker:
    index: int
    process: BaseProcess
    link: Link
    ready: asyncio.Future[tuple[int, ...]]
    gone: asyncio.Future[None]
    alive: bool = True
    pending: dict[int, asyncio.Future[bool]] = field(default_factory=dict)


class ServingPlane:
    """N serving workers over `engine`'s registry (the control process's), sharing one port."""

    def __init__(
        self,
        engine: RoutingEngine,
        *,
        workers: int,
        factory: ServerFactory,
        metrics: RoutingMetrics,
        log_level: str = "INFO",
        event_loop: str = "auto",
        on_failure: Callable[[str], None] | None = None,
        control_nice: int = 0,
    ) -> None:
        """`control_nice` > 0: once the workers run, this process lowers its CPU priority by
        that much, so under CPU contention the scheduler runs the workers' decisions first."""
        if workers < 1:
            raise ValueError("a serving plane needs at least one worker")
        self._engine = engine
        self._registry = engine.registry
        self._count = workers
        self._factory = factory
        self._metrics = metrics
        self._log_level = log_level
        self._event_loop = event_loop
        self._on_failure = on_failure
        self._context = spawn_context()
        self.counters = SharedCounters(self._context)
        self._rows = RowAllocator(self.counters)
        self.families = WorkerFamilies()  # register it with /metrics beside `metrics`
        self._workers: list[_Worker] = []
        self._tokens = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sent_totals: dict[tuple[str, str], tuple[str, float]] = {}
        self._serving = False
        self._stopping = False
        self._control_nice = control_nice
        self.ports: tuple[int, ...] = ()

    # Lifecycle

    async def start(self) -> tuple[int, ...]:
        """Spawn the workers, give each the current state, bind; the ports of the servers."""
        self._bind_rows(tuple(self._registry.snapshot.backends.values()))
        self._registry.add_change_listener(self._on_change)
        self._registry.credentials.on_change = self._on_credential
        self._workers = [self._spawn(index) for index in range(self._count)]
        try:
            first = self._workers[0]
            first.link.send(wire.Start(None))
            ports = await self._ready(first)
            for worker in self._workers[1:]:
                worker.link.send(wire.Start(ports))
            for worker in self._workers[1:]:
                await self._ready(worker)
        except BaseException:
            await self.stop(0)
            raise
        self.ports = ports
        if self._control_nice > 0:
            lower_priority(self._control_nice)
        self._spawn_task(self._housekeeping())
        return ports

    async def stop(self, grace: float) -> None:
        """Drain every worker (they send their last usage and counters), then reap them."""
        if self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(ValueError):
            self._registry.remove_change_listener(self._on_change)
        self._registry.credentials.on_change = None
        for task in list(self._tasks):
            task.cancel()
        for worker in self._workers:
            if worker.alive:
                worker.link.send(wire.Stop(grace))
        for worker in self._workers:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(worker.gone), grace + 10.0)
        for worker in self._workers:
            worker.link.close()
            await asyncio.to_thread(worker.process.join, 5.0)
            if worker.process.is_alive():
                worker.process.kill()
                await asyncio.to_thread(worker.process.join, 5.0)

    def _spawn(self, index: int) -> _Worker:
        context = self._context
        to_worker_receive, to_worker_send = context.Pipe(duplex=False)
        from_worker_receive, from_worker_send = context.Pipe(duplex=False)
        process = context.Process(
            target=worker_main,
            args=(index,),
            kwargs={
                "receive": to_worker_receive,
                "send": from_worker_send,
                "counters": self.counters,
                "factory": self._factory,
                "log_level": self._log_level,
                "event_loop": self._event_loop,
            },
            name=f"nexus-serving-{index}",
            daemon=True,
        )
        process.start()
        to_worker_receive.close()
        from_worker_send.close()
        loop = asyncio.get_running_loop()
        link = Link(send=to_worker_send, receive=from_worker_receive, name=f"control-{index}")
        worker = _Worker(index, process, link, loop.create_future(), loop.create_future())
        link.start(
            loop,
            on_batch=lambda batch: self._on_batch(worker, batch),
            on_closed=lambda: self._on_closed(worker),
        )
        for message in self._initial_state():
            link.send(message)
        return worker

    def _initial_state(self) -> list[object]:
        snapshot = self._registry.snapshot
        runtime = self._registry.runtime
        change = RegistryChange(
            backends=tuple(snapshot.backends.values()),
            policies=tuple(snapshot.policies.values()),
            full=True,
        )
        messages: list[object] = [wire.Change(change, dict(self._rows.rows))]
        for key in snapshot.backends:
            messages.append(_health(key, runtime.backend(*key)))
        spend = []
        for key in snapshot.policies:
            cell = runtime.policy(*key)
            spend.append((key[0], key[1], cell.period, cell.spent_usd))
        messages.append(wire.Totals(tuple(spend)))
        store = self._registry.credentials
        for key in store.keys():  # noqa: SIM118 - keys() is the store's own method
            messages.append(wire.CredentialUpdate(key, store.header(key), store.problem(key)))
        return messages

    async def _ready(self, worker: _Worker) -> tuple[int, ...]:
        try:
            return await asyncio.wait_for(asyncio.shield(worker.ready), READY_TIMEOUT_S)
        except TimeoutError:
            raise WorkerStartError(f"serving worker {worker.index} did not start") from None

    # Control → workers

    def _broadcast(self, message: object, *, skip: _Worker | None = None) -> None:
        for worker in self._workers:
            if worker is not skip and worker.alive:
                worker.link.send(message)

    def _on_change(self, change: RegistryChange) -> None:
        for key in change.deleted_backends:
            self._rows.retire(key)
        rows = self._bind_rows(change.backends)
        self._broadcast(wire.Change(change, rows))

    def _bind_rows(self, backends: tuple[Backend, ...]) -> dict[tuple[str, str], int]:
        rows: dict[tuple[str, str], int] = {}
        runtime = self._registry.runtime
        for backend in backends:
            meta = backend.metadata
            key = (meta.namespace, meta.name)
            rows[key] = row = self._rows.row_of(key)
            runtime.backend(*key).bind_in_flight(self.counters, row)
        return rows

    def _on_credential(
        self, key: tuple[str, str], credential: Credential | None, problem: str | None
    ) -> None:
        self._broadcast(wire.CredentialUpdate(key, credential, problem))

    def on_probe(self, key: tuple[str, str], cell: BackendRuntime) -> None:
        """The prober recorded a result: every worker takes the same health state."""
        self._broadcast(_health(key, cell))

    def on_spend(self, key: tuple[str, str]) -> None:
        """The ledger adopted another replica's spend for a policy: every worker takes the new
        total now, not at the next housekeeping round (cross-replica lag near a limit)."""
        self._send_totals((key,))

    def _send_totals(self, keys: Iterable[tuple[str, str]]) -> None:
        runtime = self._registry.runtime
        spend = []
        for key in keys:
            cell = runtime.policy(*key)
            current = (cell.period, cell.spent_usd)
            if self._sent_totals.get(key) != current:
                self._sent_totals[key] = current
                spend.append((key[0], key[1], *current))
        if spend:
            self._broadcast(wire.Totals(tuple(spend)))

    async def _housekeeping(self) -> None:
        """Serving flag, spend adopted from persisted status, and the control's gauges."""
        while True:
            serving = self._registry.synced
            if serving != self._serving:
                self._serving = serving
                self._broadcast(wire.Serving(serving))
            self._send_totals(tuple(self._registry.snapshot.policies))
            self._metrics.refresh_gauges_if_wanted()
            await asyncio.sleep(HOUSEKEEPING_S)

    # Workers → control

    def _on_batch(self, worker: _Worker, batch: Batch) -> None:
        charged: set[tuple[str, str]] = set()
        for message in batch:
            try:
                self._handle(worker, message, charged=charged)
            except Exception:
                logger.exception(
                    "Could not account %s from worker %d", type(message).__name__, worker.index
                )
        if charged:
            self._send_totals(charged)

    def _handle(self, worker: _Worker, message: object, *, charged: set[tuple[str, str]]) -> None:
        engine = self._engine
        runtime = self._registry.runtime
        if isinstance(message, wire.Routed):
            event = message.event
            engine.account_routed(event, count=message.count)
            if event.estimated_spend is not None and event.policy is not None:
                charged.add((event.namespace, event.policy))
        elif isinstance(message, wire.Queued):
            runtime.policy(message.namespace, message.policy).count_queued()
        elif isinstance(message, wire.Rejected):
            runtime.policy(message.namespace, message.policy).count_rejected(message.record)
        elif isinstance(message, wire.Usage):
            policy = engine.account_usage(message.report)
            if policy is not None:
                charged.add(policy)
            self._broadcast(wire.Outcome(message.report), skip=worker)
            if not message.released and self._count > 1:
                self._spawn_task(self._release_elsewhere(worker, message.report))
        elif isinstance(message, wire.Released):
            future = worker.pending.pop(message.token, None)
            if future is not None and not future.done():
                future.set_result(message.found)
        elif isinstance(message, wire.Metrics):
            self._metrics.absorb(worker.index, message.counts)
        elif isinstance(message, wire.Families):
            self.families.absorb(worker.index, message.families)
        elif isinstance(message, wire.Ready):
            if not worker.ready.done():
                worker.ready.set_result(message.ports)
        elif isinstance(message, wire.Failed):
            if not worker.ready.done():
                worker.ready.set_exception(WorkerStartError(message.message))
        elif isinstance(message, wire.Bye):
            worker.alive = False

    async def _release_elsewhere(self, origin: _Worker, report: UsageReport) -> None:
        """The report reached a worker that does not hold the slot: ask the others in turn, so
        exactly one slot is released even when the request id is open on several workers."""
        for worker in self._workers:
            if worker is origin or not worker.alive:
                continue
            token = next(self._tokens)
            future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            worker.pending[token] = future
            worker.link.send(wire.Release(token, report))
            try:
                if await asyncio.wait_for(future, RELEASE_TIMEOUT_S):
                    return
            except TimeoutError:
                worker.pending.pop(token, None)

    def _on_closed(self, worker: _Worker) -> None:
        was_alive = worker.alive
        worker.alive = False
        if not worker.ready.done():
            worker.ready.set_exception(WorkerStartError(f"serving worker {worker.index} exited"))
        if not worker.gone.done():
            worker.gone.set_result(None)
        if was_alive and not self._stopping:
            message = f"serving worker {worker.index} exited unexpectedly"
            logger.error(message)
            if self._on_failure is not None:
                self._on_failure(message)

    def _spawn_task(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _health(key: tuple[str, str], cell: BackendRuntime) -> wire.Health:
    return wire.Health(
        key, cell.health_state, cell.latency_ms, cell.last_error, cell.last_probe_time
    )


def lower_priority(increment: int) -> None:
    """Lower this process's CPU priority (raise its nice value) by `increment`: on Linux every
    thread's (nice is per thread there; threads started later inherit it from their creator),
    elsewhere the process's. The workers, spawned before, keep theirs. Best effort."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        tasks = []
    if not tasks:
        with contextlib.suppress(OSError):
            os.nice(increment)
        return
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            tid = int(task)
            current = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
