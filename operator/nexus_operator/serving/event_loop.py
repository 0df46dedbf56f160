"""The event loop a serving process runs on.

grpc.aio spends most of a call's CPU in asyncio plumbing (futures, callbacks, the selector), and
uvloop does that work in C: measured side by side with the same ghz runs, a no-op grpc.aio
server costs ~15 % less CPU per call on uvloop, and the Router server ~20 µs less per Route
(benchmarks/bench_grpc.py records both loops). `auto`, the default, uses uvloop when it is
installed (it is a dependency on Linux and macOS) and asyncio's own loop otherwise;
`--event-loop asyncio` opts out. Only serving processes (`serve`, and `run`'s serving workers)
choose; `run`'s control process stays on the loop kopf.run() gives it.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def loop_factory(choice: str) -> LoopFactory | None:
    """The factory for `choice` (None: asyncio's default loop). `uvloop` without uvloop
    installed is an error that says so; `auto` falls back quietly."""
    if choice not in EVENT_LOOPS:
        raise ValueError(f"event loop {choice!r}: expected one of {', '.join(EVENT_LOOPS)}")
    if choice == "asyncio" or (choice == "auto" and not uvloop_available()):
        return None
    try:
        import uvloop
    except ImportError as exc:
        raise RuntimeError("--event-loop uvloop: uvloop is not installed") from exc
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], *, choice: str = "auto") -> T:
    """asyncio.run(main) on the chosen loop."""
    try:
        factory = loop_factory(choice)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """ "uvloop" or "asyncio": what the running loop is (for the startup log line)."""
    return (
        "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
    )
