"""The serving processes' event loop choice (`--event-loop`)."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from nexus_operator.serving import event_loop


async def _loop_name() -> str:
    await asyncio.sleep(0)
    return event_loop.running_loop_name()


def test_auto_runs_on_uvloop_when_it_is_installed() -> None:
    assert event_loop.uvloop_available()
    assert event_loop.run(_loop_name(), choice="auto") == "uvloop"


def test_asyncio_choice_runs_on_the_standard_loop() -> None:
    assert event_loop.run(_loop_name(), choice="asyncio") == "asyncio"


def test_an_unknown_choice_is_refused_and_the_coroutine_is_closed() -> None:
    coroutine = _loop_name()
    with pytest.raises(ValueError, match="expected one of auto, uvloop, asyncio"):
        event_loop.run(coroutine, choice="trio")
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED  # no "never awaited"


def test_serve_and_run_accept_the_event_loop_flag() -> None:
    from nexus_operator.cli.operator_main import build_parser

    for command in (["serve", "--from-dir", "."], ["run"]):
        parser = build_parser(command[0])
        assert parser.parse_args([*command, "--event-loop", "asyncio"]).event_loop == "asyncio"
        assert parser.parse_args(command).event_loop == "auto"
