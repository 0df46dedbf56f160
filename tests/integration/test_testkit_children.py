"""A test run killed with SIGKILL leaves no operator and no picker behind: the testkit starts
`OperatorProcess` and `Picker` tied to the process that started them (nexus_testkit.lifeline)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from nexus_testkit.localcluster import Cluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("nexus_crds"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's"),
]

# A test run in miniature: an operator serving against the cluster and a picker serving a
# folder, both started by the testkit; prints their pids once both serve, then waits.
TEST_RUN = """\
import sys, time
from pathlib import Path
from nexus_testkit.gateway import Picker
from nexus_testkit.operator_process import OperatorProcess
kubeconfig, namespace, workdir = sys.argv[1:4]
operator = OperatorProcess(Path(kubeconfig), namespace, replica_id="tied", spool_dir=None)
operator.start()
manifests = Path(workdir) / "manifests"
manifests.mkdir()
picker = Picker(["serve", "--from-dir", str(manifests)], Path(workdir) / "picker").start()
print(operator.process.pid, picker.pid, flush=True)
time.sleep(600)
"""


def _running(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


def _named(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:120]}"
    except psutil.Error:
        return str(process.pid)


def test_a_sigkilled_test_run_leaves_no_operator_or_picker_behind(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    run = subprocess.Popen(
        [sys.executable, "-c", TEST_RUN, str(cluster.kubeconfig), namespace, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert run.stdout is not None
    children: list[psutil.Process] = []
    try:
        pids = [int(pid) for pid in run.stdout.readline().split()]
        assert len(pids) == 2, "the operator and the picker did not both start"
        children = psutil.Process(run.pid).children(recursive=True)
        assert set(pids) <= {child.pid for child in children}

        run.send_signal(signal.SIGKILL)
        run.wait()

        deadline = time.monotonic() + 60
        while _running(children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [_named(p) for p in _running(children)] == []
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for survivor in _running(children):  # never leave them behind, even on failure
            with contextlib.suppress(psutil.NoSuchProcess):
                survivor.kill()
