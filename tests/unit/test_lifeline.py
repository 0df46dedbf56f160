"""Children started through `nexus_testkit.lifeline` die with the process that started them."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import psutil  # type: ignore[import-untyped]
import pytest

from nexus_testkit.lifeline import tied_to_this_process

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

# A parent that starts a tied `sleep`, prints its pid, and waits to be killed.
PARENT = (
    "import subprocess, sys, time\n"
    "from nexus_testkit.lifeline import tied_to_this_process\n"
    "child = subprocess.Popen(tied_to_this_process(['sleep', '600']))\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def gone_or_zombie(pid: int, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


# The same with a child that ignores SIGTERM and is tied with SIGKILL.
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ignoring SIGTERM', flush=True); time.sleep(600)"
)
PARENT_OF_A_STUBBORN_CHILD = PARENT.replace(
    "tied_to_this_process(['sleep', '600'])",
    f"tied_to_this_process([sys.executable, '-c', {STUBBORN!r}], death_signal=9)",
)


def _parent_sigkilled_child_gone(parent_source: str, *, child_says: str = "") -> bool:
    """Start `parent_source`, wait for its child (and for the line `child_says` from it), SIGKILL
    the parent: whether the child is gone within 30 s."""
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_source], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    try:
        if child_says:
            assert parent.stdout.readline().strip() == child_says
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        return gone_or_zombie(child.pid, timeout=30)
    finally:
        if child.is_running():
            child.kill()


def test_a_tied_child_exits_when_its_parent_is_sigkilled() -> None:
    assert _parent_sigkilled_child_gone(PARENT)


def test_a_child_tied_with_sigkill_exits_even_if_it_ignores_sigterm() -> None:
    assert _parent_sigkilled_child_gone(PARENT_OF_A_STUBBORN_CHILD, child_says="ignoring SIGTERM")


def test_a_tied_child_keeps_its_pid_and_runs_the_command_itself() -> None:
    with subprocess.Popen(
        tied_to_this_process(["sh", "-c", "echo $$"]), stdout=subprocess.PIPE
    ) as p:
        out, _ = p.communicate(timeout=30)
    assert int(out) == p.pid


def test_a_child_started_from_another_thread_is_not_tied() -> None:
    """Linux signals when the forking *thread* ends; a pool thread ending must not kill it."""
    seen: list[list[str]] = []
    thread = threading.Thread(target=lambda: seen.append(tied_to_this_process(["sleep", "1"])))
    thread.start()
    thread.join()
    assert seen == [["sleep", "1"]]


def test_a_missing_executable_fails_in_the_caller_as_popen_would() -> None:
    with pytest.raises(FileNotFoundError):
        tied_to_this_process(["/nonexistent/etcd", "--version"])
