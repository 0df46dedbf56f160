"""The kopf glue, and nothing else: settings, startup/cleanup, login, watch events, liveness.

Every handler body is one call into a plain module. Only low-level `on.event` handlers watch our
kinds: they see status-only changes too (on.update would not), add no finalizer, and write no
kopf annotations, so the operator needs no patch permission on the objects themselves. kopf's
storage names are still set under our API group before any watch starts, so adding a
resource-changing handler later never re-fires on every object.

The caller's hooks run after the controller is up (start gRPC and metrics there) and before it
stops (drain gRPC first), inside the operator's event loop, with handles kept in `memo`.
"""

from __future__ import annotations

import gc
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import AsyncGeneratorType
from typing import Any

import kopf

from nexus_operator.api import GROUP, VERSION

from .kube import KubeApi, connection_info, load_configuration
from .replica import Controller, ControllerConfig

Hook = Callable[[Controller, kopf.Memo], Awaitable[None]]


@dataclass(frozen=True)
class Hooks:
    started: Hook | None = None
    stopping: Hook | None = None


_KOPF_OBJECTS = logging.getLogger("kopf.objects")
_EVENT_HANDLERS = ("backend_event", "policy_event")


class QuietEventHandlerSuccess(logging.Filter):
    """Drops kopf's "Handler '...backend_event' succeeded." INFO lines.

    Our on.event handlers only hand the event to the registry sync, and every status write the
    operator makes comes back as a watch event, so these lines were nearly the whole log while
    saying nothing. Failures and retries of the same handlers (WARNING/ERROR), and every other
    kopf line, still pass. The registry sync logs what an operator needs (rejected specs,
    health transitions, resyncs).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        message = record.getMessage()
        return not (
            message.startswith("Handler '")
            and message.endswith("' succeeded.")
            and message[len("Handler '") : -len("' succeeded.")].endswith(_EVENT_HANDLERS)
        )


def quiet_event_handler_success(logger: logging.Logger = _KOPF_OBJECTS) -> None:
    """Install the filter once (startup may run again after a failed start)."""
    if not any(isinstance(f, QuietEventHandlerSuccess) for f in logger.filters):
        logger.addFilter(QuietEventHandlerSuccess())


def open_watch_streams() -> list[AsyncGeneratorType[Any, Any]]:
    """kopf's watch streams (`infinite_watch` async generators) still open and suspended at a
    `yield` (not running, not inside an await), so closing them now is safe."""
    return [
        obj
        for obj in gc.get_objects()
        if inspect.isasyncgen(obj)
        and obj.ag_code.co_name == "infinite_watch"
        and "kopf" in obj.ag_code.co_filename
        and obj.ag_frame is not None
        and not obj.ag_running
        and obj.ag_await is None
    ]


async def close_watch_streams() -> int:
    """Close the watch streams kopf's stopped watchers left open, outermost generator first.

    A kopf watcher stopped while it hands an event on (cancelled in its loop body, e.g. at the
    `sleep(0)` of spawning an object's worker, which a busy stream does all the time) leaves
    its stream suspended at `yield`, and keeps it alive past its end: the watcher's frame holds
    its own task, whose CancelledError holds the frame — a cycle only the collector frees. The
    loop's shutdown then closes every open async generator at once, in no particular order;
    closing the stream's inner `async with streaming_block()` generator before the stream
    makes the stream's exit raise "generator didn't stop after athrow()", logged as an ERROR by
    asyncio on every such shutdown. Closing each stream itself runs its `async with` exit in
    order. Called from cleanup, when every watcher has ended. Returns how many were closed."""
    streams = open_watch_streams()
    for stream in streams:
        await stream.aclose()
    return len(streams)


def configure(settings: kopf.OperatorSettings) -> None:
    quiet_event_handler_success()
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.peering.standalone = True
    settings.peering.mandatory = False
    settings.scanning.disabled = True
    settings.posting.enabled = False  # our Events are events.k8s.io/v1 (events.py)
    settings.watching.reconnect_backoff = 0.5
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.connect_timeout = 5
    settings.networking.request_timeout = 60
    settings.networking.error_backoffs = [0.5, 1, 2, 5]


def build_registry(config: ControllerConfig, hooks: Hooks = Hooks()) -> kopf.OperatorRegistry:
    """An explicit kopf registry, so several operators can run in one process (tests)."""
    registry = kopf.OperatorRegistry()
    configuration = load_configuration(config.kubeconfig)

    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(configuration)

    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        """A failed start stops what it began (the caller's hooks first, as on cleanup): kopf
        retries startup with a new Controller, which must find nothing left serving."""
        configure(settings)
        controller = Controller(config, KubeApi(configuration))
        memo["controller"] = controller
        try:
            await controller.start()
            if hooks.started is not None:
                await hooks.started(controller, memo)
        except BaseException:
            memo["controller"] = None
            try:
                if hooks.stopping is not None:
                    await hooks.stopping(controller, memo)
            finally:
                await controller.stop()
            raise

    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        """Runs once every watcher has ended: the caller's hooks, the controller's stop, then
        the watch streams kopf left open are closed while the loop still runs."""
        controller: Controller | None = memo.get("controller")
        try:
            if controller is not None:
                if hooks.stopping is not None:
                    await hooks.stopping(controller, memo)
                await controller.stop()
        finally:
            await close_watch_streams()

    async def backend_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        memo["controller"].sync.on_backend_event(event.get("type"), event["object"])

    async def policy_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        memo["controller"].sync.on_policy_event(event.get("type"), event["object"])

    async def probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
        controller: Controller | None = memo.get("controller")
        return {} if controller is None else controller.health()

    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    kopf.on.event(GROUP, VERSION, "backends", registry=registry)(backend_event)
    kopf.on.event(GROUP, VERSION, "routingpolicies", registry=registry)(policy_event)
    kopf.on.probe(id="controller", registry=registry)(probe)
    return registry
