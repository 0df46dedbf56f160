"""`make run` (nexus_testkit.demo) keeps runs independent: a live run's directory is never
touched, a stale one is cleared, and a taken fixed port is named before anything is cleared."""

from __future__ import annotations

import fcntl
import os
import socket
from contextlib import ExitStack
from pathlib import Path

import pytest

from nexus_testkit import demo


@pytest.fixture
def demo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(demo, "DEMO_DIR", tmp_path)
    monkeypatch.setattr(demo, "LOCK_FILE", tmp_path / "lock")
    with socket.socket() as probe:  # a port free right now stands in for 50051
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setattr(demo, "GRPC_PORT", probe.getsockname()[1])
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "operator.log").write_text("previous run\n")
    (tmp_path / "kubeconfig").write_text("previous run\n")
    return tmp_path


def test_a_run_holding_the_demo_dir_is_named_and_its_files_are_left_alone(
    demo_dir: Path,
) -> None:
    with (demo_dir / "lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        with ExitStack() as stack, pytest.raises(demo.DemoError) as refused:
            demo._claim_demo_dir(stack)
    assert "another `make run` (pid 4242) is running" in str(refused.value)
    assert "kill 4242" in str(refused.value)
    assert (demo_dir / "kubeconfig").read_text() == "previous run\n"
    assert (demo_dir / "logs" / "operator.log").exists()


def test_a_stale_demo_dir_is_cleared_and_the_lock_names_the_new_run(demo_dir: Path) -> None:
    with ExitStack() as stack:
        demo._claim_demo_dir(stack)
        assert sorted(p.name for p in demo_dir.iterdir()) == ["lock"]
        assert (demo_dir / "lock").read_text() == f"{os.getpid()}\n"


def test_a_taken_grpc_port_is_named_with_its_process_before_anything_is_cleared(
    demo_dir: Path,
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", demo.GRPC_PORT))
        listener.listen()
        with ExitStack() as stack, pytest.raises(demo.DemoError) as refused:
            demo._claim_demo_dir(stack)
    assert f"port {demo.GRPC_PORT}" in str(refused.value)
    assert f"pid {os.getpid()}" in str(refused.value)
    assert (demo_dir / "kubeconfig").exists()
