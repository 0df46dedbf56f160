"""nexusctl -o json|yaml and the real grpcurl print the same messages with the same keys: the
proto field names (snake_case, what grpcurl prints), enum names, int64 as strings, so a script
written against one reads the other."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nexus_operator.cli import nexusctl

from .fleet import default_fleet, write_manifests
from .serving import ServeProcess, serve_from_dir

pytestmark = pytest.mark.timeout(120)
SERVICE = "nexus.routing.v1.Router"


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    directory = tmp_path_factory.mktemp("manifests")
    write_manifests(directory, default_fleet())
    with serve_from_dir(directory, "--assume-healthy") as process:
        yield process


def _keys(node: Any, path: str = "") -> set[str]:
    """Every key path in a JSON document (list items share their list's path)."""
    if isinstance(node, dict):
        found = set()
        for key, value in node.items():
            found.add(f"{path}.{key}")
            found |= _keys(value, f"{path}.{key}")
        return found
    if isinstance(node, list):
        return set().union(*(_keys(item, f"{path}[]") for item in node)) if node else set()
    return set()


def _grpcurl(bin_dir: Path, address: str, method: str, data: dict[str, Any]) -> Any:
    command = [str(bin_dir / "grpcurl"), "-plaintext", "-emit-defaults", "-d", json.dumps(data)]
    result = subprocess.run(
        [*command, address, f"{SERVICE}/{method}"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


def _nexusctl(capsys: pytest.CaptureFixture[str], address: str, *args: str) -> Any:
    nexusctl.main(["--address", address, "-o", "json", *args])
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("method", "data", "args"),
    [
        ("Route", {"model": "llama3:70b", "estimatedTokens": 20}, ("route", "llama3:70b", "--tokens", "20")),
        ("Explain", {"model": "mixtral", "privacy": "PRIVACY_RESTRICTED"}, ("explain", "mixtral", "--privacy", "restricted")),
        ("GetInventory", {}, ("get",)),
    ],
    ids=["route", "explain", "inventory"],
)  # fmt: skip
def test_nexusctl_json_uses_the_keys_grpcurl_prints(
    bin_dir: Path,
    serve: ServeProcess,
    capsys: pytest.CaptureFixture[str],
    method: str,
    data: dict[str, Any],
    args: tuple[str, ...],
) -> None:
    from_grpcurl = _grpcurl(bin_dir, serve.address, method, data)
    from_nexusctl = _nexusctl(capsys, serve.address, *args)
    assert _keys(from_nexusctl) == _keys(from_grpcurl)
    names = {k.rsplit(".", 1)[-1].removesuffix("[]") for k in _keys(from_nexusctl)}
    assert names == {name.lower() for name in names}, "proto field names, as grpcurl prints"
