"""The README's quickstart, run literally: its `make run` block, then its "try" block.

The commands are read from README.md (between the `quickstart:run` / `quickstart:try` markers),
so the test fails when the README and the product drift apart. It starts its own control plane
through `make run`, like a newcomer would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from nexus_testkit.localcluster import kubectl_path, repo_root

pytestmark = pytest.mark.e2e

ROOT = repo_root()
READY_LINE = "nexus-operator is running"


def readme_block(marker: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- quickstart:{marker} -->\s*```bash\n(.*?)```", text, re.DOTALL)
    assert match, f"README.md has no ```bash block after <!-- quickstart:{marker} -->"
    return [line for line in match.group(1).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    (command,) = readme_block("run")
    log = tmp_path_factory.mktemp("quickstart") / "make-run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        wait_for_line(log, READY_LINE, proc=proc, timeout=300)
        yield proc, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_for_line(log: Path, line: str, *, proc: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if line in log.read_text():
            return
        if proc.poll() is not None:
            pytest.fail(f"`make run` exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)
    pytest.fail(f"`make run` did not print {line!r} in {timeout}s:\n{log.read_text()[-4000:]}")


def run_readme_line(line: str) -> str:
    result = subprocess.run(
        ["bash", "-c", line], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{line!r} exited {result.returncode}: {result.stderr}"
    return result.stdout


def test_make_run_prints_a_progress_line_per_step_and_the_commands_to_try(
    demo: tuple[subprocess.Popen[str], Path],
) -> None:
    _, log = demo
    text = log.read_text()
    assert [f"[{n}/8]" in text for n in range(1, 9)] == [True] * 8
    for line in readme_block("try"):
        assert line.replace("~", str(Path.home())) in text or line in text


def test_readme_route_command_routes_llama_to_the_local_ollama(
    demo: tuple[subprocess.Popen[str], Path],
) -> None:
    route = next(line for line in readme_block("try") if " route " in line)
    out = run_readme_line(route)
    assert re.search(r"OUTCOME:\s+ROUTED", out), out
    assert "default/ollama-workstation" in out
    assert re.search(r"MODEL:\s+llama3\.1:8b", out), out


def test_readme_explain_command_shows_the_trace_and_where_gpt4o_goes(
    demo: tuple[subprocess.Popen[str], Path],
) -> None:
    explain = next(line for line in readme_block("try") if " explain " in line)
    out = run_readme_line(explain)
    assert "HealthReconciler" in out
    assert "SelectionReconciler" in out
    if openai_health() == "Healthy":
        # A machine that reaches api.openai.com: the probe's 401 proves the endpoint is up.
        assert re.search(r"BACKEND:\s+default/openai ", out), out
    else:
        # No route to the cloud (as on CI): excluded with its reason, then the local fallback.
        assert "fallback:gpt-4o:" in out
        assert re.search(r"openai\s+gpt-4o\s+HealthReconciler\s+unhealthy", out), out


def openai_health() -> str:
    kubeconfig = Path.home() / ".cache" / "nexus-operator" / "demo" / "kubeconfig"
    result = subprocess.run(
        [
            str(kubectl_path()),
            "--kubeconfig",
            str(kubeconfig),
            "get",
            "be",
            "openai",
            "-o",
            "jsonpath={.status.health.state}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_readme_kubectl_command_shows_backends_with_health_and_policies(
    demo: tuple[subprocess.Popen[str], Path],
) -> None:
    get = next(line for line in readme_block("try") if "kubectl" in line)
    out = run_readme_line(get)
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["backend.nexus.routing.dev/ollama-workstation"][1:5] == [
        "ollama",
        "Restricted",
        "2",
        "Healthy",
    ]
    assert rows["backend.nexus.routing.dev/openai"][4] == openai_health()
    assert "routingpolicy.nexus.routing.dev/internal-restricted" in rows


def test_readme_curl_line_gets_a_chat_completion_through_envoy(
    demo: tuple[subprocess.Popen[str], Path],
) -> None:
    curl = next(line for line in readme_block("try") if line.startswith("curl "))
    answer = json.loads(run_readme_line(curl))
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "llama3.1:8b"
    assert answer["choices"][0]["message"]["content"].startswith("hello from ollama-workstation")
    assert answer["usage"]["total_tokens"] > 0


def test_readme_openai_sdk_line_gets_a_chat_completion_through_envoy(
    demo: tuple[subprocess.Popen[str], Path],
) -> None:
    sdk = next(line for line in readme_block("try") if "import openai" in line)
    assert run_readme_line(sdk).startswith("hello from ollama-workstation")


def started_by(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    """Every process `make run` started (make, the demo, etcd, kube-apiserver, operator, Envoy)."""
    return list(psutil.Process(proc.pid).children(recursive=True))


def command_line(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def demo_pid(proc: subprocess.Popen[str]) -> int:
    (pid,) = [p.pid for p in started_by(proc) if "-m nexus_testkit.demo" in command_line(p)]
    return int(pid)


def still_running(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(command_line(process))
        except psutil.NoSuchProcess:
            pass
    return alive


def test_a_second_make_run_refuses_naming_the_first_and_leaves_it_running(
    demo: tuple[subprocess.Popen[str], Path],
) -> None:
    proc, _ = demo
    (command,) = readme_block("run")
    second = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert second.returncode != 0
    assert f"another `make run` (pid {demo_pid(proc)}) is running" in second.stderr
    assert "[1/8]" not in second.stdout  # refused before any step
    # the first run's files and processes are untouched: its README commands still work
    route = next(line for line in readme_block("try") if " route " in line)
    assert re.search(r"OUTCOME:\s+ROUTED", run_readme_line(route))
    curl = next(line for line in readme_block("try") if line.startswith("curl "))
    assert json.loads(run_readme_line(curl))["object"] == "chat.completion"


def test_ctrl_c_stops_everything_make_run_started(
    demo: tuple[subprocess.Popen[str], Path],
) -> None:
    proc, log = demo
    started = started_by(proc)
    assert any("operator_main run" in command_line(p) for p in started)
    assert any("envoy" in command_line(p) for p in started)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    proc.wait(60)
    assert log.read_text().rstrip().endswith("stopped")
    # the demo waits for its children (and theirs) to exit before it says "stopped"
    assert still_running(started) == []
