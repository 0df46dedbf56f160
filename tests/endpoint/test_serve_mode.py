"""`nexus-operator serve --from-dir` driven by the real grpcurl and by nexusctl."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from nexus_operator.cli import nexusctl

from .fleet import backend, default_fleet, write_manifests
from .serving import ServeProcess, serve_command, serve_from_dir

pytestmark = pytest.mark.timeout(120)
SERVICE = "nexus.routing.v1.Router"


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("manifests")
    write_manifests(directory, default_fleet())
    return directory


@pytest.fixture(scope="module")
def serve(manifests: Path) -> Iterator[ServeProcess]:
    with serve_from_dir(manifests, "--assume-healthy") as process:
        yield process


def grpcurl(
    bin_dir: Path, address: str, *args: str, data: dict[str, object] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [str(bin_dir / "grpcurl"), "-plaintext", "-max-time", "10"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    return subprocess.run(
        [*command, address, *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_grpcurl_lists_the_router_service_through_reflection(
    bin_dir: Path, serve: ServeProcess
) -> None:
    result = grpcurl(bin_dir, serve.address, "list")
    assert result.returncode == 0, result.stderr
    assert SERVICE in result.stdout.split()
    described = grpcurl(bin_dir, serve.address, "describe", SERVICE)
    assert (
        "rpc Route ( .nexus.routing.v1.RouteRequest ) returns ( .nexus.routing.v1.RouteResponse )"
        in described.stdout
    )


def test_grpcurl_route_returns_a_routed_decision(bin_dir: Path, serve: ServeProcess) -> None:
    result = grpcurl(
        bin_dir,
        serve.address,
        f"{SERVICE}/Route",
        data={"model": "llama3:70b", "estimatedTokens": 50},
    )
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["outcome"] == "OUTCOME_ROUTED"
    assert response["backend"]["name"] == "big"


def test_grpcurl_explain_returns_the_trace(bin_dir: Path, serve: ServeProcess) -> None:
    result = grpcurl(
        bin_dir,
        serve.address,
        f"{SERVICE}/Explain",
        data={"model": "mixtral", "privacy": "PRIVACY_RESTRICTED"},
    )
    assert result.returncode == 0, result.stderr
    explained = json.loads(result.stdout)
    assert explained["trace"][0]["reconciler"] == "RequestAnalyzer"
    assert {"backend": "cloud", "reconciler": "PrivacyReconciler"}.items() <= explained[
        "exclusions"
    ][0].items()


def test_grpcurl_report_usage_is_acknowledged(bin_dir: Path, serve: ServeProcess) -> None:
    result = grpcurl(
        bin_dir,
        serve.address,
        f"{SERVICE}/ReportUsage",
        data={
            "backend": "local",
            "model": "mixtral",
            "inputTokens": 3,
            "outputTokens": 4,
            "success": True,
        },
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"accepted": True}


def test_grpcurl_invalid_request_gets_invalid_argument(bin_dir: Path, serve: ServeProcess) -> None:
    result = grpcurl(
        bin_dir, serve.address, f"{SERVICE}/Route", data={"model": "mixtral", "minTier": 9}
    )
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr
    assert "min_tier: must be between 1 and 5" in result.stderr


def test_grpcurl_health_check_reports_serving(bin_dir: Path, serve: ServeProcess) -> None:
    for service in ("", SERVICE):
        result = grpcurl(
            bin_dir, serve.address, "grpc.health.v1.Health/Check", data={"service": service}
        )
        assert json.loads(result.stdout) == {"status": "SERVING"}


def test_metrics_endpoint_serves_decision_counters(serve: ServeProcess) -> None:
    assert nexusctl.main(["--address", serve.address, "route", "llama3:70b"]) == 0
    with urllib.request.urlopen(
        f"http://127.0.0.1:{serve.metrics_port}/metrics", timeout=5
    ) as response:
        text = response.read().decode()
    assert 'nexus_decisions_total{outcome="ROUTED"}' in text
    assert "nexus_decision_duration_seconds_bucket" in text


def test_nexusctl_route_prints_json_and_exits_zero(
    serve: ServeProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code = nexusctl.main(
        ["--address", serve.address, "-o", "json", "route", "llama3:70b", "--tokens", "20"]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["backend"]["name"] == "big"


def test_nexusctl_route_exits_3_when_rejected(
    serve: ServeProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        nexusctl.main(["--address", serve.address, "route", "no-such-model"])
        == nexusctl.EXIT_REJECTED
    )
    out = capsys.readouterr().out
    assert "REJECTED" in out
    assert "model_not_found" in out


def test_nexusctl_explain_prints_a_row_per_reconciler(
    serve: ServeProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        nexusctl.main(["--address", serve.address, "explain", "mixtral", "--privacy", "restricted"])
        == 0
    )
    out = capsys.readouterr().out
    for reconciler in (
        "RequestAnalyzer",
        "PrivacyReconciler",
        "HealthReconciler",
        "SelectionReconciler",
    ):
        assert reconciler in out
    assert "privacy_zone" in out or "Restricted" in out


def test_nexusctl_get_lists_backends_with_health_and_policies_as_yaml(
    serve: ServeProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert nexusctl.main(["--address", serve.address, "-o", "yaml", "get"]) == 0
    inventory = yaml.safe_load(capsys.readouterr().out)
    assert sorted(b["ref"]["name"] for b in inventory["backends"]) == ["big", "cloud", "local"]
    assert {b["health"] for b in inventory["backends"]} == {"Healthy"}
    assert sorted(p["name"] for p in inventory["policies"]) == ["budgeted", "private-llama"]
    cloud = next(b for b in inventory["backends"] if b["ref"]["name"] == "cloud")
    assert {"policy": "private-llama", "reconciler": "PrivacyReconciler"}.items() <= cloud[
        "exclusions"
    ][0].items()


def test_nexusctl_usage_with_a_bad_field_exits_2(
    serve: ServeProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code = nexusctl.main(
        [
            "--address",
            serve.address,
            "usage",
            "--backend",
            "local",
            "--model",
            "mixtral",
            "--input-tokens",
            "-3",
        ]
    )
    assert code == 2
    assert "input_tokens" in capsys.readouterr().err


def test_nexusctl_exits_5_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    assert nexusctl.main(["--address", "127.0.0.1:1", "--timeout", "2", "route", "mixtral"]) == 5
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_serve_reloads_when_a_manifest_changes(tmp_path: Path) -> None:
    write_manifests(tmp_path, default_fleet())
    with serve_from_dir(tmp_path, "--assume-healthy") as process:
        args = ["--address", process.address, "route", "phi3"]
        assert nexusctl.main(args) == nexusctl.EXIT_REJECTED
        (tmp_path / "extra.yml").write_text(
            yaml.safe_dump(backend("tiny", type_="llamacpp", models=["phi3"]))
        )
        assert _eventually(lambda: nexusctl.main(args) == 0)


def test_serve_with_two_workers_routes_reloads_counts_and_drains(tmp_path: Path) -> None:
    write_manifests(tmp_path, default_fleet())
    with serve_from_dir(tmp_path, "--assume-healthy", "--workers", "2") as process:
        args = ["--address", process.address, "route", "phi3"]
        assert nexusctl.main(["--address", process.address, "route", "llama3:70b"]) == 0
        assert nexusctl.main(args) == nexusctl.EXIT_REJECTED
        (tmp_path / "extra.yml").write_text(
            yaml.safe_dump(backend("tiny", type_="llamacpp", models=["phi3"]))
        )
        assert _eventually(lambda: nexusctl.main(args) == 0)

        def counted() -> bool:
            url = f"http://127.0.0.1:{process.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            return 'nexus_decisions_total{outcome="ROUTED"} 2.0' in text

        assert _eventually(counted)
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(timeout=30) == 0


def test_serve_drains_and_exits_zero_on_sigterm(manifests: Path) -> None:
    with serve_from_dir(manifests, "--assume-healthy") as process:
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(timeout=15) == 0


def test_serve_refuses_an_invalid_manifest_with_exit_2(tmp_path: Path) -> None:
    broken = backend("broken", type_="ollama", models=["x"], tier=9)
    write_manifests(tmp_path, [broken])
    command = serve_command(tmp_path)
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "broken" in result.stderr


def _eventually(check: Callable[[], bool], attempts: int = 40) -> bool:
    for _ in range(attempts):
        if check():
            return True
        time.sleep(0.25)
    return False
