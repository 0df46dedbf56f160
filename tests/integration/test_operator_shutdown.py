"""The operator stops without an ERROR in its log: in particular kopf's watch streams are closed
in order before the loop ends, not left to asyncio's shutdown (which closed them in no order and
logged "generator didn't stop after athrow()")."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits import aiotasks
from operator_support import Objects, backend_spec, condition, operator_config, wait_for

from nexus_operator.operator.handlers import build_registry, open_watch_streams
from nexus_testkit.gateway import Picker
from nexus_testkit.localcluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]

STOP_TIMEOUT_S = 60.0


def test_watchers_stopped_while_handing_on_an_event_leave_no_stream_open_nor_an_error_logged(
    cluster: Cluster, namespace: str, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    """A busy watch stream is stopped while its watcher spawns an object's worker (kopf's
    Scheduler.spawn yields to the loop there); here every watcher is parked at that point, so
    the operator always stops them there, as a busy one does by chance."""
    caplog.set_level(logging.WARNING)
    parked = threading.Event()
    spawn = aiotasks.Scheduler.spawn

    async def spawn_then_park(self: aiotasks.Scheduler, coro: Any, *, name: Any = None) -> None:
        await spawn(self, coro, name=name)
        parked.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(aiotasks.Scheduler, "spawn", spawn_then_park)
    with cluster.api_client() as api:
        Objects(api, namespace).create(
            "backends", "b", backend_spec("http://127.0.0.1:9", healthCheck={"enabled": False})
        )
    config = operator_config(cluster.kubeconfig, namespace)
    stop = threading.Event()
    left_open: list[object] = []

    async def operator_then_look() -> None:
        await kopf.operator(
            registry=build_registry(config),
            standalone=True,
            namespaces=config.namespaces,
            stop_flag=stop,
            memo=kopf.Memo(),
        )
        left_open.extend(open_watch_streams())  # what asyncio's shutdown would close next

    thread = threading.Thread(target=asyncio.run, args=(operator_then_look(),), daemon=True)
    thread.start()
    try:
        assert parked.wait(STOP_TIMEOUT_S), "no watcher reached an object"
    finally:
        stop.set()
        thread.join(STOP_TIMEOUT_S)
    assert not thread.is_alive()
    assert left_open == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def test_run_stops_on_sigterm_without_an_error_in_its_log(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """`nexus-operator run` as deployed (serving worker, status writer busy with new objects
    until SIGTERM): its whole output holds no ERROR line and no traceback."""
    run = Picker(
        [
            "run",
            f"--kubeconfig={cluster.kubeconfig}",
            f"--namespace={namespace}",
            f"--lease-namespace={namespace}",
            "--health-address=127.0.0.1",
            "--log-level=INFO",
        ],
        tmp_path,
    ).start()
    try:
        with cluster.api_client() as api:
            objects = Objects(api, namespace)
            spec = backend_spec("http://127.0.0.1:9", healthCheck={"enabled": False})
            for i in range(30):
                objects.create("backends", f"b{i:02d}", spec)
            wait_for(lambda: condition(objects.status("backends", "b00"), "Ready"))
    finally:
        run.stop()
    log = run.log_path.read_text()
    assert "Signal SIGTERM is received" in log
    problems = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    assert problems == []
