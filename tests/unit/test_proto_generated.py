"""The checked-in gRPC stubs must be exactly what `make proto` generates from the .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "operator/nexus_operator/serving/proto"


def test_checked_in_stubs_match_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "tools/protogen.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == sorted(p.name for p in CHECKED_IN.iterdir() if p.is_file())
    stale = [
        name
        for name in generated
        if (tmp_path / name).read_text() != (CHECKED_IN / name).read_text()
    ]
    assert stale == [], f"stubs out of date, run `make proto`: {stale}"


def test_stubs_import_from_the_package() -> None:
    from nexus_operator.serving.proto import router_pb2, router_pb2_grpc

    assert router_pb2.DESCRIPTOR.package == "nexus.routing.v1"
    assert hasattr(router_pb2_grpc, "RouterServicer")
